"""Scheduling latency: prefilters + allocation candidates + weighing + claim, over 1,000
and 10,000 providers with mixed traits and usage, on SQLite and PostgreSQL.

PostgreSQL comes from ``WATTVISOR_BENCH_PG_URL`` (a server database to create tables in)
or, when unset, a private throwaway server started like the test suite's.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import cast

from sqlalchemy import Engine, Table, insert, update

from wattvisor.config.settings import SchedulerSettings
from wattvisor.placement import Placement
from wattvisor.scheduler import Flavor, ImageMeta, NoValidHost, Scheduler, build_request_spec
from wattvisor.scheduler.weighers import best_host
from wattvisor.store import make_engine, migrate, write_transaction
from wattvisor.store.models import (
    Allocation,
    Consumer,
    Inventory,
    PlacementSequence,
    ProviderTrait,
    ResourceProvider,
)

SIZES = (1_000, 10_000)
ITERATIONS = 300
WARMUP = 20
BREAKDOWN_RUNS = 200
SEED = 20261122

FLAVORS = (
    Flavor("small", 1, 1024, 10),
    Flavor("medium", 2, 4096, 20),
    Flavor("large", 4, 8192, 40),
    Flavor("power", 2, 2048, 20, extra_specs={"hw:power_metrics": "true"}),
)
IMAGES = (
    ImageMeta({}),
    ImageMeta({"hw_vif_model": "virtio", "hw_disk_bus": "virtio", "hw_architecture": "x86_64"}),
    ImageMeta({"hw_vif_model": "e1000", "hw_video_model": "qxl"}),
    ImageMeta({"hypervisor_type": "kvm", "vm_mode": "hvm"}),
)
BASE_TRAITS = (
    "HW_ARCH_X86_64",
    "COMPUTE_NET_VIF_MODEL_VIRTIO",
    "COMPUTE_STORAGE_BUS_VIRTIO",
    "COMPUTE_GRAPHICS_MODEL_VGA",
    "CUSTOM_VM_MODE_HVM",
)
OPTIONAL_TRAITS = (
    ("COMPUTE_NET_VIF_MODEL_E1000", 0.5),
    ("COMPUTE_GRAPHICS_MODEL_QXL", 0.6),
    ("COMPUTE_SHARE_LOCAL_FS", 0.3),
    ("CUSTOM_HYPERVISOR_KVM", 0.8),
    ("COMPUTE_STORAGE_BUS_SATA", 0.5),
)


class _Watts:
    """Energy data for half of the hosts, as a partly measured fleet would have."""

    def __init__(self, uuids: list[str], rng: random.Random) -> None:
        self.table = {u: rng.uniform(2.0, 15.0) for u in uuids if rng.random() < 0.5}

    def watts_per_used_vcpu(self, provider_uuid: str) -> float | None:
        return self.table.get(provider_uuid)

    def watts_per_used_vcpu_table(self) -> dict[str, float]:
        return self.table


def _populate(engine: Engine, count: int, rng: random.Random) -> list[str]:
    """Bulk-load ``count`` providers with inventories, traits and some allocations."""
    from wattvisor.placement.service import Placement as _P

    _P(engine).ensure_custom_trait("CUSTOM_VM_MODE_HVM")
    _P(engine).ensure_custom_trait("CUSTOM_HYPERVISOR_KVM")
    rp_t = cast(Table, ResourceProvider.__table__)
    uuids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(count)]
    with write_transaction(engine) as conn:
        seq = conn.execute(
            update(cast(Table, PlacementSequence.__table__))
            .values(value=PlacementSequence.value + 1)
            .returning(PlacementSequence.value)
        ).scalar_one()
        conn.execute(
            insert(rp_t),
            [
                {"uuid": u, "name": f"cn{i:05d}", "generation": 1, "updated_seq": seq}
                for i, u in enumerate(uuids)
            ],
        )
        ids = {
            u: i for i, u in conn.execute(rp_t.select().with_only_columns(rp_t.c.id, rp_t.c.uuid))
        }
        inventories, traits, consumers, allocations = [], [], [], []
        for u in uuids:
            pid = ids[u]
            vcpus = rng.choice((16, 32, 64))
            ram = vcpus * 4096
            inventories += [
                {
                    "resource_provider_id": pid,
                    "resource_class": "VCPU",
                    "total": vcpus,
                    "reserved": 0,
                    "min_unit": 1,
                    "max_unit": vcpus,
                    "step_size": 1,
                    "allocation_ratio": 4.0,
                },
                {
                    "resource_provider_id": pid,
                    "resource_class": "MEMORY_MB",
                    "total": ram,
                    "reserved": 2048,
                    "min_unit": 1,
                    "max_unit": ram,
                    "step_size": 1,
                    "allocation_ratio": 1.0,
                },
                {
                    "resource_provider_id": pid,
                    "resource_class": "DISK_GB",
                    "total": 2000,
                    "reserved": 0,
                    "min_unit": 1,
                    "max_unit": 2000,
                    "step_size": 1,
                    "allocation_ratio": 1.0,
                },
            ]
            names = set(BASE_TRAITS)
            names.update(t for t, p in OPTIONAL_TRAITS if rng.random() < p)
            traits += [{"resource_provider_id": pid, "trait": t} for t in sorted(names)]
            if rng.random() < 0.7:
                consumers.append(
                    {
                        "uuid": str(uuid.UUID(int=rng.getrandbits(128))),
                        "project_id": "p",
                        "user_id": "u",
                        "consumer_type": "INSTANCE",
                        "generation": 1,
                    }
                )
                allocations.append((pid, rng.randint(1, vcpus * 3), rng.randint(1, ram - 4096)))
        conn.execute(insert(cast(Table, Inventory.__table__)), inventories)
        conn.execute(insert(cast(Table, ProviderTrait.__table__)), traits)
        consumer_t = cast(Table, Consumer.__table__)
        conn.execute(insert(consumer_t), consumers)
        consumer_ids = {
            u: i
            for i, u in conn.execute(
                consumer_t.select().with_only_columns(consumer_t.c.id, consumer_t.c.uuid)
            )
        }
        rows = []
        for consumer, (pid, vcpu, ram) in zip(consumers, allocations, strict=True):
            cid = consumer_ids[consumer["uuid"]]
            rows += [
                {
                    "resource_provider_id": pid,
                    "consumer_id": cid,
                    "resource_class": "VCPU",
                    "used": vcpu,
                },
                {
                    "resource_provider_id": pid,
                    "consumer_id": cid,
                    "resource_class": "MEMORY_MB",
                    "used": ram,
                },
            ]
        conn.execute(insert(cast(Table, Allocation.__table__)), rows)
    return uuids


def _measure(url: str, count: int) -> str:
    rng = random.Random(SEED + count)
    migrate(url)
    engine = make_engine(url)
    try:
        uuids = _populate(engine, count, rng)
        placement = Placement(engine)
        started = time.perf_counter()
        placement.refresh()
        load_ms = (time.perf_counter() - started) * 1000
        scheduler = Scheduler(placement, SchedulerSettings(), power=_Watts(uuids, rng))
        timings: list[float] = []
        failures = 0
        for i in range(WARMUP + ITERATIONS):
            spec = build_request_spec(
                rng.choice(FLAVORS), rng.choice(IMAGES), project_id="p", user_id="u"
            )
            t0 = time.perf_counter()
            try:
                scheduler.select_and_claim(spec)
            except NoValidHost:
                failures += 1
            elapsed = (time.perf_counter() - t0) * 1000
            if i >= WARMUP:
                timings.append(elapsed)
        timings.sort()
        p95 = timings[int(len(timings) * 0.95) - 1]
        choose_ms, claim_ms = _breakdown(scheduler, rng)
        return (
            f"{count:>6} providers: median {statistics.median(timings):6.2f} ms, "
            f"p95 {p95:6.2f} ms, max {timings[-1]:6.2f} ms over {ITERATIONS} schedulings "
            f"({failures} NoValidHost); index load {load_ms:.0f} ms\n"
            f"{'':>8}of which: prefilters + candidates + weighing {choose_ms:.2f} ms, "
            f"claim {claim_ms:.2f} ms (medians of {BREAKDOWN_RUNS} more runs)"
        )
    finally:
        engine.dispose()


def _breakdown(scheduler: Scheduler, rng: random.Random) -> tuple[float, float]:
    """The same steps as ``select_and_claim``, timed apart."""
    placement = scheduler.placement
    choose, claim = [], []
    for _ in range(BREAKDOWN_RUNS):
        t0 = time.perf_counter()
        spec = scheduler.prepare(
            build_request_spec(rng.choice(FLAVORS), rng.choice(IMAGES), project_id="p", user_id="u")
        )
        request = spec.candidate_request()
        host = placement.with_candidates(
            request,
            lambda table: (
                table.state(best_host(table, scheduler.settings, scheduler.weigh_context))
                if table.ids
                else None
            ),
        )
        t1 = time.perf_counter()
        if host is None:
            continue
        placement.set_allocations(
            str(uuid.uuid4()),
            {host.uuid: request.resources},
            project_id="p",
            user_id="u",
            consumer_generation=None,
        )
        t2 = time.perf_counter()
        choose.append((t1 - t0) * 1000)
        claim.append((t2 - t1) * 1000)
    return statistics.median(choose), statistics.median(claim)


def _postgres_urls() -> tuple[Callable[[], str] | None, Callable[[], None], str]:
    url = os.environ.get("WATTVISOR_BENCH_PG_URL")
    if url:

        def reuse() -> str:
            from sqlalchemy import MetaData

            engine = make_engine(url)
            meta = MetaData()
            meta.reflect(engine)
            meta.drop_all(engine)
            engine.dispose()
            return url

        return reuse, lambda: None, f"PostgreSQL at {url}"
    try:
        from tests.support.postgres import start_postgres
    except ImportError as exc:
        return None, lambda: None, f"PostgreSQL skipped: {exc}"
    try:
        server = start_postgres()
    except RuntimeError as exc:
        return None, lambda: None, f"PostgreSQL skipped: {exc}"
    return server.create_database, server.stop, "PostgreSQL 15 (private server, fsync off)"


def run() -> None:
    print(
        f"scheduling latency (prefilters + candidates + weighing + claim), "
        f"{ITERATIONS} runs after {WARMUP} warm-up, mixed flavors/images",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="wattvisor-bench-") as tmp:
        print("SQLite (WAL):", flush=True)
        for count in SIZES:
            url = f"sqlite:///{Path(tmp) / f'bench-{count}.db'}"
            print("  " + _measure(url, count), flush=True)
    make_url, stop, label = _postgres_urls()
    print(label + ":", flush=True)
    if make_url is None:
        return
    try:
        for count in SIZES:
            print("  " + _measure(make_url(), count), flush=True)
    finally:
        stop()


if __name__ == "__main__":
    run()
