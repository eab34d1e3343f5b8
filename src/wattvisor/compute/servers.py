"""Servers: create (validate → record BUILD → schedule and spawn in a task), stop,
start, delete, their config drive document; recovery after a restart and power sync.

A request is checked completely before anything is written, so a rejected request
changes nothing. The slow part of every lifecycle action is a task in the store
(:mod:`wattvisor.compute.tasks`), queued in the transaction that accepts the request:
any controller sharing the store runs it, one task of a server at a time in the order
they were accepted (a delete waits for the build it follows), and a controller that
dies mid-task leaves it to another one, or to itself restarted. Visibility is decided
here, not in the API: a member sees their own project only, and another project's
server looks exactly like a missing one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    case,
    delete,
    insert,
    select,
    update,
)

from wattvisor.auth import Principal, can_see_project, project_scope
from wattvisor.compute.addresses import AddressBook, AddressesExhausted
from wattvisor.compute.catalog import Catalog
from wattvisor.compute.errors import (
    ComputeError,
    Conflict,
    InvalidRequest,
    NotFound,
)
from wattvisor.compute.guest_build import POWER_METRICS_PURPOSE
from wattvisor.compute.hostclient import (
    HostOutcomeUnknown,
    SpawnFlavor,
    SpawnImage,
    SpawnRequest,
    VolumeAttachment,
)
from wattvisor.compute.hosts import HostRegistry
from wattvisor.compute.identities import IdentityStore
from wattvisor.compute.keyed_locks import KeyedLock, KeyedLocks
from wattvisor.compute.names import check_server_name, quoted, require_printable
from wattvisor.compute.records import (
    FlavorRecord,
    ImageRecord,
    ServerRecord,
    VolumeRecord,
)
from wattvisor.compute.tasks import Handler, Lease, TaskQueue, TaskRecord, TaskWorker
from wattvisor.config.settings import Settings
from wattvisor.guest import ShareMeta
from wattvisor.host.configdrive import (
    ConfigDriveError,
    ConfigDriveMetadata,
    config_drive_metadata_document,
)
from wattvisor.host.image_cache import (
    DiskTooSmall,
    ImageCacheError,
    check_root_size,
    image_virtual_size,
)
from wattvisor.host.networks import GuestNetwork, NetworkSpec
from wattvisor.scheduler import (
    Claim,
    Flavor,
    ImageMeta,
    InvalidSpec,
    NoValidHost,
    RequestSpec,
    Scheduler,
    SpawnFailed,
    build_request_spec,
)
from wattvisor.scheduler.prefilters import SHARE_TRAIT
from wattvisor.scheduler.validation import POWER_METRICS_FLAVOR_KEY, validate_server_metadata
from wattvisor.store import as_utc, read_transaction, write_transaction
from wattvisor.store.compute_tables import InterfaceRow, ServerAddressRow, ServerRow, VolumeRow
from wattvisor.store.duties import single_duty
from wattvisor.store.trust_tables import HostAgentRow

log = logging.getLogger(__name__)

_servers = cast(Table, ServerRow.__table__)
_agents = cast(Table, HostAgentRow.__table__)

REPORT_SLACK_S = 5.0
"""How long before its heartbeat reached a controller an agent may have read the domain
states it reports (a server changed within that is judged by the next report)."""
_volumes = cast(Table, VolumeRow.__table__)
_interfaces = cast(Table, InterfaceRow.__table__)
_server_addresses = cast(Table, ServerAddressRow.__table__)
_BUILD_TASKS = ("scheduling", "spawning")
DEFAULT_MAX_ATTEMPTS = 5
BUILD_MAX_ATTEMPTS = 8
"""A build whose host died while it spawned is tried again until that host answers:
with the queue's doubling backoff (2 s first), eight attempts wait about four minutes
for an agent to be restarted before the build is given up as ERROR."""


def _now() -> datetime:
    return datetime.now(UTC)


class ServerService:
    """The server lifecycle over a catalog, the hosts and the scheduler."""

    def __init__(
        self,
        engine: Engine,
        catalog: Catalog,
        hosts: HostRegistry,
        scheduler: Scheduler,
        settings: Settings,
    ) -> None:
        self.engine = engine
        self.catalog = catalog
        self.hosts = hosts
        self.scheduler = scheduler
        self.settings = settings
        self.addresses = AddressBook(engine, NetworkSpec.from_settings(settings.host.network))
        self.identities = IdentityStore(engine)
        self.tasks = TaskQueue(engine, lease_s=settings.compute.task_lease_s)
        self.task_handlers: dict[str, Handler] = {
            "build": self._build_task,
            "stop": self._power_task,
            "start": self._power_task,
            "delete": self._delete_task,
        }
        """What runs each kind of server task; other services add theirs before the
        worker starts (the first request, :meth:`start_worker` or :meth:`recover`)."""
        self._worker: TaskWorker | None = None
        self.runs_tasks = True
        """False: this process only queues tasks and leaves running them to controllers
        (their worker is started only by :meth:`start_worker`)."""
        self._worker_guard = threading.Lock()
        self._locks = KeyedLocks()
        self.volume_locks = KeyedLocks()
        """Locks serialising what claims a volume: attach, detach, delete, boot from it."""
        self._image_sizes: dict[tuple[str, tuple[int, ...]], int] = {}
        self.task_failure_handlers: dict[str, Callable[[TaskRecord], None]] = {}
        """Who settles what a task of a kind leaves when it fails for good, instead of
        making its server ERROR (a failed attach leaves the server as it was)."""
        self.recoverers: list[Callable[[], list[str]]] = []
        """What other services carry on at :meth:`recover` (one note per thing)."""
        self.task_resumers: dict[str, str] = {}
        """The task kind that carries on a server task other services give servers (by
        the server's task name), for :meth:`recover`."""

    # ------------------------------------------------------------------ reading

    def list_all(
        self, principal: Principal, *, include_deleted: bool = False
    ) -> list[ServerRecord]:
        query = select(_servers).order_by(_servers.c.created_at, _servers.c.uuid)
        scope = project_scope(principal)
        if scope is not None:
            query = query.where(_servers.c.project == scope)
        if not include_deleted:
            query = query.where(_servers.c.status != "DELETED")
        with read_transaction(self.engine) as conn:
            records = [_server(row) for row in conn.execute(query)]
        return self._with_addresses(records)

    def _with_addresses(self, records: list[ServerRecord]) -> list[ServerRecord]:
        held = self.addresses.of(r.uuid for r in records if r.status != "DELETED")
        return [
            dataclasses.replace(r, addresses=held[r.uuid]) if r.uuid in held else r for r in records
        ]

    def get(self, principal: Principal, server_id: str) -> ServerRecord:
        """The server if ``principal`` may see it; NotFound otherwise (also for other projects)."""
        record = self._load(server_id)
        if record is None or not can_see_project(principal, record.project):
            raise NotFound(f"server {quoted(server_id)} does not exist", server_id=server_id)
        return self._with_addresses([record])[0]

    def get_live(self, principal: Principal, server_id: str) -> ServerRecord:
        """Like :meth:`get`, but a DELETED server is NotFound too: what belonged to it
        (metadata, power, devices) is gone, only its record remains to show how it ended."""
        record = self.get(principal, server_id)
        if record.status == "DELETED":
            raise NotFound(
                f"server {quoted(server_id)} is deleted; only GET /v1/servers/{{id}} still "
                "shows it",
                server_id=server_id,
            )
        return record

    def _load(self, server_id: str) -> ServerRecord | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(_servers).where(_servers.c.uuid == server_id)).first()
        return None if row is None else _server(row)

    # ------------------------------------------------------------------- create

    def create(
        self,
        principal: Principal,
        name: str,
        flavor: str,
        image: str,
        *,
        power_metrics: bool | None = None,
        boot_volume: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ServerRecord:
        """Check the request, record the server as BUILD and hand it to a worker.

        ``metadata`` (Nova's server metadata) is checked before anything is recorded:
        ``prometheus_exporter_port`` must be a port, ``service_template`` an id.

        With ``boot_volume`` (id or name of an available volume of the caller's
        project) the volume is the root disk: it is marked in-use by the server in the
        same transaction that records it, and freed when the server is deleted. The
        image then gives the kernel (if it has one) and its properties; its disk is
        not used.
        """
        check_server_name(name)
        server_metadata = dict(metadata or {})
        try:
            validate_server_metadata(server_metadata)
        except InvalidSpec as exc:
            raise InvalidRequest(
                f"server metadata is not accepted: {exc}",
                problems=[str(p) for p in exc.problems],
            ) from exc
        flavor_record = self.catalog.flavor(flavor)
        image_record = self.catalog.image(image)
        volume_id = None
        if boot_volume is not None:
            volume_id = self._boot_volume(principal, boot_volume).id
        else:
            self._check_root_disk(flavor_record, image_record)
        spec = self._request_spec(
            principal, flavor_record, image_record, power_metrics, volume_backed=bool(volume_id)
        )
        now = _now()
        record = ServerRecord(
            uuid=str(uuidlib.uuid4()), name=name, project=principal.project,
            user=principal.user, flavor_id=flavor_record.id, image_id=image_record.id,
            status="BUILD", task="scheduling", fault=None, host_uuid=None, domain_name=None,
            power_metrics=SHARE_TRAIT in spec.required, shares=(), created_at=now,
            updated_at=now, boot_volume_id=volume_id, metadata=server_metadata,
        )  # fmt: skip
        held: contextlib.AbstractContextManager[object] = (
            self.volume_locks.hold(volume_id) if volume_id else contextlib.nullcontext()
        )
        try:
            with held, write_transaction(self.engine) as conn:
                conn.execute(
                    insert(_servers).values(
                        uuid=record.uuid, name=name, project=record.project, user_name=record.user,
                        flavor_id=record.flavor_id, image_id=record.image_id, status="BUILD",
                        task=record.task, fault=None, host_uuid=None, domain_name=None,
                        power_metrics=record.power_metrics, shares=[], created_at=now,
                        updated_at=now, boot_volume_id=volume_id, server_metadata=server_metadata,
                    )
                )  # fmt: skip
                if volume_id is not None:  # after the server: the volume row refers to it
                    claimed = conn.execute(
                        update(_volumes)
                        .where(
                            (_volumes.c.id == volume_id) & (_volumes.c.status == "available")
                            & _volumes.c.server_uuid.is_(None)
                        )
                        .values(status="in-use", server_uuid=record.uuid)
                    ).rowcount  # fmt: skip
                    if claimed != 1:
                        raise _VolumeTaken  # rolls the server back
                self.tasks.enqueue(
                    conn, "build", record.uuid,
                    {"flavor": dataclasses.asdict(flavor_record),
                     "image": dataclasses.asdict(image_record), "power_metrics": power_metrics},
                    max_attempts=BUILD_MAX_ATTEMPTS,
                )  # fmt: skip
        except _VolumeTaken:
            raise self._volume_taken(principal, volume_id or "") from None
        self._notify()
        return record

    def _boot_volume(self, principal: Principal, ident: str) -> VolumeRecord:
        """The caller's project's volume ``ident`` (id or name), available to boot from.

        Another project's volume is "not found", as everywhere; one in use is a conflict.
        """
        require_printable("boot volume", ident)
        visible = (_volumes.c.project == principal.project) & (_volumes.c.status != "creating")
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(_volumes).where((_volumes.c.id == ident) & visible)
            ).all() or conn.execute(
                select(_volumes)
                .where((_volumes.c.name == ident) & visible)
                .order_by(_volumes.c.created_at, _volumes.c.id)
            ).all()  # fmt: skip
        if not rows:
            raise NotFound(f"volume {quoted(ident)} does not exist", volume_id=ident)
        if len(rows) > 1:
            ids = [r.id for r in rows]
            raise Conflict(
                f"{len(rows)} volumes are named {quoted(ident)}; give one of their ids: "
                + ", ".join(ids),
                name=ident, ids=ids,
            )  # fmt: skip
        row = rows[0]
        if row.status != "available" or row.server_uuid is not None:
            raise self._volume_taken(principal, row.id)
        return VolumeRecord(
            id=row.id, name=row.name, project=row.project, size_gb=row.size_gb,
            format=row.format, status=row.status, host_uuid=row.host_uuid, path=row.path,
            server_uuid=row.server_uuid, created_at=as_utc(row.created_at),
        )  # fmt: skip

    def _volume_taken(self, principal: Principal, volume_id: str) -> Conflict:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(_volumes).where(_volumes.c.id == volume_id)).first()
        user = row.server_uuid if row is not None else None
        return Conflict(
            f"volume {quoted(volume_id)} is in use by server {user}; a server boots only from "
            "an available volume",
            volume_id=volume_id, server_id=user,
        )  # fmt: skip

    def _check_root_disk(self, flavor: FlavorRecord, image: ImageRecord) -> None:
        """Refuse a flavor disk smaller than the image's virtual size before anything exists.

        Checked here when the image's disk is readable from the controller (one host, or
        shared storage); the host checks again in any case before it makes the overlay,
        and one that cannot read the disk fails the build with the reason in its fault.
        """
        if not image.disk_path or flavor.disk_gb == 0:
            return
        path = Path(image.disk_path)
        fmt = image.disk_format or "raw"
        try:
            st = path.stat()
            key = (f"{path}:{fmt}", (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            size = self._image_sizes.get(key)
            if size is None:
                size = image_virtual_size(path, fmt)
                if len(self._image_sizes) > 256:
                    self._image_sizes.clear()
                self._image_sizes[key] = size
        except (OSError, ImageCacheError) as exc:
            log.info("image %s: size not checked here, its host will: %s", image.id, exc)
            return
        try:
            check_root_size(flavor.disk_gb, size, what=f"image {image.name!r}")
        except DiskTooSmall as exc:
            raise InvalidRequest(
                f"flavor {flavor.name!r}: {exc}", flavor=flavor.name, image=image.name,
                flavor_disk_gb=flavor.disk_gb, image_virtual_size=size,
            ) from exc  # fmt: skip

    def _request_spec(
        self,
        principal: Principal,
        flavor: FlavorRecord,
        image: ImageRecord,
        power_metrics: bool | None,
        *,
        volume_backed: bool = False,
    ) -> RequestSpec:
        extra = dict(flavor.extra_specs)
        if power_metrics is not None:
            extra[POWER_METRICS_FLAVOR_KEY] = "true" if power_metrics else "false"
        spec = build_request_spec(
            Flavor(
                name=flavor.name, vcpus=flavor.vcpus, memory_mb=flavor.ram_mb,
                # A volume-backed root takes no local disk (as in Nova).
                root_gb=0 if volume_backed else flavor.disk_gb, ephemeral_gb=flavor.ephemeral_gb,
                swap_mb=flavor.swap_mb, extra_specs=extra,
            ),
            ImageMeta(properties=dict(image.properties), name=image.name),
            project_id=principal.project,
            user_id=principal.user,
        )  # fmt: skip
        try:
            self.scheduler.prepare(spec)
        except InvalidSpec as exc:
            raise InvalidRequest(
                f"flavor {flavor.name!r} and image {image.name!r} cannot be scheduled: {exc}",
                problems=[str(p) for p in exc.problems],
            ) from exc
        return spec

    def _root_volume(self, record: ServerRecord, host_uuid: str) -> VolumeAttachment | None:
        """The boot volume as the host attaches it; it must live on that host."""
        if record.boot_volume_id is None:
            return None
        with read_transaction(self.engine) as conn:
            row = conn.execute(
                select(_volumes).where(_volumes.c.id == record.boot_volume_id)
            ).first()
        if row is None or row.server_uuid != record.uuid:
            raise ComputeError(f"boot volume {record.boot_volume_id} is no longer this server's")
        if row.host_uuid != host_uuid:
            raise ComputeError(
                f"boot volume {row.id} lives on host {row.host_uuid}; volumes are local to "
                "their host"
            )
        return VolumeAttachment(row.id, row.path, row.format)

    def _build_task(self, lease: Lease) -> None:
        """The ``build`` task: the request as accepted (flavor and image as they were then)
        and the server's row give everything; an attempt after an interrupted one first
        finishes or undoes what that one did on its host."""
        server_uuid = lease.task.target
        with self._locks.hold(server_uuid):
            current = self._load(server_uuid)
            if current is None or current.status != "BUILD" or current.task not in _BUILD_TASKS:
                return  # deleted before it was built: the delete that follows settles it
            payload = lease.task.payload
            try:
                flavor = (
                    _flavor_record(payload["flavor"])
                    if "flavor" in payload
                    else self.catalog.flavor(current.flavor_id)
                )
                image = (
                    _image_record(payload["image"])
                    if "image" in payload
                    else self.catalog.image(current.image_id)
                )
                owner = Principal(current.user, current.project, "member")
                power_metrics = payload.get("power_metrics", current.power_metrics)
                spec = self._request_spec(
                    owner, flavor, image, power_metrics,
                    volume_backed=current.boot_volume_id is not None,
                )  # fmt: skip
            except (NotFound, InvalidRequest) as exc:
                self._finish(server_uuid, _BUILD_TASKS, status="ERROR",
                             fault=f"build failed: {exc.message}")  # fmt: skip
                return
            interrupted = lease.attempt > 1 or current.host_uuid is not None
            if interrupted and self._resume_build(current, flavor, image):
                return
            self._build(current, spec, flavor, image)

    def _resume_build(self, record: ServerRecord, flavor: FlavorRecord, image: ImageRecord) -> bool:
        """After an interrupted attempt: finish on the host it chose while that host still
        holds the server's claim (the host adopts the domain that attempt defined, or
        builds it under the recorded name); True when the server is ACTIVE now. Otherwise
        whatever the attempt did is undone, so the build starts over clean; raises (the
        task is tried again later) when the host cannot say it is."""
        host, domain = record.host_uuid, record.domain_name
        if host is not None and domain is not None and self._holds_claim(record.uuid, host):
            try:
                network = self.addresses.allocate(record.uuid)
                result = self.hosts.client(host).spawn(
                    self._spawn_request(record, domain, flavor, image, network, host)
                )
            except Exception as exc:
                log.warning("finishing the interrupted build of %s failed: %s", record.uuid, exc)
            else:
                self._finish(
                    record.uuid, _BUILD_TASKS, status="ACTIVE", fault=None, host_uuid=host,
                    domain_name=result.domain_name, shares=list(result.share_tags),
                )  # fmt: skip
                return True
        if host is not None and domain is not None:
            self.hosts.client(host).delete(record.uuid, domain)
        self.scheduler.release(Claim(record.uuid, host or "", "", {}, 0))
        self._finish(record.uuid, _BUILD_TASKS, "scheduling", host_uuid=None, domain_name=None)
        return False

    def _holds_claim(self, server_uuid: str, host_uuid: str) -> bool:
        held = self.scheduler.placement.get_allocations(server_uuid)
        return any(part.provider_uuid == host_uuid for part in held.allocations)

    def _spawn_request(
        self,
        record: ServerRecord,
        domain_name: str,
        flavor: FlavorRecord,
        image: ImageRecord,
        network: GuestNetwork | None,
        host_uuid: str,
    ) -> SpawnRequest:
        owner = self.identities.owner(record.user, record.project)
        return SpawnRequest(
            server_uuid=record.uuid, display_name=record.name, domain_name=domain_name,
            project=record.project, user=record.user, flavor=_spawn_flavor(flavor),
            image=_spawn_image(self.catalog.with_digests(image)),
            power_metrics=record.power_metrics,
            created_at=record.created_at, root_volume=self._root_volume(record, host_uuid),
            network=network, user_uuid=owner.user_uuid, project_uuid=owner.project_uuid,
        )  # fmt: skip

    def _build(
        self,
        record: ServerRecord,
        spec: RequestSpec,
        flavor: FlavorRecord,
        image: ImageRecord,
    ) -> None:
        try:
            network: GuestNetwork | None = self.addresses.allocate(record.uuid)
        except AddressesExhausted as exc:
            self._finish(record.uuid, _BUILD_TASKS, status="ERROR", fault=exc.message)
            return
        except Exception as exc:
            log.exception("holding an address for server %s failed", record.uuid)
            self._release_addresses(record.uuid)
            self._finish(
                record.uuid, _BUILD_TASKS, status="ERROR", fault=f"build failed: {_ADMIN_SEES}",
                fault_detail=f"build failed: no address could be held: {exc}",
            )  # fmt: skip
            return
        spawned: dict[str, Any] = {}

        def spawn(claim: Claim) -> None:
            def spawning(conn: Connection, domain_name: str) -> None:
                # Written with the name, so that a restart in the middle knows what to clean up.
                conn.execute(
                    update(_servers).where(_servers.c.uuid == record.uuid).values(
                        task=_task_after(_BUILD_TASKS, "spawning"),
                        host_uuid=claim.provider_uuid, domain_name=domain_name,
                        updated_at=_now(),
                    )
                )  # fmt: skip

            try:
                client = self.hosts.client(claim.provider_uuid)
                domain_name = self.hosts.allocate_domain_name(claim.provider_uuid, spawning)
                result = client.spawn(
                    self._spawn_request(
                        record, domain_name, flavor, image, network, claim.provider_uuid
                    )
                )
            except HostOutcomeUnknown as exc:
                # The host may hold a domain, shares and files of this server now. The
                # row keeps the host and domain name, the claim and addresses stay: the
                # task's next attempt asks the host again and finishes or undoes the build.
                log.warning("spawning %s on %s: no answer (%s); the build is tried again",
                            record.uuid, claim.provider_name, exc)  # fmt: skip
                raise _SpawnUnanswered(str(exc)) from exc
            except Exception as exc:
                message = exc.message if isinstance(exc, ComputeError) else str(exc)
                log.warning("spawning %s on %s failed: %s", record.uuid, claim.provider_name, exc)
                self._finish(record.uuid, _BUILD_TASKS, "scheduling", host_uuid=None,
                             domain_name=None)  # fmt: skip
                raise SpawnFailed(message) from exc
            spawned.update(host=claim.provider_uuid, domain=result.domain_name,
                           shares=list(result.share_tags))  # fmt: skip

        started = time.perf_counter()
        try:
            claim = self.scheduler.schedule(
                spec, spawn, consumer_uuid=record.uuid, prefiltered=True
            )
        except _SpawnUnanswered:
            raise  # the task runs again later (see _resume_build)
        except NoValidHost as exc:
            self._finish(
                record.uuid, _BUILD_TASKS, status="ERROR", fault=_no_valid_host_fault(exc),
                fault_detail=f"no valid host: {exc}",
            )  # fmt: skip
            self._release_addresses(record.uuid)
            return
        except Exception as exc:
            log.exception("building server %s failed", record.uuid)
            self._release_addresses(record.uuid)
            self._finish(
                record.uuid, _BUILD_TASKS, status="ERROR", fault=f"build failed: {_ADMIN_SEES}",
                fault_detail=f"build failed: {exc}",
            )  # fmt: skip
            return
        # Written even when a delete took over meanwhile: it needs the host and domain.
        self._finish(
            record.uuid, _BUILD_TASKS, status="ACTIVE", fault=None, host_uuid=spawned["host"],
            domain_name=spawned["domain"], shares=spawned["shares"],
        )  # fmt: skip
        # As Nova's "Took N seconds to build": the scheduler's share shows apart, so a
        # fleet that grows past what the scheduler handles quickly is seen in the log.
        log.info(
            "server %s ACTIVE on %s: scheduled in %.1f ms, built in %.0f ms",
            record.uuid, claim.provider_name, claim.took_s * 1e3,
            (time.perf_counter() - started) * 1e3,
        )  # fmt: skip

    def _release_addresses(self, server_uuid: str) -> None:
        """A server that did not build keeps no address (a failure here is only logged:
        the delete that follows releases them too)."""
        try:
            self.addresses.release(server_uuid)
        except Exception:
            log.exception("releasing the addresses of server %s failed", server_uuid)

    # ------------------------------------------------------------------ restart

    def recover(self) -> list[str]:
        """Start running tasks, and queue one for each server that has work in flight but
        no task for it in the store (one written before tasks were durable, or by hand);
        one line per server queued.

        Interrupted tasks need nothing here: their lease runs out and any controller
        runs them again (a build finishes on the domain it defined, or starts over).
        """
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(_servers).where(
                    (_servers.c.status != "DELETED")
                    & ((_servers.c.status == "BUILD") | _servers.c.task.is_not(None))
                )
            ).all()
        notes = []
        for row in rows:
            record = _server(row)
            if record.task == "deleting":
                kind, what = "delete", "deleting"
            elif record.status == "BUILD":
                kind, what = "build", "build queued"
            elif record.task in ("stopping", "starting"):
                kind = what = "stop" if record.task == "stopping" else "start"
            elif record.task in self.task_resumers:
                kind, what = self.task_resumers[record.task], record.task
            else:
                continue
            if self.tasks.in_flight(record.uuid):
                continue
            with write_transaction(self.engine) as conn:
                attempts = BUILD_MAX_ATTEMPTS if kind == "build" else DEFAULT_MAX_ATTEMPTS
                queued = self.tasks.enqueue(conn, kind, record.uuid, max_attempts=attempts).created
            if queued:
                notes.append(f"server {record.uuid}: {what} again after a restart")
        for recoverer in self.recoverers:
            notes += recoverer()
        self.start_worker()
        return notes

    # --------------------------------------------------------------- power sync

    def sync_power_states(self) -> list[str]:
        """Make each settled server's status follow its guest, as Nova's power sync does.

        A guest that powered itself off becomes SHUTOFF, one started behind the
        controller's back ACTIVE, and one whose domain vanished ERROR. Servers with a
        task in progress are left to it. Returns one line per change. One controller of
        a fleet does it at a time (a duty); the others skip the round.
        """
        with single_duty(self.engine, "power-sync") as duty:
            if not duty:
                return []
            return self._sync_power_states()

    def _sync_power_states(self) -> list[str]:
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(_servers).where(
                    _servers.c.status.in_(("ACTIVE", "SHUTOFF")) & _servers.c.task.is_(None)
                )
            ).all()
        by_host: dict[str, list[ServerRecord]] = {}
        for row in rows:
            record = _server(row)
            if record.host_uuid is not None:
                by_host.setdefault(record.host_uuid, []).append(record)
        # A down host's servers keep their status (the API shows host_status down) and
        # are never rebuilt elsewhere; they are looked at again when the host is back.
        down = self.hosts.down_hosts()
        joined = set(self.hosts.joined_hosts())
        # Every server a joined host may run, read once per round (not once per host:
        # at a thousand hosts that was a thousand queries every interval).
        owned = self._owned_by_host(joined) if joined else {}
        # What each joined host's agent reported with its heartbeats, read once per
        # round: such a host is not asked (a call per host and round, a hundred a second
        # at a thousand hosts); a host whose agent never reported is asked, as before.
        reports = self._reported_states(joined) if joined else {}
        changes: list[str] = []
        for host_uuid in [*by_host, *(j for j in joined if j not in by_host)]:
            if host_uuid in down:
                continue
            changes += self._sync_host(
                host_uuid,
                by_host.get(host_uuid, []),
                owned.get(host_uuid) if host_uuid in joined else None,
                reports.get(host_uuid),
            )
        return changes

    def _reported_states(self, hosts: set[str]) -> dict[str, tuple[dict[str, str], datetime]]:
        """Each joined host's domain states as its agent last reported them, and the time
        they are known to hold from: an agent sends them when they change, so every later
        heartbeat confirms them; less :data:`REPORT_SLACK_S` (the agent read them before
        its heartbeat arrived)."""
        slack = timedelta(seconds=REPORT_SLACK_S)
        reports: dict[str, tuple[dict[str, str], datetime]] = {}
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(
                    _agents.c.host_uuid,
                    _agents.c.domain_states,
                    _agents.c.domain_states_at,
                    _agents.c.last_heartbeat_at,
                ).where(_agents.c.domain_states_at.is_not(None))
            ).all()
        for row in rows:
            if row.host_uuid not in hosts or row.domain_states is None:
                continue
            reported = as_utc(row.domain_states_at)
            beat = as_utc(row.last_heartbeat_at) if row.last_heartbeat_at else reported
            states = {str(k).lower(): str(v) for k, v in dict(row.domain_states).items()}
            reports[str(row.host_uuid)] = (states, max(reported, beat) - slack)
        return reports

    def reconcile_host(self, host_uuid: str) -> list[str]:
        """Look at one host's guests now, as the power sync does for every host: for a
        host whose agent was down and heartbeats again, at its first heartbeat rather
        than at the next sync round. A server whose domain the host lost becomes ERROR
        ("the host lost the server"); a domain no server owns is recorded and left alone.
        Returns one line per change."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(_servers).where(
                    (_servers.c.host_uuid == host_uuid)
                    & _servers.c.status.in_(("ACTIVE", "SHUTOFF"))
                    & _servers.c.task.is_(None)
                )
            ).all()
        owned = None
        if host_uuid in set(self.hosts.joined_hosts()):
            owned = self._owned_by_host({host_uuid}).get(host_uuid, set())
        return self._sync_host(host_uuid, [_server(row) for row in rows], owned)

    def _sync_host(
        self,
        host_uuid: str,
        records: list[ServerRecord],
        owned: set[str] | None,
        report: tuple[dict[str, str], datetime] | None = None,
    ) -> list[str]:
        """One host's round; ``owned`` (a joined host's servers, read before the host was
        asked) names which of its domains are ours, None for a host that is not an agent.
        With ``report`` (the states its agent reported, and from when they hold) the host
        is not asked, and a server changed since then waits for the next report."""
        if report is not None:
            states, as_of = report
            records = [r for r in records if r.updated_at <= as_of]
        else:
            try:
                states = self.hosts.client(host_uuid).domain_states()
            except Exception as exc:
                log.warning("power sync skipped host %s: %s", host_uuid, exc)
                return []
        if owned is not None:
            self._note_unknown(host_uuid, set(states) - owned)
        changes = []
        for record in records:
            change = self._sync_one(record, states.get(record.uuid.lower()))
            if change is not None:
                changes.append(change)
        return changes

    def _note_unknown(self, host_uuid: str, unknown: set[str]) -> None:
        """Report a joined host's domains no server owns; those the round's first read
        missed (built since) are looked up again first, so only strangers are named."""
        if unknown:
            with read_transaction(self.engine) as conn:
                unknown -= {
                    str(u).lower()
                    for u in conn.execute(
                        select(_servers.c.uuid).where(
                            (_servers.c.host_uuid == host_uuid)
                            & (_servers.c.status != "DELETED")
                            & _servers.c.uuid.in_(sorted(unknown))
                        )
                    ).scalars()
                }
        self.hosts.note_unknown_domains(host_uuid, unknown)

    def _owned_by_host(self, hosts: set[str]) -> dict[str, set[str]]:
        """The servers (lower-case uuids) the store places on each host of ``hosts``: a
        joined host's other domains are reported to admins and left alone (another
        tool's guests may share the host's libvirtd). Read before the hosts are asked,
        so a server built meanwhile is looked up again (:meth:`_note_unknown`)."""
        owned: dict[str, set[str]] = {}
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(_servers.c.host_uuid, _servers.c.uuid).where(
                    _servers.c.host_uuid.is_not(None) & (_servers.c.status != "DELETED")
                )
            ).all()
        for host_uuid, uuid in rows:
            if host_uuid in hosts:
                owned.setdefault(str(host_uuid), set()).add(str(uuid).lower())
        return owned

    def _sync_one(self, record: ServerRecord, state: str | None) -> str | None:
        if state is None:
            wanted, fault = "ERROR", "the host lost the server: its domain is gone from the host"
        elif state in ("running", "blocked", "paused"):
            wanted, fault = "ACTIVE", None
        elif state in ("shutoff", "crashed"):
            wanted, fault = "SHUTOFF", None
        else:
            return None
        if wanted == record.status:
            return None
        with self._locks.hold(record.uuid, blocking=False) as held:
            if not held:
                return None  # a task is running on it; it will settle the status
            # Only if nothing changed since the states were read (one conditional update).
            with write_transaction(self.engine) as conn:
                changed = conn.execute(
                    update(_servers)
                    .where(
                        (_servers.c.uuid == record.uuid)
                        & (_servers.c.status == record.status)
                        & _servers.c.task.is_(None)
                    )
                    .values(status=wanted, fault=fault, fault_detail=None, updated_at=_now())
                ).rowcount
        if changed != 1:
            return None
        return f"server {record.uuid}: {record.status} -> {wanted} (guest is {state or 'gone'})"

    # ---------------------------------------------------------------- lifecycle

    def stop(self, principal: Principal, server_id: str) -> ServerRecord:
        record = self.get(principal, server_id)
        if not self._claim_task(record.uuid, "stopping", statuses=("ACTIVE",), kind="stop"):
            raise self._conflict(principal, server_id, ("ACTIVE",), "stop")
        claimed = self.get(principal, server_id)  # as accepted, before the worker changes it
        self._notify()
        return claimed

    def start(self, principal: Principal, server_id: str) -> ServerRecord:
        record = self.get(principal, server_id)
        if not self._claim_task(record.uuid, "starting", statuses=("SHUTOFF",), kind="start"):
            raise self._conflict(principal, server_id, ("SHUTOFF",), "start")
        claimed = self.get(principal, server_id)  # as accepted, before the worker changes it
        self._notify()
        return claimed

    def _power_task(self, lease: Lease) -> None:
        """The ``stop`` and ``start`` tasks (both idempotent on the host)."""
        with self._locks.hold(lease.task.target):
            self._power(lease.task.target, lease.task.kind)

    def _power(self, server_uuid: str, action: str) -> None:
        task = "stopping" if action == "stop" else "starting"
        record = self._load(server_uuid)
        if record is None or record.task != task:
            return  # a delete took over: the guest goes anyway
        if record.host_uuid is None or record.domain_name is None:
            self._finish(server_uuid, (task,), fault=f"{action} failed: the server is on no host")
            return
        try:
            client = self.hosts.client(record.host_uuid)
            if action == "stop":
                client.stop(record.domain_name, self.settings.compute.stop_timeout_s)
                self._finish(server_uuid, (task,), status="SHUTOFF", fault=None)
            else:
                client.start(record.domain_name)
                self._finish(server_uuid, (task,), status="ACTIVE", fault=None)
        except Exception as exc:
            log.warning("%s of server %s failed: %s", action, server_uuid, exc)
            self._finish(
                server_uuid, (task,), fault=f"{action} failed on its host: {_ADMIN_SEES}",
                fault_detail=f"{action} failed: {exc}",
            )  # fmt: skip

    def delete(self, principal: Principal, server_id: str) -> ServerRecord:
        """Mark the server ``deleting`` (taking over any other task) and queue the delete.

        A second delete while one is under way changes nothing and answers the same.
        """
        record = self.get(principal, server_id)
        claimed = self._claim_task(record.uuid, "deleting", statuses=None, kind="delete",
                                   take_over=_servers.c.task != "deleting")  # fmt: skip
        if not claimed:
            current = self.get(principal, server_id)
            if current.task == "deleting" and current.status != "DELETED":
                return current
            raise Conflict(f"server {quoted(server_id)} is deleted already", server_id=server_id)
        accepted = self.get(principal, server_id)
        self._notify()
        return accepted

    def _delete_task(self, lease: Lease) -> None:
        """The ``delete`` task: each step is idempotent (the host removes what is left of
        the server by its uuid), so a repeat after an interruption finishes it."""
        with self._locks.hold(lease.task.target):
            self._delete(lease.task.target)

    def _delete(self, server_uuid: str) -> None:
        record = self._load(server_uuid)
        if record is None or record.status == "DELETED" or record.task != "deleting":
            return
        try:
            if record.host_uuid is not None and record.domain_name is not None:
                self.hosts.client(record.host_uuid).delete(record.uuid, record.domain_name)
        except Exception as exc:
            log.warning("deleting server %s failed: %s", server_uuid, exc)
            self._finish(
                server_uuid, ("deleting",), status="ERROR",
                fault=f"delete failed on its host: {_ADMIN_SEES}",
                fault_detail=f"delete failed: {exc}",
            )  # fmt: skip
            return
        self.scheduler.release(Claim(record.uuid, record.host_uuid or "", "", {}, 0))
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(_volumes)
                .where(_volumes.c.server_uuid == server_uuid)
                .values(status="available", server_uuid=None)
            )
            conn.execute(delete(_interfaces).where(_interfaces.c.server_uuid == server_uuid))
            conn.execute(
                delete(_server_addresses).where(_server_addresses.c.server_uuid == server_uuid)
            )
            conn.execute(
                update(_servers)
                .where(_servers.c.uuid == server_uuid)
                .values(status="DELETED", task=None, updated_at=_now())
            )

    def _claim_task(
        self,
        server_uuid: str,
        task: str,
        *,
        statuses: Sequence[str] | None,
        take_over: ColumnElement[bool] | None = None,
        kind: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> bool:
        """Give the server ``task`` in one conditional update; True when this call did,
        and then the task of ``kind`` (with ``payload``) is queued in the same commit.

        The server must not be DELETED, must have one of ``statuses`` (None: any) and
        no task in progress (or one that ``take_over`` matches). Two requests racing
        for the same server cannot both win, in this process or in another one.
        """
        free: ColumnElement[bool] = _servers.c.task.is_(None)
        if take_over is not None:
            free = free | take_over
        condition = (_servers.c.uuid == server_uuid) & (_servers.c.status != "DELETED") & free
        if statuses is not None:
            condition = condition & _servers.c.status.in_(statuses)
        with write_transaction(self.engine) as conn:
            claimed = conn.execute(
                update(_servers).where(condition).values(task=task, updated_at=_now())
            ).rowcount
            if claimed == 1 and kind is not None:
                self.tasks.enqueue(conn, kind, server_uuid, payload)
        return bool(claimed == 1)

    def _conflict(
        self, principal: Principal, server_id: str, statuses: Sequence[str], action: str
    ) -> Conflict:
        record = self.get(principal, server_id)
        now = record.status + (f" ({record.task})" if record.task else "")
        return Conflict(
            f"server {quoted(server_id)} is {now}; {action} needs status "
            f"{' or '.join(statuses)} with no task in progress",
            server_id=server_id, status=record.status, task=record.task,
        )  # fmt: skip

    # ------------------------------------------------------------------ workers

    def lock_for(self, server_uuid: str) -> KeyedLock:
        """The lock serialising every change of one server (tasks and device changes);
        it takes room only while someone holds or awaits it."""
        return self._locks.lock(server_uuid)

    @property
    def locks_in_use(self) -> int:
        """How many servers' locks exist right now (held or awaited)."""
        return len(self._locks)

    @property
    def pending_tasks(self) -> int:
        """How many server tasks are queued or running, by any controller."""
        counts = self.tasks.counts()
        return counts["queued"] + counts["running"]

    @property
    def worker_id(self) -> str:
        """The name this controller's claims carry in the task table."""
        self.start_worker()
        assert self._worker is not None
        return self._worker.worker_id

    def start_worker(self) -> None:
        """Run server tasks from the store on this controller (once; idempotent)."""
        with self._worker_guard:
            if self._worker is None:
                self._worker = TaskWorker(
                    self.tasks, self.task_handlers, concurrency=self.settings.compute.workers,
                    poll_s=self.settings.compute.task_poll_s, on_failed=self._task_failed,
                    name="wattvisor-compute",
                )  # fmt: skip
                self._worker.start()

    def _notify(self) -> None:
        """A task was queued here: run it now rather than at the next poll."""
        if self.runs_tasks:
            self.start_worker()
        if self._worker is not None:
            self._worker.notify()

    def _task_failed(self, task: TaskRecord) -> None:
        """A task failed for good (its attempts ran out, or its controller died on the
        last one): the server is ERROR with the task's last error as the admin's detail.
        A build that never recorded a host gives back its claim and addresses (one with
        a host keeps them for the delete that follows, which removes what is there)."""
        if task.kind in self.task_failure_handlers:
            self.task_failure_handlers[task.kind](task)
            return
        if task.kind == "build":
            record = self._load(task.target)
            if record is not None and record.status == "BUILD" and record.host_uuid is None:
                self.scheduler.release(Claim(record.uuid, "", "", {}, 0))
                self._release_addresses(record.uuid)
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(_servers)
                .where(
                    (_servers.c.uuid == task.target)
                    & (_servers.c.status != "DELETED")
                    & (_servers.c.task.is_not(None) | (_servers.c.status == "BUILD"))
                )
                .values(
                    status="ERROR", task=None, updated_at=_now(),
                    fault=f"{task.kind} failed after {task.attempts} attempt(s); {_ADMIN_SEES}",
                    fault_detail=f"{task.kind} failed: {task.last_error}",
                )
            )  # fmt: skip

    def queue(self, server_uuid: str, kind: str, payload: Mapping[str, Any] | None = None) -> None:
        """Queue a task of ``kind`` for the server (for services whose claim on the server
        is written already) and run it soon."""
        with write_transaction(self.engine) as conn:
            self.tasks.enqueue(conn, kind, server_uuid, payload)
        self._notify()

    def wait(self, server_uuid: str, timeout_s: float | None = None) -> None:
        """Wait until the server has no task queued or running (tests, CLI); TimeoutError
        after ``timeout_s``."""
        self.tasks.wait_for_target(server_uuid, 3600.0 if timeout_s is None else timeout_s)

    def has_pending_task(self, server_uuid: str) -> bool:
        """True while a task of the server is queued or running (the API's ``wait_s``)."""
        return bool(self.tasks.in_flight(server_uuid))

    def _finish(
        self, server_uuid: str, mine: Sequence[str], task_after: str | None = None, **values: Any
    ) -> None:
        """Write a task's outcome; the task becomes ``task_after`` only if it is still one
        of ``mine`` (a delete that took over meanwhile keeps its ``deleting``). A
        DELETED server is left alone; a new ``fault`` without a ``fault_detail`` says all
        there is."""
        if "fault" in values:
            values.setdefault("fault_detail", None)
        values.update(task=_task_after(mine, task_after), updated_at=_now())
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(_servers)
                .where((_servers.c.uuid == server_uuid) & (_servers.c.status != "DELETED"))
                .values(**values)
            )

    def shutdown(self, wait: bool = True) -> None:
        """Claim no more tasks; with ``wait``, let the running ones finish (up to 30 s).
        What is still running is left to its lease: another controller, or this one
        restarted, takes it over once the lease runs out."""
        with self._worker_guard:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(30.0 if wait else 0.0)

    # ------------------------------------------------------------- config drive

    def metadata_document(self, principal: Principal, server_id: str) -> dict[str, Any]:
        """The server's ``meta_data.json`` as its config drive carries it."""
        record = self.get_live(principal, server_id)
        try:
            meta = ConfigDriveMetadata(
                uuid=record.uuid, name=record.name, project_id=record.project,
                shares=tuple(ShareMeta(tag=t, purpose=POWER_METRICS_PURPOSE)
                             for t in record.shares),
            )  # fmt: skip
        except ConfigDriveError as exc:  # pragma: no cover - names were checked at create
            raise InvalidRequest(str(exc)) from exc
        return config_drive_metadata_document(meta)


