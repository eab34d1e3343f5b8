"""The fleet's energy history in the store: what agents push, and what power views read.

Each agent pushes its host's samples (:mod:`wattvisor.energy.fleet_samples`). A batch
is checked whole before anything is written, so a refused batch stores nothing; a
sample already stored (same host and timestamp) is skipped, so a batch sent again
after a lost reply changes nothing. Servers are attributed to the project the store
knows them by, never to what an agent says. A server the store does not know (deleted
a moment ago, or never this cluster's) is skipped and counted; a server the store
places on another host is refused, naming it.

Samples stay at full resolution for ``history.raw_retention_s``; then
:meth:`EnergyHistory.downsample` rolls them into buckets (average watts, summed
interval joules, last counter) kept ``history.rollup_retention_s``. Only one
controller downsamples at a time (:func:`run_downsampling` takes the
``history-downsampling`` duty). History queries read samples and rollups together:
each sample's energy is in exactly one of them, so sums never count it twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Engine, Table, and_, delete, func, insert, select, union_all
from sqlalchemy.exc import IntegrityError

from wattvisor.compute.errors import InvalidRequest
from wattvisor.config.settings import HistorySettings
from wattvisor.energy.fleet_samples import HostSample
from wattvisor.energy.snapshot import PowerPoint
from wattvisor.energy.sources import METER_SOURCES
from wattvisor.store import as_utc, read_transaction, write_transaction
from wattvisor.store.compute_tables import ServerRow
from wattvisor.store.duties import single_duty
from wattvisor.store.energy_tables import (
    EnergyHostRollupRow,
    EnergyHostSampleRow,
    EnergyProjectSampleRow,
    EnergyServerCounterRow,
    EnergyServerRollupRow,
    EnergyServerSampleRow,
)
from wattvisor.store.migration_tables import MigrationRow

log = logging.getLogger(__name__)

_host_samples = EnergyHostSampleRow.__table__
_server_samples = EnergyServerSampleRow.__table__
_project_samples = EnergyProjectSampleRow.__table__
_counters = EnergyServerCounterRow.__table__
_host_rollups = EnergyHostRollupRow.__table__
_server_rollups = EnergyServerRollupRow.__table__
_servers = cast(Table, ServerRow.__table__)
_migrations = cast(Table, MigrationRow.__table__)

SOURCES = frozenset({"rapl", "scaphandre", "estimate"})
MAX_SERVERS_PER_SAMPLE = 5000
MAX_INTERVAL_S = 3600.0
MAX_WATTS = 1e7
"""No host draws 10 MW: a larger figure is a unit or counter error."""
MAX_JOULES_TOTAL = 1e18
HISTORY_POINTS = 300
DUTY = "history-downsampling"


class EnergyRefused(InvalidRequest):
    """A batch names a server that runs on another host."""

    status = 403
    code = "forbidden"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """``stored`` new samples, ``duplicates`` already stored, servers ``ignored`` as unknown."""

    stored: int
    duplicates: int
    ignored_servers: int
    ignored_server_uuids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DownsampleResult:
    rolled_samples: int
    rollup_rows: int
    expired_rows: int
    capped_rows: int


@dataclass(frozen=True, slots=True)
class StoredNow:
    """Current figures of a subject from the latest pushed samples of every host."""

    watts: float
    joules: float
    sources: frozenset[str]
    taken_at: float | None
    servers: int
    hosts: frozenset[str]


def _finite(value: float, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name} {value!r} is not a number", field=name)
    if not math.isfinite(value) or value < low or value > high:
        raise InvalidRequest(
            f"{name} {value!r} is out of range; accepted: a finite number from {low:g} to {high:g}",
            field=name,
            value=repr(value),
        )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class EnergyHistory:
    """Ingest, downsampling and cross-host queries of pushed energy samples."""

    def __init__(
        self,
        engine: Engine,
        settings: HistorySettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self._clock = clock

    def now_s(self) -> float:
        """The clock this history judges freshness and retention by (Unix seconds)."""
        return self._clock()

    # ------------------------------------------------------------------ ingest

    def check_batch(self, samples: Sequence[HostSample]) -> None:
        """Refuse (:class:`InvalidRequest`) a batch with any bad value, naming it."""
        limit = self.settings.max_batch_samples
        if not samples:
            raise InvalidRequest("the batch holds no samples; accepted: 1 or more", samples=0)
        if len(samples) > limit:
            raise InvalidRequest(
                f"the batch holds {len(samples)} samples; accepted: at most {limit} "
                "(history.max_batch_samples)",
                samples=len(samples),
            )
        now = self._clock()
        oldest = now - self.settings.raw_retention_s
        newest = now + self.settings.max_future_s
        seen: set[int] = set()
        counters: dict[str, tuple[int, float]] = {}
        order = sorted(range(len(samples)), key=lambda i: samples[i].taken_at)
        for index in order:
            sample = samples[index]
            at = f"samples[{index}]"
            _finite(sample.taken_at, f"{at}.taken_at", oldest, newest)
            _finite(sample.interval_s, f"{at}.interval_s", 0.001, MAX_INTERVAL_S)
            if sample.source not in SOURCES:
                raise InvalidRequest(
                    f"{at}.source {sample.source!r} is not accepted; accepted: "
                    f"{', '.join(sorted(SOURCES))}",
                    field=f"{at}.source",
                )
            if sample.measured != (sample.source in METER_SOURCES):
                raise InvalidRequest(
                    f"{at}.measured {sample.measured!r} contradicts source {sample.source!r}: "
                    "only a meter's figures are measured",
                    field=f"{at}.measured",
                )
            _finite(sample.power_watts, f"{at}.power_watts", 0.0, MAX_WATTS)
            _finite(sample.joules, f"{at}.joules", 0.0, MAX_WATTS * MAX_INTERVAL_S)
            _finite(sample.energy_joules_total, f"{at}.energy_joules_total", 0.0, MAX_JOULES_TOTAL)
            key = _ms(sample.taken_at)
            if key in seen:
                raise InvalidRequest(
                    f"{at}.taken_at {sample.taken_at!r} appears twice in the batch; each "
                    "sample of a host needs its own time (millisecond resolution)",
                    field=f"{at}.taken_at",
                )
            seen.add(key)
            if len(sample.servers) > MAX_SERVERS_PER_SAMPLE:
                raise InvalidRequest(
                    f"{at} lists {len(sample.servers)} servers; accepted: at most "
                    f"{MAX_SERVERS_PER_SAMPLE}",
                    field=f"{at}.servers",
                )
            uuids: set[str] = set()
            for j, server in enumerate(sample.servers):
                where = f"{at}.servers[{j}]"
                if not _is_uuid(server.uuid):
                    raise InvalidRequest(
                        f"{where}.uuid {server.uuid[:80]!r} is not a server uuid",
                        field=f"{where}.uuid",
                    )
                if server.uuid.lower() in uuids:
                    raise InvalidRequest(
                        f"{where}.uuid {server.uuid!r} is listed twice in one sample",
                        field=f"{where}.uuid",
                    )
                uuids.add(server.uuid.lower())
                _finite(server.power_watts, f"{where}.power_watts", 0.0, MAX_WATTS)
                _finite(server.joules, f"{where}.joules", 0.0, MAX_WATTS * MAX_INTERVAL_S)
                total = server.energy_joules_total
                _finite(total, f"{where}.energy_joules_total", 0.0, MAX_JOULES_TOTAL)
                before = counters.get(server.uuid.lower())
                if before is not None and total < before[1]:
                    raise InvalidRequest(
                        f"{where}.energy_joules_total {total!r} is below {before[1]!r}, the "
                        f"server's counter at an earlier sample of the batch; counters only "
                        "grow",
                        field=f"{where}.energy_joules_total",
                    )
                counters[server.uuid.lower()] = (key, total)

    def ingest(self, host_uuid: str, samples: Sequence[HostSample]) -> IngestResult:
        """Store a batch from ``host_uuid``; all of it or (on any refusal) nothing."""
        self.check_batch(samples)
        wanted = {s.uuid.lower() for sample in samples for s in sample.servers}
        for attempt in range(3):
            try:
                return self._ingest(host_uuid, samples, wanted)
            except IntegrityError:
                # Another controller stored part of the same batch at the same moment:
                # the next attempt sees those samples and skips them.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _ingest(
        self, host_uuid: str, samples: Sequence[HostSample], wanted: set[str]
    ) -> IngestResult:
        with read_transaction(self.engine) as conn:
            known: dict[str, tuple[str, str | None]] = {}
            ordered = sorted(wanted)
            for start in range(0, len(ordered), 500):
                rows = conn.execute(
                    select(_servers.c.uuid, _servers.c.project, _servers.c.host_uuid).where(
                        _servers.c.uuid.in_(ordered[start : start + 500]),
                        _servers.c.status != "DELETED",
                    )
                ).all()
                known.update({r.uuid.lower(): (r.project, r.host_uuid) for r in rows})
            elsewhere = [u for u, (_, on) in known.items() if on is not None and on != host_uuid]
            # A server that moved away from this host: what this host measured before the
            # move was committed is still its own (a batch pushed just after a move).
            moved_at: dict[str, int] = {}
            if elsewhere:
                for row in conn.execute(
                    select(_migrations.c.server_uuid, func.max(_migrations.c.updated_at))
                    .where(
                        _migrations.c.server_uuid.in_(elsewhere),
                        _migrations.c.source_host == host_uuid,
                        _migrations.c.state == "done",
                    )
                    .group_by(_migrations.c.server_uuid)
                ).all():
                    moved_at[str(row[0]).lower()] = _ms(as_utc(row[1]).timestamp())
        for uuid in elsewhere:
            if uuid not in moved_at:
                raise EnergyRefused(
                    f"server {uuid} runs on another host; host {host_uuid} may push samples "
                    "only for its own servers",
                    server_id=uuid,
                    host_id=host_uuid,
                )
        ignored = sorted(wanted - known.keys())
        keys = [_ms(s.taken_at) for s in samples]
        host_rows = []
        server_rows = []
        per_project: dict[tuple[str, int], float] = {}
        with write_transaction(self.engine) as conn:
            existing = set(
                conn.execute(
                    select(_host_samples.c.ts_ms).where(
                        _host_samples.c.host_uuid == host_uuid,
                        _host_samples.c.ts_ms.in_(keys),
                    )
                ).scalars()
            )
            for sample, key in zip(samples, keys, strict=True):
                if key in existing:
                    continue
                host_rows.append({
                    "host_uuid": host_uuid, "ts_ms": key,
                    "interval_ms": max(1, _ms(sample.interval_s)),
                    "power_watts": sample.power_watts, "joules": sample.joules,
                    "energy_joules_total": sample.energy_joules_total,
                    "source": sample.source, "measured": sample.measured,
                })  # fmt: skip
                for server in sample.servers:
                    uuid = server.uuid.lower()
                    if uuid not in known:
                        continue
                    if uuid in moved_at and key > moved_at[uuid]:
                        continue  # measured after it left: not this host's to report
                    server_rows.append({
                        "host_uuid": host_uuid, "ts_ms": key, "server_uuid": uuid,
                        "project": known[uuid][0], "power_watts": server.power_watts,
                        "joules": server.joules,
                        "energy_joules_total": server.energy_joules_total,
                    })  # fmt: skip
                    at = (known[uuid][0], key)
                    per_project[at] = per_project.get(at, 0.0) + server.joules
            if host_rows:
                conn.execute(insert(_host_samples), host_rows)
            if server_rows:
                conn.execute(insert(_server_samples), server_rows)
                conn.execute(
                    insert(_project_samples),
                    [{"project": p, "ts_ms": t, "host_uuid": host_uuid, "joules": j}
                     for (p, t), j in per_project.items()],
                )  # fmt: skip
                _raise_counters(conn, server_rows)
        return IngestResult(
            stored=len(host_rows),
            duplicates=len(samples) - len(host_rows),
            ignored_servers=len(ignored),
            ignored_server_uuids=tuple(ignored[:20]),
        )

    # ------------------------------------------------------------- downsampling

    def downsample(self, now: float | None = None) -> DownsampleResult:
        """One bounded round: roll up the oldest raw buckets past retention, drop expired
        rollups, then the oldest history while over ``history.max_server_rows``."""
        settings = self.settings
        now = self._clock() if now is None else now
        bucket = settings.rollup_bucket_s * 1000
        cutoff = _ms(now - settings.raw_retention_s)
        cutoff -= cutoff % bucket
        rolled = rollups = 0
        with read_transaction(self.engine) as conn:
            oldest = conn.execute(
                select(func.min(_host_samples.c.ts_ms)).where(_host_samples.c.ts_ms < cutoff)
            ).scalar()
        if oldest is not None:
            start = oldest - oldest % bucket
            end = min(cutoff, start + bucket * settings.downsample_buckets_per_run)
            rolled, rollups = self._roll_up(start, end, bucket)
        expired = self._expire(_ms(now - settings.rollup_retention_s))
        capped = self._cap(settings.max_server_rows)
        return DownsampleResult(rolled, rollups, expired, capped)

    def _roll_up(self, start: int, end: int, bucket: int) -> tuple[int, int]:
        hb = (_host_samples.c.ts_ms - _host_samples.c.ts_ms % bucket).label("b")
        sb = (_server_samples.c.ts_ms - _server_samples.c.ts_ms % bucket).label("b")
        host_window = and_(_host_samples.c.ts_ms >= start, _host_samples.c.ts_ms < end)
        server_window = and_(_server_samples.c.ts_ms >= start, _server_samples.c.ts_ms < end)
        with write_transaction(self.engine) as conn:
            host_groups = conn.execute(
                select(
                    _host_samples.c.host_uuid, hb, func.count(),
                    func.sum(_host_samples.c.interval_ms),
                    func.sum(_host_samples.c.joules), func.max(_host_samples.c.energy_joules_total),
                    func.max(_host_samples.c.source), func.min(_host_samples.c.source),
                    func.sum(_host_samples.c.power_watts * _host_samples.c.interval_ms),
                ).where(host_window).group_by(_host_samples.c.host_uuid, hb)
            ).all()  # fmt: skip
            server_groups = conn.execute(
                select(
                    _server_samples.c.host_uuid, sb, _server_samples.c.server_uuid,
                    func.max(_server_samples.c.project), func.count(),
                    func.sum(_server_samples.c.power_watts), func.sum(_server_samples.c.joules),
                    func.max(_server_samples.c.energy_joules_total),
                ).where(server_window)
                .group_by(_server_samples.c.host_uuid, sb, _server_samples.c.server_uuid)
            ).all()  # fmt: skip
            existing_hosts = {
                (r.host_uuid, r.bucket_ms): r
                for r in conn.execute(
                    select(_host_rollups).where(
                        _host_rollups.c.bucket_ms >= start, _host_rollups.c.bucket_ms < end
                    )
                ).all()
            }
            existing_servers = {
                (r.host_uuid, r.bucket_ms, r.server_uuid): r
                for r in conn.execute(
                    select(_server_rollups).where(
                        _server_rollups.c.bucket_ms >= start, _server_rollups.c.bucket_ms < end
                    )
                ).all()
            }
            rolled = 0
            new_hosts = []
            for host, b, count, interval, joules, total, high, low, weighted in host_groups:
                rolled += count
                source = high if high == low else "+".join(sorted({high, low}))
                power = weighted / interval if interval else 0.0
                row = {
                    "host_uuid": host, "bucket_ms": b, "samples": count, "interval_ms": interval,
                    "power_watts": power, "joules": joules, "energy_joules_total": total,
                    "source": source[:16], "measured": source in METER_SOURCES,
                }  # fmt: skip
                old = existing_hosts.get((host, b))
                if old is not None:
                    # Samples that arrived after their bucket was rolled up: merge.
                    merged = old.interval_ms + interval
                    row.update(
                        samples=old.samples + count, interval_ms=merged,
                        power_watts=(old.power_watts * old.interval_ms + weighted) / merged,
                        joules=old.joules + joules,
                        energy_joules_total=max(old.energy_joules_total, total),
                    )  # fmt: skip
                    conn.execute(
                        delete(_host_rollups).where(
                            _host_rollups.c.host_uuid == host, _host_rollups.c.bucket_ms == b
                        )
                    )
                new_hosts.append(row)
            new_servers = []
            for host, b, server, project, count, power_sum, joules, total in server_groups:
                row = {
                    "host_uuid": host, "bucket_ms": b, "server_uuid": server, "project": project,
                    "samples": count, "power_watts": power_sum / count, "joules": joules,
                    "energy_joules_total": total,
                }  # fmt: skip
                old = existing_servers.get((host, b, server))
                if old is not None:
                    samples = old.samples + count
                    row.update(
                        samples=samples,
                        power_watts=(old.power_watts * old.samples + power_sum) / samples,
                        joules=old.joules + joules,
                        energy_joules_total=max(old.energy_joules_total, total),
                    )
                    conn.execute(
                        delete(_server_rollups).where(
                            _server_rollups.c.host_uuid == host,
                            _server_rollups.c.bucket_ms == b,
                            _server_rollups.c.server_uuid == server,
                        )
                    )
                new_servers.append(row)
            if new_hosts:
                conn.execute(insert(_host_rollups), new_hosts)
            if new_servers:
                conn.execute(insert(_server_rollups), new_servers)
            conn.execute(delete(_server_samples).where(server_window))
            conn.execute(
                delete(_project_samples).where(
                    _project_samples.c.ts_ms >= start, _project_samples.c.ts_ms < end
                )
            )
            conn.execute(delete(_host_samples).where(host_window))
        return rolled, len(new_hosts) + len(new_servers)

    def _expire(self, before_ms: int) -> int:
        with write_transaction(self.engine) as conn:
            gone = conn.execute(
                delete(_server_rollups).where(_server_rollups.c.bucket_ms < before_ms)
            ).rowcount
            gone += conn.execute(
                delete(_host_rollups).where(_host_rollups.c.bucket_ms < before_ms)
            ).rowcount
        return int(gone)

    def server_rows(self) -> int:
        """Per-server history rows, samples and rollups together (what the cap counts)."""
        with read_transaction(self.engine) as conn:
            raw = conn.execute(select(func.count()).select_from(_server_samples)).scalar_one()
            rolled = conn.execute(select(func.count()).select_from(_server_rollups)).scalar_one()
        return int(raw) + int(rolled)

    def _cap(self, cap: int) -> int:
        over = self.server_rows() - cap
        if over <= 0:
            return 0
        dropped = 0
        for rows, hosts, column, host_column in (
            (_server_rollups, _host_rollups, "bucket_ms", "bucket_ms"),
            (_server_samples, _host_samples, "ts_ms", "ts_ms"),
        ):
            if over <= 0:
                break
            time_col = rows.c[column]
            with write_transaction(self.engine) as conn:
                counts = conn.execute(
                    select(time_col, func.count())
                    .group_by(time_col)
                    .order_by(time_col)
                    .limit(10000)
                ).all()
                limit_at = None
                taken = 0
                for at, count in counts:
                    taken += count
                    limit_at = at
                    if taken >= over:
                        break
                if limit_at is None:
                    continue
                gone = conn.execute(delete(rows).where(time_col <= limit_at)).rowcount
                if rows is _server_samples:
                    conn.execute(
                        delete(_project_samples).where(_project_samples.c.ts_ms <= limit_at)
                    )
                conn.execute(delete(hosts).where(hosts.c[host_column] <= limit_at))
            dropped += int(gone)
            over -= int(gone)
        return dropped

    # ------------------------------------------------------------------ queries

    def hosts_with_samples(self) -> frozenset[str]:
        """Hosts whose pushed samples the store holds (raw or rolled up)."""
        with read_transaction(self.engine) as conn:
            raw = conn.execute(select(_host_samples.c.host_uuid).distinct()).scalars().all()
            rolled = conn.execute(select(_host_rollups.c.host_uuid).distinct()).scalars().all()
        return frozenset(raw) | frozenset(rolled)

    def _latest_host_samples(self, conn: Any, hosts: Iterable[str] | None) -> list[Any]:
        newest = select(
            _host_samples.c.host_uuid.label("h"), func.max(_host_samples.c.ts_ms).label("t")
        ).group_by(_host_samples.c.host_uuid)
        if hosts is not None:
            newest = newest.where(_host_samples.c.host_uuid.in_(list(hosts)))
        sub = newest.subquery()
        return list(
            conn.execute(
                select(_host_samples).join(
                    sub,
                    and_(_host_samples.c.host_uuid == sub.c.h, _host_samples.c.ts_ms == sub.c.t),
                )
            ).all()
        )

    def now(
        self,
        *,
        project: str | None = None,
        server_uuid: str | None = None,
        host_uuid: str | None = None,
        exclude_hosts: frozenset[str] = frozenset(),
    ) -> StoredNow:
        """Watts of the latest fresh sample of each host and joules of every counter, summed
        over hosts, for a project, a server, or (neither) a host's whole meter."""
        stale = _ms(self._clock() - self.settings.stale_after_s)
        with read_transaction(self.engine) as conn:
            latest = [
                r
                for r in self._latest_host_samples(conn, [host_uuid] if host_uuid else None)
                if r.host_uuid not in exclude_hosts
            ]
            if project is None and server_uuid is None:
                watts = sum(r.power_watts for r in latest if r.ts_ms >= stale)
                newest = max((r.ts_ms for r in latest), default=None)
                joules = sum(r.energy_joules_total for r in latest)
                return StoredNow(
                    watts, joules, frozenset(r.source for r in latest),
                    newest / 1000 if newest is not None else None,
                    0, frozenset(r.host_uuid for r in latest),
                )  # fmt: skip
            watts = 0.0
            servers: set[str] = set()
            sources: set[str] = set()
            taken: int | None = None
            hosts: set[str] = set()
            for sample in latest:
                query = select(_server_samples.c.server_uuid, _server_samples.c.power_watts).where(
                    _server_samples.c.host_uuid == sample.host_uuid,
                    _server_samples.c.ts_ms == sample.ts_ms,
                )
                query = (
                    query.where(_server_samples.c.project == project)
                    if project is not None
                    else query.where(_server_samples.c.server_uuid == server_uuid)
                )
                rows = conn.execute(query).all()
                if not rows:
                    continue
                hosts.add(sample.host_uuid)
                sources.add(sample.source)
                servers.update(r.server_uuid for r in rows)
                taken = max(taken or 0, sample.ts_ms)
                if sample.ts_ms >= stale:
                    watts += sum(r.power_watts for r in rows)
            joules = self._counter_sum(conn, project, server_uuid, exclude_hosts)
        return StoredNow(
            watts, joules, frozenset(sources), taken / 1000 if taken is not None else None,
            len(servers), frozenset(hosts),
        )  # fmt: skip

    def latest_servers(self, hosts: Iterable[str]) -> dict[str, tuple[float, float, str, float]]:
        """Each server of ``hosts``' latest pushed samples: (watts, joules total, source,
        taken_at); watts are 0 when the sample is older than ``history.stale_after_s``."""
        wanted = list(hosts)
        if not wanted:
            return {}
        stale = _ms(self._clock() - self.settings.stale_after_s)
        found: dict[str, tuple[float, float, str, float]] = {}
        with read_transaction(self.engine) as conn:
            for sample in self._latest_host_samples(conn, wanted):
                rows = conn.execute(
                    select(
                        _server_samples.c.server_uuid, _server_samples.c.power_watts,
                        _server_samples.c.energy_joules_total,
                    ).where(
                        _server_samples.c.host_uuid == sample.host_uuid,
                        _server_samples.c.ts_ms == sample.ts_ms,
                    )
                ).all()  # fmt: skip
                fresh = sample.ts_ms >= stale
                for uuid, watts, joules in rows:
                    found[uuid] = (
                        watts if fresh else 0.0,
                        joules,
                        sample.source,
                        sample.ts_ms / 1000,
                    )
        return found

    def _counter_sum(
        self, conn: Any, project: str | None, server_uuid: str | None, exclude: frozenset[str]
    ) -> float:
        """The subject's energy: each server's highest counter over its hosts, summed
        (one row per server and host, kept at write time)."""
        table = _counters
        query = select(
            table.c.server_uuid.label("s"), func.max(table.c.energy_joules_total).label("j")
        ).group_by(table.c.server_uuid)
        query = (
            query.where(table.c.project == project)
            if project is not None
            else query.where(table.c.server_uuid == server_uuid)
        )
        if exclude:
            query = query.where(table.c.host_uuid.not_in(list(exclude)))
        per_server = query.subquery()
        return float(conn.execute(select(func.coalesce(func.sum(per_server.c.j), 0.0))).scalar())

    def history(
        self,
        *,
        project: str | None = None,
        server_uuid: str | None = None,
        host_uuid: str | None = None,
        since: float | None = None,
        until: float | None = None,
        step_s: float | None = None,
        exclude_hosts: frozenset[str] = frozenset(),
    ) -> list[PowerPoint]:
        """Points oldest first over [since, until] (default: the last raw retention), at
        most :data:`HISTORY_POINTS`. A point's watts are the energy of its step divided by
        the time the hosts' samples covered in it, summed over hosts; its joules are the
        running total, ending at the subject's counter sum."""
        now = self._clock()
        until = now if until is None else until
        since = until - self.settings.raw_retention_s if since is None else since
        if until <= since:
            raise InvalidRequest(f"history window from {since!r} to {until!r} is empty")
        window = until - since
        step = max(step_s or 0.0, window / HISTORY_POINTS, 1.0)
        step_ms = _ms(step)
        lo, hi = _ms(since), _ms(until)

        def subject_rows(table: Table, time_col: str) -> Any:
            t = table.c[time_col]
            query = select(
                (t - (t - lo) % step_ms).label("b"), table.c.host_uuid.label("h"),
                table.c.joules.label("j"),
            ).where(t >= lo, t <= hi)  # fmt: skip
            if project is not None:
                query = query.where(table.c.project == project)
            elif server_uuid is not None:
                query = query.where(table.c.server_uuid == server_uuid)
            if host_uuid is not None:
                query = query.where(table.c.host_uuid == host_uuid)
            if exclude_hosts:
                query = query.where(table.c.host_uuid.not_in(list(exclude_hosts)))
            return query

        def cover_rows(table: Table, time_col: str) -> Any:
            t = table.c[time_col]
            query = select(
                (t - (t - lo) % step_ms).label("b"), table.c.host_uuid.label("h"),
                table.c.interval_ms.label("i"),
            ).where(t >= lo, t <= hi)  # fmt: skip
            if exclude_hosts:
                query = query.where(table.c.host_uuid.not_in(list(exclude_hosts)))
            return query

        if project is None and server_uuid is None:
            energy = union_all(
                subject_rows(_host_samples, "ts_ms"), subject_rows(_host_rollups, "bucket_ms")
            ).subquery()
        elif project is not None and host_uuid is None:
            # The raw part from the per-project sums kept at write time: one row per
            # host sample instead of one per server (the same sums, the same buckets).
            energy = union_all(
                subject_rows(_project_samples, "ts_ms"), subject_rows(_server_rollups, "bucket_ms")
            ).subquery()
        else:
            energy = union_all(
                subject_rows(_server_samples, "ts_ms"), subject_rows(_server_rollups, "bucket_ms")
            ).subquery()
        cover = union_all(
            cover_rows(_host_samples, "ts_ms"), cover_rows(_host_rollups, "bucket_ms")
        ).subquery()
        with read_transaction(self.engine) as conn:
            joules = conn.execute(
                select(energy.c.b, energy.c.h, func.sum(energy.c.j))
                .group_by(energy.c.b, energy.c.h)
                .order_by(energy.c.b)
            ).all()
            covered = {
                (b, h): float(i)
                for b, h, i in conn.execute(
                    select(cover.c.b, cover.c.h, func.sum(cover.c.i)).group_by(cover.c.b, cover.c.h)
                ).all()
            }
            if project is None and server_uuid is None:
                latest = self._latest_host_samples(conn, [host_uuid] if host_uuid else None)
                total = sum(
                    r.energy_joules_total for r in latest if r.host_uuid not in exclude_hosts
                )
            else:
                total = self._counter_sum(conn, project, server_uuid, exclude_hosts)
        buckets: dict[int, list[float]] = {}
        for b, h, j in joules:
            seconds = covered.get((b, h), 0.0) / 1000
            entry = buckets.setdefault(int(b), [0.0, 0.0])
            entry[0] += float(j) / seconds if seconds > 0 else 0.0
            entry[1] += float(j)
        points: list[PowerPoint] = []
        running = total
        for b in sorted(buckets, reverse=True):
            watts, j = buckets[b]
            points.append(PowerPoint(min(b + step_ms, hi) / 1000, watts, running))
            running -= j
        points.reverse()
        return points


