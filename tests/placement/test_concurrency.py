"""Claims racing for the last slots: exactly as many win as there are slots, on threads
and on two processes sharing one PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

from wattvisor.placement import CapacityExceeded, ConcurrentUpdate, Inventory, Placement
from wattvisor.store import make_engine, migrate

try:
    from support.postgres import PostgresServer
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import PostgresServer  # type: ignore[no-redef]

PROVIDERS = 10
SLOTS_PER_PROVIDER = 5
CLAIMS = 200


def _fleet(placement: Placement) -> list[str]:
    uuids = []
    for n in range(PROVIDERS):
        rp = str(uuid.uuid4())
        placement.ensure_provider(
            rp, f"host-{n}", {"VCPU": Inventory(total=SLOTS_PER_PROVIDER)}, []
        )
        uuids.append(rp)
    return uuids


def claim_any(placement: Placement, providers: list[str], seed: int) -> bool:
    """Try providers in a seed-dependent order until one takes the claim."""
    consumer = str(uuid.uuid4())
    order = providers[seed % len(providers) :] + providers[: seed % len(providers)]
    for rp in order:
        for _attempt in range(20):
            try:
                placement.set_allocations(
                    consumer,
                    {rp: {"VCPU": 1}},
                    project_id="p",
                    user_id="u",
                    consumer_generation=None,
                )
                return True
            except ConcurrentUpdate:
                continue
            except CapacityExceeded:
                break
    return False


def _assert_exactly_full(placement: Placement, providers: list[str]) -> None:
    for rp in providers:
        assert placement.get_usages(rp).usages["VCPU"] == SLOTS_PER_PROVIDER


def test_threads_racing_for_fifty_slots_get_exactly_fifty(placement: Placement) -> None:
    providers = _fleet(placement)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: claim_any(placement, providers, i), range(CLAIMS)))
    assert sum(results) == PROVIDERS * SLOTS_PER_PROVIDER
    _assert_exactly_full(placement, providers)


_WORKER = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
sys.path[:0] = json.loads(sys.argv[3])
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

try:
    from support.postgres import PostgresServer
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import PostgresServer  # type: ignore[no-redef]
from {module} import claim_any
providers = json.loads(sys.argv[2])
placement = Placement(make_engine(sys.argv[1]))
offset = int(sys.argv[4])
with ThreadPoolExecutor(max_workers=8) as pool:
    wins = sum(pool.map(lambda i: claim_any(placement, providers, i + offset), range({claims})))
print(wins)
"""


def test_two_processes_racing_on_postgresql_get_exactly_fifty(
    postgres_server: PostgresServer,
) -> None:
    store_url = postgres_server.create_database()
    migrate(store_url)
    engine = make_engine(store_url)
    placement = Placement(engine)
    providers = _fleet(placement)
    code = _WORKER.format(module=__name__, claims=CLAIMS // 2)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                store_url,
                json.dumps(providers),
                json.dumps(sys.path),
                str(offset),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for offset in (0, 3)
    ]
    wins = 0
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        wins += int(out.strip())
    assert wins == PROVIDERS * SLOTS_PER_PROVIDER
    _assert_exactly_full(placement, providers)
    engine.dispose()


def test_two_controllers_claiming_the_last_slot_exactly_one_wins(store_url: str) -> None:
    import threading

    engines = [make_engine(store_url), make_engine(store_url)]
    controllers = [Placement(engine) for engine in engines]
    rp = str(uuid.uuid4())
    controllers[0].ensure_provider(rp, "last", {"VCPU": Inventory(total=1)}, [])
    for controller in controllers:
        controller.refresh()
    for _round in range(10):
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def claim(
            controller: Placement,
            barrier: threading.Barrier = barrier,
            outcomes: list[str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                controller.set_allocations(
                    str(uuid.uuid4()),
                    {rp: {"VCPU": 1}},
                    project_id="p",
                    user_id="u",
                    consumer_generation=None,
                )
                outcomes.append("won")
            except (CapacityExceeded, ConcurrentUpdate):
                outcomes.append("lost")

        threads = [threading.Thread(target=claim, args=(c,)) for c in controllers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["lost", "won"]
        assert controllers[1].get_usages(rp).usages == {"VCPU": 1}
        (held,) = [c for c in controllers[0].get_provider_allocations(rp)[1]]
        controllers[0].delete_allocations(held.consumer_uuid)
    for engine in engines:
        engine.dispose()