class _SpawnUnanswered(Exception):
    """A spawn whose host gave no answer: it leaves the build task to be run again, so
    that scheduling does not release the claim or move on to another host meanwhile."""


class _VolumeTaken(Exception):
    """The boot volume was claimed by someone else between the check and the claim."""


def _task_after(mine: Sequence[str], after: str | None) -> Any:
    """``task`` becomes ``after`` when it is one of ``mine``, else stays (SQL CASE)."""
    return case((_servers.c.task.in_(mine), after), else_=_servers.c.task)


_ADMIN_SEES = "an admin sees the host's own message in the server's fault"


def _no_valid_host_fault(exc: NoValidHost) -> str:
    """NoValidHost in words for members: what removed the hosts (counts, traits, flavor),
    without the hosts' names or their spawn errors, which are the admin's fault detail."""
    text = f"no valid host: {exc.summary}"
    if exc.reasons:
        text += ": " + "; ".join(exc.reasons)
    if exc.spawn_failures:
        text += f" ({_ADMIN_SEES})"
    return text


def _flavor_record(data: Mapping[str, Any]) -> FlavorRecord:
    return FlavorRecord(**{**data, "extra_specs": dict(data.get("extra_specs") or {})})


def _image_record(data: Mapping[str, Any]) -> ImageRecord:
    return ImageRecord(**{**data, "properties": dict(data.get("properties") or {})})