def _raise_counters(conn: Any, server_rows: Sequence[dict[str, Any]]) -> None:
    """Each server's counter row of this host raised to the batch's highest counter
    (in server order, so two writers lock rows in the same order)."""
    highest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in server_rows:
        key = (row["server_uuid"], row["host_uuid"])
        seen = highest.get(key)
        if seen is None or row["energy_joules_total"] >= seen["energy_joules_total"]:
            highest[key] = {
                "server_uuid": row["server_uuid"], "host_uuid": row["host_uuid"],
                "project": row["project"], "energy_joules_total": row["energy_joules_total"],
                "ts_ms": max(row["ts_ms"], seen["ts_ms"] if seen else 0),
            }  # fmt: skip
    if not highest:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert

        larger: Any = func.greatest
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]

        larger = func.max
    statement = dialect_insert(_counters).values([highest[k] for k in sorted(highest)])
    statement = statement.on_conflict_do_update(
        index_elements=["server_uuid", "host_uuid"],
        set_={
            "project": statement.excluded.project,
            "energy_joules_total": larger(
                _counters.c.energy_joules_total, statement.excluded.energy_joules_total
            ),
            "ts_ms": larger(_counters.c.ts_ms, statement.excluded.ts_ms),
        },
    )
    conn.execute(statement)


def _is_uuid(value: object) -> bool:
    import uuid as uuid_module

    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid_module.UUID(value)
    except ValueError:
        return False
    return True


def run_downsampling(history: EnergyHistory, stop: threading.Event, interval_s: float) -> None:
    """Every ``interval_s`` until ``stop``: one bounded downsampling round, by whichever
    controller holds the ``history-downsampling`` duty (the others skip that round)."""
    while not stop.wait(interval_s):
        try:
            downsample_once(history)
        except Exception:
            log.exception("history downsampling failed; retrying at the next interval")


def downsample_once(history: EnergyHistory) -> DownsampleResult | None:
    """One round if this process gets the duty, else None."""
    with single_duty(history.engine, DUTY) as duty:
        if not duty:
            return None
        return history.downsample()


__all__ = [
    "DUTY",
    "DownsampleResult",
    "EnergyHistory",
    "EnergyRefused",
    "IngestResult",
    "StoredNow",
    "downsample_once",
    "run_downsampling",
]
