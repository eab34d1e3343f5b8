"""The fleet's energy history on a real store (SQLite and PostgreSQL): batches from two
joined hosts, project power across both, refusals that store nothing, idempotent
re-sends, downsampling that conserves joules under a row cap, one downsampler at a time."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select, update

from compute.test_host_trust import ADMIN, join_request
from wattvisor.auth.cluster_keys import ClusterSigner, ensure_cluster_key
from wattvisor.compute import InvalidRequest
from wattvisor.compute.energy_history import (
    DUTY,
    EnergyHistory,
    EnergyRefused,
    downsample_once,
)
from wattvisor.compute.host_trust import ClusterKeys, HostTrust
from wattvisor.config import load_settings
from wattvisor.config.settings import HistorySettings
from wattvisor.energy.fleet_samples import HostSample, ServerSample
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate, read_transaction, write_transaction
from wattvisor.store.compute_tables import ServerRow
from wattvisor.store.energy_tables import (
    EnergyHostSampleRow,
    EnergyProjectSampleRow,
    EnergyServerRollupRow,
    EnergyServerSampleRow,
)
from wattvisor.store.migration_tables import MigrationRow

try:
    from support.postgres import PostgresServer
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import PostgresServer  # type: ignore[no-redef]

T0 = 1_790_000_000.0  # a fixed Unix time the test clock starts at


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Fleet:
    engine: Engine
    history: EnergyHistory
    clock: Clock
    hosts: tuple[str, str]
    servers: dict[str, tuple[str, str]]  # server uuid -> (host, project)

    def rows(self, table: type) -> int:
        with read_transaction(self.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def add_server(engine: Engine, host: str, project: str) -> str:
    server = str(uuid.uuid4())
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        conn.execute(
            insert(ServerRow),
            [{
                "uuid": server, "name": f"s-{server[:8]}", "project": project,
                "user_name": "alice", "flavor_id": "f", "image_id": "i", "status": "ACTIVE",
                "host_uuid": host, "domain_name": f"d-{server[:8]}", "power_metrics": False,
                "shares": [], "created_at": now, "updated_at": now,
            }],
        )  # fmt: skip
    return server


def make_fleet(url: str, tmp_path: Path, **history: object) -> Fleet:
    engine = make_engine(url)
    migrate(engine)
    settings = load_settings(data_dir=tmp_path / "data")
    files = ensure_cluster_key(settings.cluster_key_path)
    cluster = ClusterKeys(engine)
    cluster.ensure(files.public_key)
    signer = ClusterSigner(
        settings.cluster_key_path,
        lambda: cluster.require().current.public_key,
        lambda: cluster.require().cluster_id,
    )
    trust = HostTrust(engine, Placement(engine), settings, cluster, signer)
    joined = []
    for name in ("east", "west"):
        issued = trust.create_join_token(ADMIN, timedelta(hours=1))
        request = join_request(name)
        trust.join(trust.join_verifier().verify(issued.token), request)
        joined.append(request.host_id)
    east, west = joined
    servers = {}
    for host, project in ((east, "proj-a"), (west, "proj-a"), (east, "proj-b")):
        servers[add_server(engine, host, project)] = (host, project)
    clock = Clock()
    return Fleet(
        engine, EnergyHistory(engine, HistorySettings(**history), clock), clock,  # type: ignore[arg-type]
        (east, west), servers,
    )  # fmt: skip


@pytest.fixture
def fleet(store_url: str, tmp_path: Path) -> Iterator[Fleet]:
    world = make_fleet(store_url, tmp_path)
    try:
        yield world
    finally:
        world.engine.dispose()


def batch(
    fleet: Fleet, host: str, start: float, count: int, watts: float = 10.0, interval: float = 2.0
) -> list[HostSample]:
    """``count`` samples ``interval`` apart from ``start``; each of the host's servers draws
    ``watts``, its counter growing by the interval's joules."""
    mine = sorted(s for s, (h, _p) in fleet.servers.items() if h == host)
    first = round((start - T0) // interval)
    return [
        HostSample(
            taken_at=start + i * interval, interval_s=interval, source="rapl", measured=True,
            power_watts=100.0, joules=100.0 * interval,
            energy_joules_total=1000 + 100.0 * interval * (first + i),
            servers=tuple(
                ServerSample(s, watts, watts * interval, watts * interval * (first + i + 1))
                for s in mine
            ),
        )
        for i in range(count)
    ]  # fmt: skip


def test_project_power_sums_every_host_that_pushed(fleet: Fleet) -> None:
    east, west = fleet.hosts
    fleet.clock.now = T0 + 20
    fleet.history.ingest(east, batch(fleet, east, T0, 10, watts=10.0))
    fleet.history.ingest(west, batch(fleet, west, T0 + 1, 10, watts=7.0))
    now = fleet.history.now(project="proj-a")
    assert now.hosts == frozenset({east, west})
    assert now.servers == 2
    assert now.watts == pytest.approx(17.0)
    assert now.joules == pytest.approx(10 * 2 * 10 + 7 * 2 * 10)
    other = fleet.history.now(project="proj-b")
    assert other.servers == 1 and other.watts == pytest.approx(10.0)
    points = fleet.history.history(project="proj-a", since=T0 - 2, until=T0 + 20, step_s=4)
    assert sum(p.power_watts for p in points) / len(points) == pytest.approx(17.0)
    assert points[-1].energy_joules_total == pytest.approx(now.joules)


def test_a_repeated_batch_changes_nothing(fleet: Fleet) -> None:
    east = fleet.hosts[0]
    fleet.clock.now = T0 + 20
    samples = batch(fleet, east, T0, 5)
    first = fleet.history.ingest(east, samples)
    before = (fleet.rows(EnergyHostSampleRow), fleet.rows(EnergyServerSampleRow))
    again = fleet.history.ingest(east, samples)
    assert (first.stored, first.duplicates) == (5, 0)
    assert (again.stored, again.duplicates) == (0, 5)
    assert (fleet.rows(EnergyHostSampleRow), fleet.rows(EnergyServerSampleRow)) == before


def test_a_host_cannot_push_for_a_server_on_another_host(fleet: Fleet) -> None:
    east, west = fleet.hosts
    fleet.clock.now = T0 + 20
    theirs = batch(fleet, west, T0, 3)
    with pytest.raises(EnergyRefused, match="runs on another host"):
        fleet.history.ingest(east, theirs)
    assert fleet.rows(EnergyHostSampleRow) == 0


def test_a_server_that_moved_away_keeps_what_its_old_host_measured_before_the_move(
    fleet: Fleet,
) -> None:
    """A live migration commits while the source still holds a batch of samples: those
    taken before the move are stored, later ones are not its host's to report, and the
    rest of the batch is kept."""
    east, west = fleet.hosts
    moving = next(s for s, (h, p) in fleet.servers.items() if h == east and p == "proj-a")
    staying = next(s for s, (h, p) in fleet.servers.items() if h == east and p == "proj-b")
    fleet.clock.now = T0 + 20
    held = batch(fleet, east, T0, 6)  # T0 .. T0+10, taken while both ran on east
    moved = datetime.fromtimestamp(T0 + 5, UTC)
    with write_transaction(fleet.engine) as conn:
        conn.execute(update(ServerRow).where(ServerRow.uuid == moving).values(host_uuid=west))
        conn.execute(
            insert(MigrationRow),
            [{
                "id": str(uuid.uuid4()), "server_uuid": moving, "source_host": east,
                "target_host": west, "tunnel": True, "state": "done", "progress": 100,
                "stats": {}, "created_at": moved, "updated_at": moved,
            }],
        )  # fmt: skip
    result = fleet.history.ingest(east, held)
    assert result.stored == 6
    with read_transaction(fleet.engine) as conn:
        kept = conn.execute(
            select(EnergyServerSampleRow.server_uuid, EnergyServerSampleRow.ts_ms)
        ).all()
    moving_at = sorted(ts for s, ts in kept if s == moving)
    assert moving_at == [round((T0 + 2 * i) * 1000) for i in range(3)]  # up to T0+5
    assert len([ts for s, ts in kept if s == staying]) == 6
    # A host that never ran the server may still not report it.
    with pytest.raises(EnergyRefused, match="runs on another host"):
        fleet.history.ingest(west, [
            *batch(fleet, west, T0 + 40, 1),
            HostSample(
                taken_at=T0 + 50, interval_s=2.0, source="rapl", measured=True,
                power_watts=1.0, joules=2.0, energy_joules_total=3.0,
                servers=(ServerSample(staying, 1.0, 2.0, 3.0),),
            ),
        ])  # fmt: skip


def test_a_moved_servers_total_is_its_highest_counter_not_the_sum_of_its_hosts(
    fleet: Fleet,
) -> None:
    """The target's counter continues from the source's total: counted once."""
    east, west = fleet.hosts
    moving = next(s for s, (h, p) in fleet.servers.items() if h == east and p == "proj-b")
    fleet.clock.now = T0 + 100
    fleet.history.ingest(east, batch(fleet, east, T0, 5))  # its counter reaches 100 J
    on_east = fleet.history.now(server_uuid=moving).joules
    assert on_east == pytest.approx(100.0)
    with write_transaction(fleet.engine) as conn:
        conn.execute(update(ServerRow).where(ServerRow.uuid == moving).values(host_uuid=west))
    fleet.servers[moving] = (west, "proj-b")
    fleet.history.ingest(west, [
        HostSample(
            taken_at=T0 + 20 + 2 * i, interval_s=2.0, source="rapl", measured=True,
            power_watts=50.0, joules=100.0, energy_joules_total=5000.0 + 100 * i,
            servers=(ServerSample(moving, 10.0, 20.0, on_east + 20.0 * (i + 1)),),
        )
        for i in range(3)
    ])  # fmt: skip
    assert fleet.history.now(server_uuid=moving).joules == pytest.approx(160.0)
    assert fleet.history.now(project="proj-b").joules == pytest.approx(160.0)
    # Leaving the target out gives what the source counted.
    assert fleet.history.now(
        project="proj-b", exclude_hosts=frozenset({west})
    ).joules == pytest.approx(100.0)


def test_unknown_servers_are_skipped_and_counted(fleet: Fleet) -> None:
    east = fleet.hosts[0]
    fleet.clock.now = T0 + 20
    stranger = str(uuid.uuid4())
    sample = batch(fleet, east, T0, 1)[0]
    extra = HostSample(
        **{**{f: getattr(sample, f) for f in sample.__slots__}, "servers": (  # type: ignore[attr-defined]
            *sample.servers, ServerSample(stranger, 1.0, 2.0, 2.0))}
    )  # fmt: skip
    result = fleet.history.ingest(east, [extra])
    assert result.stored == 1 and result.ignored_servers == 1
    assert result.ignored_server_uuids == (stranger,)


BAD = [
    ("power_watts", float("nan"), "samples[0].power_watts nan"),
    ("power_watts", -1.0, "samples[0].power_watts -1.0"),
    ("source", "guess", "samples[0].source 'guess'"),
    ("measured", False, "samples[0].measured False"),
    ("taken_at", T0 + 10_000, "samples[0].taken_at"),
    ("interval_s", 0.0, "samples[0].interval_s 0.0"),
]


@pytest.mark.parametrize(("field", "value", "words"), BAD)
def test_a_bad_batch_is_refused_naming_the_value_and_stores_nothing(
    fleet: Fleet, field: str, value: object, words: str
) -> None:
    east = fleet.hosts[0]
    fleet.clock.now = T0 + 20
    good = batch(fleet, east, T0, 3)
    first = good[0]
    bad = HostSample(**{**{f: getattr(first, f) for f in first.__slots__}, field: value})  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequest) as caught:
        fleet.history.ingest(east, [bad, *good[1:]])
    assert words in caught.value.message
    assert fleet.rows(EnergyHostSampleRow) == 0 and fleet.rows(EnergyServerSampleRow) == 0


