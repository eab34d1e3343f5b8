"""200 schedulers racing for 50 slots on 10 hosts: exactly 50 claims succeed and no host
is over-allocated, with threads (SQLite and PostgreSQL) and with two processes sharing one
PostgreSQL database."""

from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

from wattvisor.config.settings import SchedulerSettings
from wattvisor.placement import Inventory, Placement
from wattvisor.scheduler import Flavor, NoValidHost, Scheduler, build_request_spec
from wattvisor.store import make_engine, migrate

try:
    from support.postgres import PostgresServer
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import PostgresServer  # type: ignore[no-redef]

HOSTS = 10
SLOTS = 5
CLAIMS = 200
ONE_SLOT = Flavor("slot", vcpus=1, memory_mb=256)


def make_fleet(placement: Placement) -> list[str]:
    uuids = []
    for n in range(HOSTS):
        rp = str(uuid.uuid4())
        placement.ensure_provider(
            rp,
            f"host-{n}",
            {"VCPU": Inventory(total=SLOTS), "MEMORY_MB": Inventory(total=SLOTS * 256)},
            ["HW_ARCH_X86_64"],
        )
        uuids.append(rp)
    return uuids


def race(url: str, claims: int) -> int:
    """Run ``claims`` concurrent schedulings on one fresh scheduler; return the wins."""
    engine = make_engine(url)
    scheduler = Scheduler(Placement(engine), SchedulerSettings(max_claim_conflicts=1000))

    def one(_: int) -> bool:
        spec = build_request_spec(ONE_SLOT, project_id="p", user_id="u")
        try:
            scheduler.select_and_claim(spec)
        except NoValidHost:
            return False
        return True

    with ThreadPoolExecutor(max_workers=16) as pool:
        wins = sum(pool.map(one, range(claims)))
    engine.dispose()
    return wins


def _assert_full_not_over(placement: Placement, hosts: list[str]) -> None:
    for rp in hosts:
        usages = placement.get_usages(rp).usages
        assert usages == {"VCPU": SLOTS, "MEMORY_MB": SLOTS * 256}


def test_threads_racing_for_fifty_slots_win_exactly_fifty(
    placement: Placement, store_url: str
) -> None:
    hosts = make_fleet(placement)
    assert race(store_url, CLAIMS) == HOSTS * SLOTS
    _assert_full_not_over(placement, hosts)


_WORKER = """
import sys
sys.path[:0] = {path!r}
from {module} import race
print(race(sys.argv[1], int(sys.argv[2])))
"""


def test_two_processes_racing_on_one_postgresql_win_exactly_fifty(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    migrate(url)
    engine = make_engine(url)
    placement = Placement(engine)
    hosts = make_fleet(placement)
    code = _WORKER.format(path=sys.path, module=__name__)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, str(CLAIMS // 2)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    wins = [int(out.strip()) for out, _err in outputs]
    assert sum(wins) == HOSTS * SLOTS
    _assert_full_not_over(placement, hosts)
    engine.dispose()
