"""Live migration of a running server to another host, optionally over a tunnel of its own.

A request is checked, then accepted in one transaction: the server's task becomes
``migrating``, a migration row records what was asked, and a durable ``migrate`` task
is queued (a controller that dies mid-migration leaves the task to another one). The
task then:

1. claims the target in placement for the migration's own consumer (the migration id),
   so the target's room is held before anything moves: the requested host, or the one
   the scheduler picks with the server's request spec, its source excluded;
2. with a tunnel, reserves a VNI and a point-to-point subnet (unique in the store, so no
   two migrations ever share one) and has both hosts make their VXLAN end at once;
3. for a power-metrics server, has the target make its own share (same mount tag,
   read-only) before anything moves; the source unplugs the guest's virtiofs share
   for the move unless its QEMU can migrate it (plugged back if the move fails), and
   the target plugs its share in afterwards, the counter continuing from the source's
   energy total;
4. has the source host migrate the domain live, persistent on the target and undefined
   on the source, with the memory stream sent to the target's tunnel address; the
   progress (percent of memory sent) is copied into the migration row while it runs;
5. on success moves the server's claim to the target and the server's host in one
   transaction; on failure gives the target's claim back, leaves the server on its
   source with its allocations unchanged and a fault saying what failed;
6. in every case tears the tunnel down on both hosts at once and gives the reservation back (an
   agent that died keeps its link until its next start, which removes it).

The truth is asked of the hosts, not assumed: when the source's answer is lost (its
agent died or the call timed out), the domain running on the target means the
migration happened, and it is recorded as such.

A cancel (``DELETE /v1/servers/{id}/migration``) marks the migration ``cancelling``;
the task aborts libvirt's job on the source and the guest stays there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from wattvisor.auth import Principal
from wattvisor.compute.errors import Conflict, InvalidRequest, NotFound
from wattvisor.compute.hostclient import HostClient, IncomingShares, MigrationEndpoint
from wattvisor.compute.names import quoted
from wattvisor.compute.records import ServerRecord
from wattvisor.compute.servers import ServerService
from wattvisor.compute.tasks import Lease
from wattvisor.config.settings import MigrationSettings, parse_vni_pool
from wattvisor.host.live_migration import MigrationOrder, MigrationResult
from wattvisor.host.tunnels import TunnelSpec, TunnelState
from wattvisor.placement import Placement
from wattvisor.placement.service import ConsumerAllocationUpdate
from wattvisor.scheduler import NoValidHost
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import ServerAddressRow, ServerRow, VolumeRow
from wattvisor.store.migration_tables import MigrationRow, TunnelReservationRow

log = logging.getLogger(__name__)

_servers = cast(Table, ServerRow.__table__)
_volumes = cast(Table, VolumeRow.__table__)
_addresses = cast(Table, ServerAddressRow.__table__)
_migrations = cast(Table, MigrationRow.__table__)
_reservations = cast(Table, TunnelReservationRow.__table__)

MIGRATE_TASK = "migrating"
"""The server's task while it migrates."""
MIGRATE_TASK_KIND = "migrate"
SHARE_TRAIT = "COMPUTE_SHARE_LOCAL_FS"
ACTIVE_STATES = ("queued", "preparing", "migrating", "cancelling")
POLL_S = 0.25
RESERVE_TRIES = 20


def _now() -> datetime:
    return datetime.now(UTC)


class MigrationFailed(Exception):
    """One step of a migration failed; the message is the server's fault."""


class MigrationCancelled(Exception):
    """The migration was cancelled before or while it ran."""


@dataclass(frozen=True, slots=True)
class MigrationRecord:
    """A migration as the API shows it."""

    id: str
    server_id: str
    source_host: str
    target_host: str | None
    tunnel: bool
    state: str
    progress: int
    vni: int | None
    subnet: str | None
    fault: str | None
    stats: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime


def _record(row: Any) -> MigrationRecord:
    return MigrationRecord(
        id=row.id, server_id=row.server_uuid, source_host=row.source_host,
        target_host=row.target_host, tunnel=bool(row.tunnel), state=row.state,
        progress=int(row.progress), vni=row.vni, subnet=row.subnet, fault=row.fault,
        stats=dict(row.stats or {}), created_at=row.created_at, updated_at=row.updated_at,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Reservation:
    vni: int
    subnet: str


class TunnelPool:
    """VNIs and overlay subnets for tunnels, held in the store while a tunnel exists."""

    def __init__(self, engine: Engine, settings: MigrationSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.vnis = parse_vni_pool(settings.vni_pool)
        if settings.overlay == "ipv6":
            self.network = ipaddress.ip_network(settings.ipv6_pool)
            self.prefix = 127
        else:
            self.network = ipaddress.ip_network(settings.ipv4_pool)
            self.prefix = 30

    def reserve(self, migration_id: str) -> Reservation:
        """The lowest free VNI and subnet; a concurrent reservation of the same one loses
        on the unique constraint and tries the next. Repeatable for one migration."""
        for _ in range(RESERVE_TRIES):
            with read_transaction(self.engine) as conn:
                mine = conn.execute(
                    select(_reservations).where(_reservations.c.migration_id == migration_id)
                ).first()
                if mine is not None:
                    return Reservation(int(mine.vni), str(mine.subnet))
                taken = conn.execute(select(_reservations.c.vni, _reservations.c.subnet)).all()
            vni = self._free_vni({int(r.vni) for r in taken})
            subnet = self._free_subnet({str(r.subnet) for r in taken})
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(
                        insert(_reservations).values(
                            migration_id=migration_id, vni=vni, subnet=subnet, created_at=_now()
                        )
                    )
            except IntegrityError:
                continue  # another migration took it first
            return Reservation(vni, subnet)
        raise MigrationFailed("no tunnel VNI or subnet could be reserved (pool contended)")

    def _free_vni(self, taken: set[int]) -> int:
        first, last = self.vnis
        for vni in range(first, last + 1):
            if vni not in taken:
                return vni
        raise MigrationFailed(
            f"every VNI of migration.vni_pool {self.settings.vni_pool!r} is in use"
        )

    def _free_subnet(self, taken: set[str]) -> str:
        for subnet in self.network.subnets(new_prefix=self.prefix):
            if str(subnet) not in taken:
                return str(subnet)
        raise MigrationFailed(f"every /{self.prefix} of {self.network} is in use by a tunnel")

    def release(self, migration_id: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(delete(_reservations).where(_reservations.c.migration_id == migration_id))

    def held(self) -> list[Reservation]:
        with read_transaction(self.engine) as conn:
            rows = conn.execute(select(_reservations)).all()
        return [Reservation(int(r.vni), str(r.subnet)) for r in rows]


def _on_both(first: Callable[[], object], second: Callable[[], object]) -> list[Exception]:
    """Run both hosts' calls at once and wait for both (so that no tear-down overtakes a
    set-up still under way); the exceptions they raised, the first call's first."""
    with ThreadPoolExecutor(2, thread_name_prefix="wattvisor-tunnel") as pool:
        calls = [pool.submit(first), pool.submit(second)]
    failures: list[Exception] = []
    for call in calls:
        exc = call.exception()
        if isinstance(exc, Exception):
            failures.append(exc)
        elif exc is not None:
            raise exc
    return failures


def tunnel_ends(
    migration_id: str, reservation: Reservation, source: str, target: str
) -> tuple[TunnelSpec, TunnelSpec]:
    """The source's and the target's end of one tunnel: first and second address."""
    network = ipaddress.ip_network(reservation.subnet)
    if network.prefixlen == 30:
        first, second = list(network.hosts())[:2]
    else:
        first, second = network[0], network[1]
    prefix = network.prefixlen
    return (
        TunnelSpec(migration_id, reservation.vni, source, target, f"{first}/{prefix}",
                   str(second)),
        TunnelSpec(migration_id, reservation.vni, target, source, f"{second}/{prefix}",
                   str(first)),
    )  # fmt: skip


def _tcp_uri(address: str) -> str:
    return f"tcp://[{address}]" if ":" in address else f"tcp://{address}"


class MigrationService:
    """Migrations of servers between hosts, over the server service's tasks and workers."""

    def __init__(
        self, servers: ServerService, placement: Placement, settings: MigrationSettings
    ) -> None:
        self.servers = servers
        self.placement = placement
        self.settings = settings
        self.pool = TunnelPool(servers.engine, settings)
        servers.task_handlers[MIGRATE_TASK_KIND] = self._migrate_task
        servers.task_resumers[MIGRATE_TASK] = MIGRATE_TASK_KIND

    # ----------------------------------------------------------------- requests

    def request(
        self, principal: Principal, server_id: str, host: str | None, tunnel: bool
    ) -> MigrationRecord:
        """Accept a migration of the server (to ``host`` if given) and queue it; refused,
        changing nothing, when the server or the host cannot take part."""
        if not principal.is_admin:
            raise NotFound(f"server {quoted(server_id)} does not exist", server_id=server_id)
        record = self.servers.get_live(principal, server_id)
        if record.status != "ACTIVE" or record.task is not None:
            raise self.servers._conflict(principal, server_id, ("ACTIVE",), "migrate")
        if record.host_uuid is None or record.domain_name is None:
            raise Conflict(f"server {quoted(server_id)} is on no host", server_id=server_id)
        target = self._requested_host(record, host)
        self._check_movable(record, target)
        migration_id = str(uuidlib.uuid4())
        with write_transaction(self.servers.engine) as conn:
            claimed = conn.execute(
                update(_servers)
                .where(
                    (_servers.c.uuid == record.uuid) & (_servers.c.status == "ACTIVE")
                    & _servers.c.task.is_(None)
                )
                .values(task=MIGRATE_TASK, updated_at=_now())
            ).rowcount  # fmt: skip
            if claimed == 1:
                now = _now()
                conn.execute(
                    insert(_migrations).values(
                        id=migration_id, server_uuid=record.uuid, source_host=record.host_uuid,
                        target_host=target, requested_host=target, tunnel=tunnel,
                        state="queued", progress=0, vni=None, subnet=None, fault=None, stats={},
                        created_at=now, updated_at=now,
                    )
                )  # fmt: skip
                self.servers.tasks.enqueue(
                    conn, MIGRATE_TASK_KIND, record.uuid, {"migration_id": migration_id}
                )
                # The answer is the migration as accepted: a worker may move it on as
                # soon as the transaction ends.
                accepted = _record(
                    conn.execute(select(_migrations).where(_migrations.c.id == migration_id)).one()
                )
        if claimed != 1:
            raise self.servers._conflict(principal, server_id, ("ACTIVE",), "migrate")
        self.servers._notify()
        return accepted

    def _requested_host(self, record: ServerRecord, host: str | None) -> str | None:
        if host is None:
            return None
        names = self.servers.hosts.names()
        matches = [uuid for uuid, name in names.items() if host in (uuid, name)]
        if not matches:
            raise InvalidRequest(
                f"host {quoted(host)} does not exist; accepted: the id or name of a "
                "registered host", host=host,
            )  # fmt: skip
        target = matches[0]
        if target == record.host_uuid:
            raise InvalidRequest(
                f"server {quoted(record.uuid)} runs on host {quoted(host)} already; name "
                "another host", host=host,
            )  # fmt: skip
        down = self.servers.hosts.down_hosts()
        if target in down:
            raise Conflict(f"host {quoted(host)} is down: {down[target]}", host=host)
        return target

    def _check_movable(self, record: ServerRecord, target: str | None) -> None:
        """Refuse what cannot move, before anything moves: volumes are local to their
        host, and a power-metrics server needs a target with a power-metrics share."""
        with read_transaction(self.servers.engine) as conn:
            volumes = conn.execute(
                select(_volumes.c.id).where(_volumes.c.server_uuid == record.uuid)
            ).all()
        if record.boot_volume_id is not None or volumes:
            raise Conflict(
                f"server {quoted(record.uuid)} has volumes attached; volumes are local to "
                "their host, so it cannot migrate (detach them first)",
                server_id=record.uuid,
            )
        if record.shares and target is not None:
            try:
                traits = self.placement.get_provider_traits(target).traits
            except Exception:
                traits = frozenset()
            if SHARE_TRAIT not in traits:
                raise Conflict(
                    f"server {quoted(record.uuid)} has a power-metrics share "
                    f"({', '.join(record.shares)}) and host {quoted(target)} has no "
                    f"power-metrics share ({SHARE_TRAIT} missing), so it cannot take it",
                    server_id=record.uuid, host=target,
                )  # fmt: skip

    def cancel(self, principal: Principal, server_id: str) -> MigrationRecord:
        """Ask the server's running migration to stop; the guest stays on its source."""
        if not principal.is_admin:
            raise NotFound(f"server {quoted(server_id)} does not exist", server_id=server_id)
        record = self.servers.get(principal, server_id)
        with write_transaction(self.servers.engine) as conn:
            row = conn.execute(
                select(_migrations)
                .where(
                    (_migrations.c.server_uuid == record.uuid)
                    & _migrations.c.state.in_(ACTIVE_STATES)
                )
            ).first()  # fmt: skip
            if row is None:
                raise Conflict(
                    f"server {quoted(server_id)} has no migration in progress",
                    server_id=server_id,
                )
            conn.execute(
                update(_migrations)
                .where((_migrations.c.id == row.id) & _migrations.c.state.in_(ACTIVE_STATES))
                .values(state="cancelling", updated_at=_now())
            )
        return self.get(str(row.id))

    def get(self, migration_id: str) -> MigrationRecord:
        with read_transaction(self.servers.engine) as conn:
            row = conn.execute(select(_migrations).where(_migrations.c.id == migration_id)).first()
        if row is None:
            raise NotFound(f"migration {quoted(migration_id)} does not exist")
        return _record(row)

    def latest(self, principal: Principal, server_id: str) -> MigrationRecord:
        """The server's most recent migration."""
        if not principal.is_admin:
            raise NotFound(f"server {quoted(server_id)} does not exist", server_id=server_id)
        record = self.servers.get(principal, server_id)
        with read_transaction(self.servers.engine) as conn:
            row = conn.execute(
                select(_migrations)
                .where(_migrations.c.server_uuid == record.uuid)
                .order_by(_migrations.c.created_at.desc())
                .limit(1)
            ).first()
        if row is None:
            raise NotFound(
                f"server {quoted(server_id)} has never been migrated", server_id=server_id
            )
        return _record(row)

    # ------------------------------------------------------------------- the task

    def _set(self, migration_id: str, **values: Any) -> None:
        """Update the row unless a cancel is asked (state writes keep ``cancelling``)."""
        values["updated_at"] = _now()
        condition = _migrations.c.id == migration_id
        if "state" in values and values["state"] in ("preparing", "migrating"):
            condition = condition & (_migrations.c.state != "cancelling")
        with write_transaction(self.servers.engine) as conn:
            conn.execute(update(_migrations).where(condition).values(**values))

    def _cancelled(self, migration_id: str) -> bool:
        return self.get(migration_id).state == "cancelling"

    def _migrate_task(self, lease: Lease) -> None:
        migration_id = str(lease.task.payload["migration_id"])
        server_uuid = lease.task.target
        with self.servers.lock_for(server_uuid):
            migration = self.get(migration_id)
            if migration.state not in ACTIVE_STATES:
                return
            server = self.servers._load(server_uuid)
            if server is None or server.task != MIGRATE_TASK:
                self._end(migration, "failed", "the server was deleted during the migration")
                return
            if lease.attempt > 1 and migration.target_host is not None:
                self._resume(migration, server)
                return
            try:
                self._run(migration, server)
            except MigrationCancelled:
                self._settle_failure(migration_id, server, None, cancelled=True)
            except MigrationFailed as exc:
                self._settle_failure(migration_id, server, str(exc))
            except Exception as exc:
                log.exception("migration %s of server %s failed", migration_id, server_uuid)
                self._settle_failure(migration_id, server, f"{type(exc).__name__}: {exc}")

    def _run(self, migration: MigrationRecord, server: ServerRecord) -> None:
        assert server.host_uuid is not None and server.domain_name is not None
        self._set(migration.id, state="preparing")
        target_uuid = self._claim_target(migration, server)
        self._set(migration.id, target_host=target_uuid)
        source = self.servers.hosts.client(server.host_uuid)
        target = self.servers.hosts.client(target_uuid)
        source_end = self._endpoint(source, "source")
        target_end = self._endpoint(target, "target")
        if target_end.libvirt_uri is None or target_end.underlay_address is None:
            raise MigrationFailed("the target host has no migration endpoint "
                                  "(migration.underlay_address)")  # fmt: skip
        network = self.servers.addresses.spec if self._has_interface(server.uuid) else None
        try:
            target.prepare_incoming(network)
        except Exception as exc:
            raise MigrationFailed(f"the target host cannot take the guest: {exc}") from exc
        dest_name = self._dest_name(target, target_uuid, server.domain_name)
        shares = self._incoming_shares(server, dest_name)
        if shares is not None:
            try:
                target.prepare_incoming_shares(shares)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    target.release_incoming_shares(dest_name)
                raise MigrationFailed(
                    f"the target host cannot take the guest's power-metrics share: {exc}"
                ) from exc
        stats: dict[str, Any] = {}
        try:
            if migration.tunnel:
                if source_end.underlay_address is None:
                    raise MigrationFailed("the source host has no migration endpoint "
                                          "(migration.underlay_address)")  # fmt: skip
                started = time.perf_counter()
                reservation = self.pool.reserve(migration.id)
                self._set(migration.id, vni=reservation.vni, subnet=reservation.subnet)
                source_spec, target_spec = tunnel_ends(
                    migration.id, reservation, source_end.underlay_address,
                    target_end.underlay_address,
                )  # fmt: skip
                failures = _on_both(
                    lambda: target.tunnel_up(target_spec), lambda: source.tunnel_up(source_spec)
                )
                if failures:
                    raise MigrationFailed(
                        "the tunnel could not come up: " + "; ".join(str(f) for f in failures)
                    ) from failures[0]
                stats["tunnel_setup_ms"] = round((time.perf_counter() - started) * 1000, 1)
                migrate_uri = _tcp_uri(source_spec.peer)
            else:
                migrate_uri = _tcp_uri(target_end.underlay_address)
            if self._cancelled(migration.id):
                raise MigrationCancelled()
            stats["domain_name"] = dest_name
            self._set(migration.id, state="migrating", stats=dict(stats))
            order = MigrationOrder(
                migration_id=migration.id, domain_name=server.domain_name,
                target_libvirt_uri=target_end.libvirt_uri, migrate_uri=migrate_uri,
                max_bandwidth_mib_s=self.settings.max_bandwidth_mib_s,
                timeout_s=self.settings.timeout_s, dest_name=dest_name,
                unplug_shares=shares is not None,
                unplug_timeout_s=self.settings.share_unplug_timeout_s,
            )  # fmt: skip
            try:
                result = self._migrate(migration.id, server, source, target, order)
            except BaseException:
                if shares is not None:
                    with contextlib.suppress(Exception):
                        target.release_incoming_shares(dest_name)
                raise
            stats.update(
                seconds=round(result.seconds, 3), downtime_ms=result.downtime_ms,
                total_time_ms=result.total_time_ms, memory_bytes=result.memory_bytes,
                migrate_uri=migrate_uri,
            )  # fmt: skip
            if shares is not None:
                stats.update(self._plug_on_target(target, shares, result))
        finally:
            if migration.tunnel:
                stats.update(self._teardown(migration.id, source, target))
            self._set(migration.id, stats=stats)
        self._commit(migration.id, server, target_uuid, stats)

    @staticmethod
    def _incoming_shares(server: ServerRecord, dest_name: str) -> IncomingShares | None:
        if not server.shares:
            return None
        return IncomingShares(
            server_uuid=server.uuid, domain_name=dest_name, project=server.project,
            tags=tuple(server.shares),
        )  # fmt: skip

    def _plug_on_target(
        self, target: HostClient, shares: IncomingShares, result: MigrationResult
    ) -> dict[str, Any]:
        """The guest's share on its new host, its counter continuing from the source's
        total; which path the share took, for the record. The guest has moved either
        way: a share that cannot be plugged is recorded, not undone."""
        path = result.share_path or "unplug"
        stats: dict[str, Any] = {"share_path": path}
        if result.energy_joules is not None:
            stats["share_energy_joules"] = round(result.energy_joules, 6)
        arrived = dataclasses.replace(
            shares, energy_joules=max(0.0, result.energy_joules or 0.0),
            attach=path == "unplug",
        )  # fmt: skip
        try:
            stats["share_tags"] = list(target.plug_incoming_shares(arrived))
        except Exception as exc:
            log.error("plugging the share of %s on its new host failed: %s",
                      shares.server_uuid, exc)  # fmt: skip
            stats["share_error"] = str(exc)[:500]
        return stats

    def _dest_name(self, target: HostClient, target_uuid: str, name: str) -> str:
        """The domain keeps its name unless the target has a domain of that name (names
        are counted per host): then the target's next free name."""
        try:
            taken = target.domain_exists(name)
        except Exception as exc:
            raise MigrationFailed(f"the target host did not answer: {exc}") from exc
        return self.servers.hosts.allocate_domain_name(target_uuid) if taken else name

    def _has_interface(self, server_uuid: str) -> bool:
        with read_transaction(self.servers.engine) as conn:
            row = conn.execute(
                select(_addresses.c.slot).where(_addresses.c.server_uuid == server_uuid)
            ).first()
        return row is not None

    def _endpoint(self, client: HostClient, which: str) -> MigrationEndpoint:
        try:
            return client.migration_endpoint()
        except Exception as exc:
            raise MigrationFailed(f"the {which} host did not answer: {exc}") from exc

    def _claim_target(self, migration: MigrationRecord, server: ServerRecord) -> str:
        """Hold the target's room for the migration's own consumer before anything moves."""
        assert server.host_uuid is not None
        held = self.placement.get_allocations(server.uuid)
        resources = {
            rc: amount
            for part in held.allocations if part.provider_uuid == server.host_uuid
            for rc, amount in part.resources.items()
        }  # fmt: skip
        existing = self.placement.get_allocations(migration.id)
        if existing.allocations:
            return existing.allocations[0].provider_uuid  # claimed by an earlier attempt
        if migration.target_host is not None:
            try:
                self.placement.set_allocations(
                    migration.id, {migration.target_host: resources}, project_id=server.project,
                    user_id=server.user, consumer_generation=None,
                )  # fmt: skip
            except Exception as exc:
                raise MigrationFailed(f"the target host has no room for the server: {exc}") from exc
            return migration.target_host
        flavor = self.servers.catalog.flavor(server.flavor_id)
        image = self.servers.catalog.image(server.image_id)
        owner = Principal(server.user, server.project, "member")
        spec = self.servers._request_spec(owner, flavor, image, server.power_metrics)
        try:
            claim = self.servers.scheduler.select_and_claim(
                spec, migration.id, exclude=[server.host_uuid], prefiltered=True
            )
        except NoValidHost as exc:
            raise MigrationFailed(f"no other host can take the server: {exc}") from exc
        return claim.provider_uuid

    def _migrate(
        self,
        migration_id: str,
        server: ServerRecord,
        source: HostClient,
        target: HostClient,
        order: MigrationOrder,
    ) -> MigrationResult:
        """Run the source's migration and watch it: progress into the row, abort on a
        cancel, on the timeout, or when the target host stops answering."""
        assert server.domain_name is not None
        deadline = time.monotonic() + self.settings.timeout_s
        with ThreadPoolExecutor(1, thread_name_prefix="wattvisor-migrate") as pool:
            future: Future[MigrationResult] = pool.submit(
                source.migrate_out, order, self.settings.timeout_s
            )
            reason: str | None = None
            while not future.done():
                with contextlib.suppress(Exception):
                    progress = source.migration_progress(server.domain_name)
                    if progress is not None:
                        self._set(migration_id, progress=progress.percent)
                if reason is None:
                    reason = self._abort_reason(migration_id, target, deadline)
                    if reason is not None:
                        log.warning("aborting migration %s: %s", migration_id, reason)
                        with contextlib.suppress(Exception):
                            source.abort_migration(server.domain_name)
                with contextlib.suppress(Exception):
                    future.result(timeout=POLL_S)
            try:
                result = future.result()
            except Exception as exc:
                if self._landed_on_target(target, server.uuid):
                    log.warning("migration %s: the source's answer was lost (%s) but the "
                                "guest runs on the target", migration_id, exc)  # fmt: skip
                    return MigrationResult(0.0, None, None, None)
                if reason == "cancelled":
                    raise MigrationCancelled() from exc
                raise MigrationFailed(
                    f"the migration failed ({reason or 'on the source host'}): {exc}"
                ) from exc
        self._set(migration_id, progress=100)
        return result

    def _abort_reason(self, migration_id: str, target: HostClient, deadline: float) -> str | None:
        if self._cancelled(migration_id):
            return "cancelled"
        if time.monotonic() > deadline:
            return f"it took longer than migration.timeout_s = {self.settings.timeout_s:g} s"
        state = target.state()
        if state != "up":
            return f"the target host stopped answering ({state})"
        return None

    @staticmethod
    def _landed_on_target(target: HostClient, server_uuid: str) -> bool:
        """True when the target runs the server's domain (its uuid is the server's)."""
        try:
            return target.domain_states().get(server_uuid) == "running"
        except Exception:
            return False

    @staticmethod
    def _last_total(source: HostClient, server_uuid: str) -> float | None:
        """The server's energy total in the source's latest sample, if it answers."""
        try:
            snapshot = source.energy_snapshot()
        except Exception:
            return None
        vm = snapshot.vms.get(server_uuid) if snapshot is not None else None
        return vm.energy_joules_total if vm is not None else None

    def _teardown(
        self, migration_id: str, source: HostClient, target: HostClient
    ) -> dict[str, Any]:
        """Both ends removed (an unreachable agent removes its end at its next start) and
        the reservation given back; the bytes that crossed the tunnel, for the record."""
        stats: dict[str, Any] = {}
        started = time.perf_counter()
        ends = (("source", source), ("target", target))
        with ThreadPoolExecutor(2, thread_name_prefix="wattvisor-tunnel") as pool:
            removals = [(which, pool.submit(c.tunnel_down, migration_id)) for which, c in ends]
        for which, removal in removals:
            try:
                last = removal.result()
            except Exception as exc:
                log.warning("removing the %s end of tunnel %s failed: %s", which, migration_id, exc)
                stats[f"{which}_tunnel_left"] = str(exc)[:300]
                continue
            if isinstance(last, TunnelState):
                stats[f"{which}_tunnel_tx_bytes"] = last.tx_bytes
                stats[f"{which}_tunnel_rx_bytes"] = last.rx_bytes
        stats["tunnel_teardown_ms"] = round((time.perf_counter() - started) * 1000, 1)
        try:
            self.pool.release(migration_id)
        except Exception:
            log.exception("giving back the tunnel reservation of %s failed", migration_id)
        return stats

    def _commit(
        self, migration_id: str, server: ServerRecord, target_uuid: str, stats: Mapping[str, Any]
    ) -> None:
        """The server's claim moves to the target and the server with it, in one
        transaction; the migration's own claim goes."""
        domain_name = str(stats.get("domain_name") or server.domain_name)
        held = self.placement.get_allocations(migration_id)
        resources = {rc: n for part in held.allocations for rc, n in part.resources.items()}
        server_held = self.placement.get_allocations(server.uuid)

        # The guest moved either way; a share its new host could not plug is the
        # server's fault to show (its energy counter is unreadable inside until then).
        share_error = stats.get("share_error")
        fault = (
            f"migrated to host {target_uuid}, but its power-metrics share could not be "
            f"plugged there: {share_error}"
            if share_error
            else None
        )

        def move(conn: Connection) -> None:
            conn.execute(
                update(_servers)
                .where((_servers.c.uuid == server.uuid) & (_servers.c.status != "DELETED"))
                .values(host_uuid=target_uuid, domain_name=domain_name, task=None,
                        fault=fault, fault_detail=None, updated_at=_now())
            )  # fmt: skip
            conn.execute(
                update(_migrations)
                .where(_migrations.c.id == migration_id)
                .values(state="done", progress=100, stats=dict(stats), updated_at=_now())
            )

        self.placement.set_allocations_many(
            [
                ConsumerAllocationUpdate(
                    server.uuid, {target_uuid: resources}, server.project, server.user,
                    server_held.generation,
                ),
                ConsumerAllocationUpdate(
                    migration_id, {}, server.project, server.user, held.generation
                ),
            ],
            also=move,
        )  # fmt: skip

    def _settle_failure(
        self, migration_id: str, server: ServerRecord, fault: str | None, cancelled: bool = False
    ) -> None:
        """The server stays where it was, with its allocations; the target's claim goes."""
        with contextlib.suppress(Exception):
            self.placement.delete_allocations(migration_id)
        with contextlib.suppress(Exception):
            self.pool.release(migration_id)
        state = "cancelled" if cancelled else "failed"
        text = None if cancelled else f"migration failed: {fault}"
        with write_transaction(self.servers.engine) as conn:
            conn.execute(
                update(_migrations)
                .where(_migrations.c.id == migration_id)
                .values(state=state, fault=text, updated_at=_now())
            )
            values: dict[str, Any] = {"task": None, "updated_at": _now()}
            if text is not None:
                values.update(fault=text, fault_detail=None)
            conn.execute(
                update(_servers)
                .where((_servers.c.uuid == server.uuid) & (_servers.c.task == MIGRATE_TASK))
                .values(**values)
            )

    def _end(self, migration: MigrationRecord, state: str, fault: str) -> None:
        with contextlib.suppress(Exception):
            self.placement.delete_allocations(migration.id)
        with contextlib.suppress(Exception):
            self.pool.release(migration.id)
        self._set(migration.id, state=state, fault=fault)

    def _resume(self, migration: MigrationRecord, server: ServerRecord) -> None:
        """After a controller died mid-migration: the hosts say where the guest is now."""
        assert migration.target_host is not None and server.domain_name is not None
        target = self.servers.hosts.client(migration.target_host)
        source = self.servers.hosts.client(server.host_uuid or migration.source_host)
        with contextlib.suppress(Exception):
            source.abort_migration(server.domain_name)
        stats: dict[str, Any] = dict(migration.stats)
        if migration.tunnel:
            stats.update(self._teardown(migration.id, source, target))
        if self._landed_on_target(target, server.uuid):
            dest_name = str(stats.get("domain_name") or server.domain_name)
            shares = self._incoming_shares(server, dest_name)
            if shares is not None:
                stats.update(self._plug_on_target(
                    target, shares, MigrationResult(0.0, None, None, None, "unplug",
                                                    self._last_total(source, server.uuid)),
                ))  # fmt: skip
            self._commit(migration.id, server, migration.target_host, stats)
        else:
            if server.shares:
                with contextlib.suppress(Exception):
                    target.release_incoming_shares(str(stats.get("domain_name") or ""))
            self._settle_failure(
                migration.id, server, "the controller running it stopped; the guest stayed "
                "on its source",
            )  # fmt: skip


def add_migrations(
    servers: ServerService, placement: Placement, settings: MigrationSettings
) -> MigrationService:
    """The migration service, its task handler registered with the server service."""
    return MigrationService(servers, placement, settings)