def test_a_counter_going_backwards_in_a_batch_is_refused(fleet: Fleet) -> None:
    east = fleet.hosts[0]
    fleet.clock.now = T0 + 20
    good = batch(fleet, east, T0, 2)
    server = good[1].servers[0]
    lower = ServerSample(server.uuid, 1.0, 1.0, 0.5)
    broken = HostSample(**{
        **{f: getattr(good[1], f) for f in good[1].__slots__},  # type: ignore[attr-defined]
        "servers": (lower, *good[1].servers[1:]),
    })  # fmt: skip
    with pytest.raises(InvalidRequest, match="counters only grow"):
        fleet.history.ingest(east, [good[0], broken])
    assert fleet.rows(EnergyHostSampleRow) == 0


def test_a_batch_over_the_bound_is_refused(fleet: Fleet) -> None:
    east = fleet.hosts[0]
    fleet.clock.now = T0 + 20_000
    with pytest.raises(InvalidRequest, match="holds 501 samples; accepted: at most 500"):
        fleet.history.ingest(east, batch(fleet, east, T0, 501, interval=1.0))


def _server_joules(engine: Engine) -> float:
    with read_transaction(engine) as conn:
        raw = conn.execute(select(func.sum(EnergyServerSampleRow.joules))).scalar() or 0.0
        rolled = conn.execute(select(func.sum(EnergyServerRollupRow.joules))).scalar() or 0.0
    return float(raw) + float(rolled)