def _spawn_flavor(flavor: FlavorRecord) -> SpawnFlavor:
    return SpawnFlavor(
        id=flavor.id, name=flavor.name, vcpus=flavor.vcpus, ram_mb=flavor.ram_mb,
        disk_gb=flavor.disk_gb, swap_mb=flavor.swap_mb, ephemeral_gb=flavor.ephemeral_gb,
        extra_specs=dict(flavor.extra_specs),
    )  # fmt: skip


def _spawn_image(image: ImageRecord) -> SpawnImage:
    return SpawnImage(
        id=image.id, name=image.name, properties=dict(image.properties),
        kernel_path=image.kernel_path, initrd_path=image.initrd_path, cmdline=image.cmdline,
        disk_path=image.disk_path, disk_format=image.disk_format,
        disk_sha256=image.disk_sha256, disk_size=image.disk_size,
        kernel_sha256=image.kernel_sha256, kernel_size=image.kernel_size,
        initrd_sha256=image.initrd_sha256, initrd_size=image.initrd_size,
    )  # fmt: skip


def _server(row: Any) -> ServerRecord:
    return ServerRecord(
        uuid=row.uuid, name=row.name, project=row.project, user=row.user_name,
        flavor_id=row.flavor_id, image_id=row.image_id, status=row.status, task=row.task,
        fault=row.fault, host_uuid=row.host_uuid, domain_name=row.domain_name,
        power_metrics=bool(row.power_metrics), shares=tuple(row.shares or ()),
        created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at),
        fault_detail=row.fault_detail, boot_volume_id=row.boot_volume_id,
        metadata=dict(row.server_metadata or {}),
    )  # fmt: skip