def test_downsampling_conserves_joules_and_keeps_counters(fleet: Fleet) -> None:
    east, west = fleet.hosts
    fleet.clock.now = T0 + 3600
    for host in (east, west):
        for start in range(0, 3000, 1000):
            fleet.history.ingest(host, batch(fleet, host, T0 + start, 500, interval=2.0))
    before = _server_joules(fleet.engine)
    totals = fleet.history.now(project="proj-a").joules
    # A day later every sample is past raw retention: rounds roll them up, bounded each.
    fleet.history.settings = HistorySettings(downsample_buckets_per_run=4)
    fleet.clock.now = T0 + 86400 + 3600
    rounds = 0
    while fleet.rows(EnergyServerSampleRow) and rounds < 50:
        fleet.history.downsample()
        rounds += 1
    assert fleet.rows(EnergyServerSampleRow) == 0
    assert rounds > 1, "one round rolls up a bounded number of buckets"
    assert _server_joules(fleet.engine) == pytest.approx(before)
    assert fleet.history.now(project="proj-a").joules == pytest.approx(totals)
    points = fleet.history.history(project="proj-a", since=T0, until=T0 + 3000, step_s=300)
    assert sum(p.power_watts for p in points) / len(points) == pytest.approx(20.0)


def test_project_history_is_the_sum_of_its_servers_from_one_row_per_host_sample(
    fleet: Fleet,
) -> None:
    east, west = fleet.hosts
    fleet.clock.now = T0 + 200
    fleet.history.ingest(east, batch(fleet, east, T0, 50, watts=10.0))
    fleet.history.ingest(west, batch(fleet, west, T0 + 1, 50, watts=7.0))
    # east holds a proj-a and a proj-b server, west one of proj-a: one row per project
    # and host sample, not one per server.
    assert fleet.rows(EnergyProjectSampleRow) == 50 + 50 + 50
    window = {"since": T0 - 2, "until": T0 + 110, "step_s": 10}
    project = fleet.history.history(project="proj-a", **window)
    servers = [s for s, (_h, p) in fleet.servers.items() if p == "proj-a"]
    per_server = [fleet.history.history(server_uuid=s, **window) for s in servers]
    by_time: dict[float, float] = {}
    for points in per_server:
        for point in points:
            by_time[point.taken_at] = by_time.get(point.taken_at, 0.0) + point.power_watts
    assert [p.taken_at for p in project] == sorted(by_time)
    assert [p.power_watts for p in project] == pytest.approx([by_time[t] for t in sorted(by_time)])
    fleet.history.settings = HistorySettings(downsample_buckets_per_run=100)
    fleet.clock.now = T0 + 86400 + 3600
    while fleet.rows(EnergyServerSampleRow):
        fleet.history.downsample()
    assert fleet.rows(EnergyProjectSampleRow) == 0


def test_the_row_cap_drops_the_oldest_history(store_url: str, tmp_path: Path) -> None:
    world = make_fleet(store_url, tmp_path, max_server_rows=1000)
    try:
        east = world.hosts[0]
        world.clock.now = T0 + 3000
        for start in range(0, 2000, 1000):
            world.history.ingest(east, batch(world, east, T0 + start, 500, interval=2.0))
        assert world.history.server_rows() == 2000  # two servers on east
        total_a = world.history.now(project="proj-a").joules
        assert total_a > 0
        result = world.history.downsample()
        assert result.capped_rows >= 1000
        assert world.history.server_rows() <= 1000
        with read_transaction(world.engine) as conn:
            oldest = conn.execute(select(func.min(EnergyServerSampleRow.ts_ms))).scalar()
        assert oldest is not None and oldest >= (T0 + 1000) * 1000 - 1
        # Dropping the oldest history never lowers a total.
        assert world.history.now(project="proj-a").joules == pytest.approx(total_a)
    finally:
        world.engine.dispose()


_HOLDER = """
import sys, time
sys.path[:0] = {path!r}
from wattvisor.store import make_engine
from wattvisor.store.duties import single_duty
engine = make_engine(sys.argv[1])
with single_duty(engine, {duty!r}) as duty:
    print("held" if duty else "not held", flush=True)
    sys.stdin.readline()
"""


def test_only_one_process_downsamples_at_a_time(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    world = make_fleet(url, tmp_path)
    east = world.hosts[0]
    world.clock.now = T0 + 100
    world.history.ingest(east, batch(world, east, T0, 20))
    world.clock.now = T0 + 2 * 86400
    code = _HOLDER.format(path=sys.path, duty=DUTY)
    holder = subprocess.Popen(
        [sys.executable, "-c", code, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert downsample_once(world.history) is None
        assert world.rows(EnergyServerSampleRow) == 40
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(60)
    done = downsample_once(world.history)
    assert done is not None and done.rolled_samples == 20
    assert world.rows(EnergyServerSampleRow) == 0
    world.engine.dispose()


def test_the_same_batch_from_two_controllers_at_once_is_stored_once(fleet: Fleet) -> None:
    import threading

    east = fleet.hosts[0]
    fleet.clock.now = T0 + 200
    samples = batch(fleet, east, T0, 50)
    barrier = threading.Barrier(2)
    results: list[tuple[int, int]] = []

    def ingest() -> None:
        barrier.wait(30)
        outcome = fleet.history.ingest(east, samples)
        results.append((outcome.stored, outcome.duplicates))

    threads = [threading.Thread(target=ingest) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2
    assert sum(stored for stored, _ in results) == 50
    assert all(stored + duplicates == 50 for stored, duplicates in results)
    assert fleet.rows(EnergyHostSampleRow) == 50
