"""Volumes and network interfaces of servers, attached and detached by ``ua-`` alias.

Volumes live in a libvirt ``dir`` pool on their host; one attaches as a virtio disk
whose serial is the volume id and whose alias is ``ua-<volume id>``. Interfaces get
a generated MAC and the alias ``ua-<port id>``, on QEMU user networking unless a
libvirt network or bridge is configured. Attach and detach are tasks of their server
in the store (:mod:`wattvisor.compute.tasks`), so they run in order with its builds,
stops and deletes on whichever controller, and one interrupted by a dying controller
is finished by another. Every step that touches both a host and the store has a
compensation: a volume's row is written first (``creating``, never shown) and
removed again when the host refuses; when the store refuses after the host did
its part, the host part is undone. So a refused or failed request leaves nothing
behind on the host or in the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Engine, Table, delete, insert, select, update

from wattvisor.auth import Principal, can_see_project, project_scope
from wattvisor.compute.errors import (
    ComputeError,
    Conflict,
    HostOperationFailed,
    InvalidRequest,
    NotFound,
)
from wattvisor.compute.hostclient import InterfaceAttachment, VolumeAttachment
from wattvisor.compute.hosts import HostRegistry
from wattvisor.compute.image_properties import vif_model_for
from wattvisor.compute.keyed_locks import KeyedLock
from wattvisor.compute.names import quoted, require_printable
from wattvisor.compute.records import InterfaceRecord, ServerRecord, VolumeRecord
from wattvisor.compute.servers import ServerService
from wattvisor.compute.tasks import Lease, LeaseLost, PermanentFailure, TaskRecord
from wattvisor.config.settings import Settings
from wattvisor.store import as_utc, read_transaction, write_transaction
from wattvisor.store.compute_tables import InterfaceRow, VolumeRow

log = logging.getLogger(__name__)

_volumes = cast(Table, VolumeRow.__table__)
_interfaces = cast(Table, InterfaceRow.__table__)
VOLUME_FORMATS = ("raw", "qcow2")
INTERFACE_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
MAX_VOLUME_GB = 16384
CREATING = "creating"  # a volume row whose host volume is being made: never shown
ATTACHING = "attaching"  # claimed by an attach task of server_uuid
DETACHING = "detaching"  # an in-use volume whose detach task is queued or running
ATTACH_VOLUME = "attach-volume"
ATTACH_INTERFACE = "attach-interface"
DETACH = "detach"
DEVICE_TASKS = (ATTACH_VOLUME, ATTACH_INTERFACE, DETACH)
DEVICE_TASK_ATTEMPTS = 3
"""Claims of one device task: a failure the handler sees fails it at once (its request
hears of it), so further claims happen only after a controller died running it."""


def _now() -> datetime:
    return datetime.now(UTC)


class DeviceService:
    """Volumes and interfaces, with the same visibility rules as servers."""

    def __init__(
        self, engine: Engine, servers: ServerService, hosts: HostRegistry, settings: Settings
    ) -> None:
        self.engine = engine
        self.servers = servers
        self.hosts = hosts
        self.settings = settings
        self._volume_locks = servers.volume_locks  # a boot volume is claimed under them too
        self._errors: OrderedDict[int, BaseException] = OrderedDict()
        """What this process's device tasks failed with, for the requests waiting here."""
        self._errors_guard = threading.Lock()
        servers.task_handlers[ATTACH_VOLUME] = self._attach_volume_task
        servers.task_handlers[ATTACH_INTERFACE] = self._attach_interface_task
        servers.task_handlers[DETACH] = self._detach_task
        for kind in DEVICE_TASKS:
            servers.task_failure_handlers[kind] = self._device_task_failed
        servers.recoverers.append(self._resume_device_changes)

    def create_volume(
        self,
        principal: Principal,
        name: str,
        size_gb: int,
        fmt: str = "qcow2",
        server_id: str | None = None,
    ) -> VolumeRecord:
        """A volume in the pool of ``server_id``'s host (so it can be attached to that
        server), else of the default host (the local one)."""
        if fmt not in VOLUME_FORMATS:
            raise InvalidRequest(
                f"volume format {fmt!r} is not accepted; accepted: {', '.join(VOLUME_FORMATS)}",
                format=fmt,
            )
        if not 1 <= size_gb <= MAX_VOLUME_GB:
            raise InvalidRequest(
                f"volume size {size_gb} GiB is not accepted; use 1 to {MAX_VOLUME_GB}",
                size_gb=size_gb,
            )
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise InvalidRequest(f"volume name {name!r} must be 1-255 characters", name=name)
        require_printable("volume name", name)
        if server_id is None:
            host = self.hosts.default_host()
        else:
            host = self._host_of(principal, server_id)
        volume_id = str(uuidlib.uuid4())
        file_name = f"{volume_id}.{fmt}"  # its name in the host's pool, until the path is known
        # The row first: a crash or a failure from here on is found and cleaned up.
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(_volumes).values(
                    id=volume_id, name=name, project=principal.project, size_gb=size_gb,
                    format=fmt, status=CREATING, host_uuid=host, path=file_name,
                    server_uuid=None, created_at=_now(),
                )
            )  # fmt: skip
        client = self.hosts.client(host)
        try:
            path = client.create_volume(volume_id, size_gb, fmt)
        except Exception as exc:
            self._forget_creating(volume_id)
            if isinstance(exc, ComputeError):
                raise
            raise HostOperationFailed(
                f"creating volume {name!r} failed: {exc}",
                public=f"creating volume {name!r} failed on its host",
            ) from exc
        with (
            _undo_on_failure(
                f"volume {volume_id}: removing it from its host",
                lambda: client.delete_volume(path),
                lambda: self._forget_creating(volume_id),
            ),
            write_transaction(self.engine) as conn,
        ):
            conn.execute(
                update(_volumes)
                .where(_volumes.c.id == volume_id)
                .values(status="available", path=path)
            )
        return self.volume(principal, volume_id)

    def lock_for_volume(self, volume_id: str) -> KeyedLock:
        """The lock serialising attach, detach and delete of one volume."""
        return self._volume_locks.lock(volume_id)

    def _forget_creating(self, volume_id: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                delete(_volumes).where(
                    (_volumes.c.id == volume_id) & (_volumes.c.status == CREATING)
                )
            )

    def recover(self) -> list[str]:
        """Remove what creates interrupted by a restart left (their host volume, their row);
        one line per volume."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(select(_volumes).where(_volumes.c.status == CREATING)).all()
        notes = []
        for row in rows:
            try:
                self.hosts.client(row.host_uuid).delete_volume(row.path)
                self._forget_creating(row.id)
            except Exception as exc:
                log.warning("cleaning up the interrupted create of volume %s failed: %s",
                            row.id, exc)  # fmt: skip
                notes.append(f"volume {row.id}: create interrupted by a restart; clean-up failed "
                             f"({exc}), tried again at the next start")  # fmt: skip
                continue
            notes.append(f"volume {row.id}: create interrupted by a restart, removed")
        return notes

    def _host_of(self, principal: Principal, server_id: str) -> str:
        server = self.servers.get(principal, server_id)
        if server.status == "DELETED" or server.host_uuid is None:
            raise Conflict(
                f"server {quoted(server_id)} is {server.status} and on no host; volumes go next to "
                "a server once it is ACTIVE or SHUTOFF",
                server_id=server_id, status=server.status,
            )  # fmt: skip
        return server.host_uuid

    def volumes(self, principal: Principal) -> list[VolumeRecord]:
        query = (
            select(_volumes)
            .where(_volumes.c.status != CREATING)
            .order_by(_volumes.c.created_at, _volumes.c.id)
        )
        scope = project_scope(principal)
        if scope is not None:
            query = query.where(_volumes.c.project == scope)
        with read_transaction(self.engine) as conn:
            return [_volume(row) for row in conn.execute(query)]

    def volume(
        self, principal: Principal, volume_id: str, project: str | None = None
    ) -> VolumeRecord:
        """A volume by id, or by name among the volumes ``principal`` may see (of
        ``project`` only, if given).

        A name several of them carry is refused with their ids, so that the caller
        can pick one; another project's volume is "not found" either way."""
        with read_transaction(self.engine) as conn:
            visible = _volumes.c.status != CREATING
            row = conn.execute(
                select(_volumes).where((_volumes.c.id == volume_id) & visible)
            ).first()
            if row is None or not can_see_project(principal, row.project):
                named = select(_volumes).where((_volumes.c.name == volume_id) & visible)
                scope = project_scope(principal) or project
                if scope is not None:
                    named = named.where(_volumes.c.project == scope)
                rows = conn.execute(named.order_by(_volumes.c.created_at, _volumes.c.id)).all()
                if len(rows) > 1:
                    ids = [r.id for r in rows]
                    raise Conflict(
                        f"{len(rows)} volumes are named {quoted(volume_id)}; give one of their "
                        "ids: "
                        + ", ".join(ids),
                        name=volume_id, ids=ids,
                    )  # fmt: skip
                row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"volume {quoted(volume_id)} does not exist", volume_id=volume_id)
        return _volume(row)

    def delete_volume(self, principal: Principal, volume_id: str) -> None:
        """Delete an available volume; holds the volume's lock, so an attach cannot slip in."""
        volume_id = self.volume(principal, volume_id).id  # it may have been given by name
        with self._volume_locks.hold(volume_id):
            volume = self.volume(principal, volume_id)
            if volume.status != "available":
                raise Conflict(
                    f"volume {quoted(volume_id)} is attached to server {volume.server_uuid}; "
                    "detach it first",
                    volume_id=volume_id, server_id=volume.server_uuid,
                )  # fmt: skip
            try:
                self.hosts.client(volume.host_uuid).delete_volume(volume.path)
            except ComputeError:
                raise
            except Exception as exc:
                raise HostOperationFailed(
                    f"deleting volume {quoted(volume_id)} failed: {exc}",
                    public=f"deleting volume {quoted(volume_id)} failed on its host",
                    volume_id=volume_id,
                ) from exc
            # Nothing to undo when this fails: the host volume is gone, and a row without
            # one is deleted again (deleting a missing host volume succeeds).
            with write_transaction(self.engine) as conn:
                conn.execute(delete(_volumes).where(_volumes.c.id == volume_id))

    # ---------------------------------------------------------------- attach/detach
    #
    # An attach or detach is a task of its server in the store, queued in the same
    # transaction that claims the volume (``attaching``/``detaching``), so it runs in
    # order with the server's other tasks, and a controller that dies half-way leaves
    # it to another one: every host step is idempotent by alias. The request waits up
    # to ``compute.device_wait_s`` for its task; a task that takes longer finishes in
    # the background (the API answers 202).

    def attach_volume(self, principal: Principal, server_id: str, volume_id: str) -> VolumeRecord:
        """Attach as a virtio disk with serial = volume id and alias ``ua-<volume id>``.

        Returns the volume ``in-use``, or still ``attaching`` when its task outlasted
        the wait; raises what the task failed with (nothing is attached then)."""
        server = self._usable_server(principal, server_id)
        volume = self.volume(principal, volume_id, project=server.project)  # or by name
        if volume.project != server.project:
            raise NotFound(f"volume {quoted(volume_id)} does not exist", volume_id=volume_id)
        if volume.status == ATTACHING and volume.server_uuid == server.uuid:
            pass  # the same attach again: it waits for the task already queued
        elif volume.status != "available":
            raise self._volume_in_use(volume)
        if volume.host_uuid != server.host_uuid:
            raise Conflict(
                f"volume {quoted(volume.id)} lives on another host than server "
                f"{quoted(server_id)}; "
                "volumes are local to their host",
                volume_id=volume.id, server_id=server_id,
            )  # fmt: skip
        with write_transaction(self.engine) as conn:
            claimed = conn.execute(
                update(_volumes)
                .where(
                    (_volumes.c.id == volume.id)
                    & (
                        ((_volumes.c.status == "available") & _volumes.c.server_uuid.is_(None))
                        | ((_volumes.c.status == ATTACHING)
                           & (_volumes.c.server_uuid == server.uuid))
                    )
                )
                .values(status=ATTACHING, server_uuid=server.uuid)
            ).rowcount  # fmt: skip
            if claimed == 1:
                task = self.servers.tasks.enqueue(
                    conn, ATTACH_VOLUME, server.uuid, {"volume_id": volume.id},
                    key=volume.id, max_attempts=DEVICE_TASK_ATTEMPTS,
                ).task  # fmt: skip
        if claimed != 1:
            raise self._volume_in_use(self.volume(principal, volume.id))
        self._run_and_wait(task.id)
        return self.volume(principal, volume.id)

    def _volume_in_use(self, volume: VolumeRecord) -> Conflict:
        return Conflict(
            f"volume {quoted(volume.id)} is in use by server {volume.server_uuid}"
            + ("" if volume.status == "in-use" else f" ({volume.status})"),
            volume_id=volume.id, server_id=volume.server_uuid,
        )  # fmt: skip

    def detach(self, principal: Principal, server_id: str, alias: str) -> bool:
        """Detach the volume or interface whose alias is ``alias`` (``ua-<id>``).

        True when it is detached; False when its task outlasted the wait (it finishes
        in the background). Detaching what is detached already on the host succeeds."""
        server = self._usable_server(principal, server_id)
        ident = alias[3:] if alias.startswith("ua-") else ""
        with read_transaction(self.engine) as conn:
            volume = conn.execute(
                select(_volumes.c.id, _volumes.c.status).where(
                    (_volumes.c.id == ident) & (_volumes.c.server_uuid == server.uuid)
                )
            ).first()
            port = conn.execute(
                select(_interfaces.c.id).where(
                    (_interfaces.c.id == ident) & (_interfaces.c.server_uuid == server.uuid)
                )
            ).first()
        if volume is None and port is None:
            aliases = [v.alias for v in self._server_volumes(server.uuid)] + [
                i.alias for i in self.interfaces(principal, server_id)
            ]
            raise NotFound(
                f"server {quoted(server_id)} has no volume or interface with alias "
                f"{quoted(alias)}; "
                f"aliases: {', '.join(aliases) or '(none)'}",
                alias=alias,
            )
        if volume is not None and ident == server.boot_volume_id:
            raise Conflict(
                f"volume {quoted(ident)} is the root disk of server {quoted(server_id)}; it "
                "is freed when the server is deleted",
                volume_id=ident, server_id=server.uuid,
            )  # fmt: skip
        if volume is not None and volume.status == ATTACHING:
            raise Conflict(
                f"volume {quoted(ident)} is still being attached to server {quoted(server_id)}; "
                "detach it once it is in-use",
                volume_id=ident, server_id=server.uuid,
            )  # fmt: skip
        with write_transaction(self.engine) as conn:
            if volume is not None:
                claimed = conn.execute(
                    update(_volumes)
                    .where(
                        (_volumes.c.id == ident) & (_volumes.c.server_uuid == server.uuid)
                        & _volumes.c.status.in_(("in-use", DETACHING))
                    )
                    .values(status=DETACHING)
                ).rowcount  # fmt: skip
                if claimed != 1:
                    raise Conflict(
                        f"volume {quoted(ident)} changed meanwhile; look at it and try again",
                        volume_id=ident,
                    )
            task = self.servers.tasks.enqueue(
                conn, DETACH, server.uuid, {"alias": alias, "volume": volume is not None},
                key=alias, max_attempts=DEVICE_TASK_ATTEMPTS,
            ).task  # fmt: skip
        return self._run_and_wait(task.id)

    def attach_interface(
        self, principal: Principal, server_id: str, model: str | None = None
    ) -> InterfaceRecord:
        """A new NIC with a generated MAC and alias ``ua-<port id>``. Without ``model``
        it is the one the server's image names in ``hw_vif_model`` (as Nova), else virtio.

        :meth:`interface_attached` says whether it is attached yet (its task may outlast
        the request's wait)."""
        if model is not None and model not in INTERFACE_MODELS:
            raise InvalidRequest(
                f"interface model {model!r} is not accepted; accepted: "
                f"{', '.join(INTERFACE_MODELS)}",
                model=model,
            )
        compute = self.settings.compute
        if compute.interface_network:
            kind, source = "network", compute.interface_network
        elif compute.interface_bridge:
            kind, source = "bridge", compute.interface_bridge
        else:
            kind, source = "user", None
        server = self._usable_server(principal, server_id)
        if model is None:
            model = self._image_vif_model(server.image_id)
        port_id = str(uuidlib.uuid4())
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        now = _now()
        payload = {"port_id": port_id, "mac": mac, "kind": kind, "source": source,
                   "model": model, "created_at": now.isoformat()}  # fmt: skip
        with write_transaction(self.engine) as conn:
            task = self.servers.tasks.enqueue(
                conn, ATTACH_INTERFACE, server.uuid, payload, key=port_id,
                max_attempts=DEVICE_TASK_ATTEMPTS,
            ).task  # fmt: skip
        self._run_and_wait(task.id)
        return InterfaceRecord(
            id=port_id, server_uuid=server.uuid, mac=mac, kind=cast(Any, kind), source=source,
            model=model, created_at=now,
        )  # fmt: skip

    def interface_attached(self, interface: InterfaceRecord) -> bool:
        """True once the interface's attach is recorded (False while its task runs on)."""
        with read_transaction(self.engine) as conn:
            row = conn.execute(
                select(_interfaces.c.id).where(_interfaces.c.id == interface.id)
            ).first()
        return row is not None

    def _run_and_wait(self, task_id: int) -> bool:
        """Have the task run, wait for it up to ``compute.device_wait_s``; True when it
        is done, False when it is still queued or running; raises what it failed with."""
        self.servers._notify()
        try:
            task = self.servers.tasks.wait(task_id, self.settings.compute.device_wait_s)
        except TimeoutError:
            return False
        if task.state == "done":
            return True
        with self._errors_guard:
            raised = self._errors.pop(task_id, None)
        if raised is not None:
            raise raised  # this process ran it: the very error, with its type
        raise _decoded_error(task.last_error)

    # ---------------------------------------------------------------- the tasks

    def _remember(self, task_id: int, exc: BaseException) -> None:
        with self._errors_guard:
            self._errors[task_id] = exc
            while len(self._errors) > 256:  # errors nobody here waited for
                self._errors.popitem(last=False)

    def _attach_volume_task(self, lease: Lease) -> None:
        server_uuid, volume_id = lease.task.target, str(lease.task.payload["volume_id"])
        with self.servers.lock_for(server_uuid):
            volume = self._volume_row(volume_id)
            if volume is None or volume.server_uuid != server_uuid or volume.status != ATTACHING:
                return  # settled already (an earlier attempt recorded it, or a delete freed it)
            try:
                server = self._task_server(server_uuid, "attached to")
                attachment = VolumeAttachment(volume.id, volume.path, volume.format)
                domain = server.domain_name or ""
                self._host_call(
                    server, lambda c: c.attach_volume(domain, attachment),
                    f"attaching volume {volume.id!r} to server {server.uuid!r}",
                )  # fmt: skip
            except Exception as exc:
                self._set_volume(volume_id, server_uuid, ATTACHING, "available", None)
                raise self._failure(lease, exc, undone=True) from exc
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(
                        update(_volumes)
                        .where((_volumes.c.id == volume_id) & (_volumes.c.status == ATTACHING))
                        .values(status="in-use")
                    )
                    self.servers.tasks.complete(lease, conn)
            except LeaseLost:
                raise
            except Exception as exc:
                log.warning("volume %s: detaching it from server %s again, because recording "
                            "the attach failed: %s", volume_id, server_uuid, exc)  # fmt: skip
                undone = self._undo_attach(server, volume.alias)
                if undone:
                    self._set_volume(volume_id, server_uuid, ATTACHING, "available", None)
                raise self._failure(lease, exc, undone=undone) from exc

    def _attach_interface_task(self, lease: Lease) -> None:
        server_uuid, data = lease.task.target, lease.task.payload
        port_id = str(data["port_id"])
        with self.servers.lock_for(server_uuid):
            if self._interface_row(port_id) is not None:
                return  # an earlier attempt recorded it
            try:
                server = self._task_server(server_uuid, "given interfaces")
                nic = InterfaceAttachment(
                    port_id, str(data["mac"]), str(data["kind"]), data.get("source"),
                    str(data["model"]),
                )  # fmt: skip
                domain = server.domain_name or ""
                self._host_call(
                    server, lambda c: c.attach_interface(domain, nic),
                    f"adding a {nic.model} interface to server {server.uuid!r}",
                )  # fmt: skip
            except Exception as exc:
                raise self._failure(lease, exc, undone=True) from exc
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(
                        insert(_interfaces).values(
                            id=port_id, server_uuid=server_uuid, mac=nic.mac, kind=nic.kind,
                            source=nic.source, model=nic.model,
                            created_at=datetime.fromisoformat(str(data["created_at"])),
                        )
                    )  # fmt: skip
                    self.servers.tasks.complete(lease, conn)
            except LeaseLost:
                raise
            except Exception as exc:
                log.warning(
                    "interface %s: detaching it from server %s again, because recording the "
                    "attach failed: %s", port_id, server_uuid, exc,
                )  # fmt: skip
                undone = self._undo_attach(server, f"ua-{port_id}")
                raise self._failure(lease, exc, undone=undone) from exc

    def _detach_task(self, lease: Lease) -> None:
        server_uuid, alias = lease.task.target, str(lease.task.payload["alias"])
        is_volume = bool(lease.task.payload.get("volume"))
        ident = alias[3:]
        with self.servers.lock_for(server_uuid):
            if is_volume:
                volume = self._volume_row(ident)
                if volume is None or volume.server_uuid != server_uuid:
                    return  # detached already (or freed by the server's delete)
            elif self._interface_row(ident) is None:
                return
            server = self.servers._load(server_uuid)
            if server is None or server.status == "DELETED" or server.domain_name is None:
                return  # its delete frees what it had
            domain = server.domain_name
            try:
                self._host_call(
                    server, lambda c: c.detach_by_alias(domain, alias),
                    f"detaching {quoted(alias)} from server {server.uuid!r}",
                )  # fmt: skip
            except Exception as exc:
                if is_volume:
                    self._set_volume(ident, server_uuid, DETACHING, "in-use", server_uuid)
                raise self._failure(lease, exc, undone=True) from exc
            with write_transaction(self.engine) as conn:
                if is_volume:
                    conn.execute(
                        update(_volumes)
                        .where((_volumes.c.id == ident) & (_volumes.c.server_uuid == server_uuid))
                        .values(status="available", server_uuid=None)
                    )
                else:
                    conn.execute(delete(_interfaces).where(_interfaces.c.id == ident))
                self.servers.tasks.complete(lease, conn)

    def _resume_device_changes(self) -> list[str]:
        """Queue the task again for a volume left ``attaching`` or ``detaching`` with none
        in flight (a controller died between failing its task for good and undoing it):
        both are idempotent, so the change is carried out after all. One note per volume."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(_volumes).where(_volumes.c.status.in_((ATTACHING, DETACHING)))
            ).all()
        notes = []
        for row in rows:
            if row.server_uuid is None:
                continue
            alias = f"ua-{row.id}"
            if row.status == ATTACHING:
                kind, key, payload = ATTACH_VOLUME, row.id, {"volume_id": row.id}
            else:
                kind, key, payload = DETACH, alias, {"alias": alias, "volume": True}
            with write_transaction(self.engine) as conn:
                queued = self.servers.tasks.enqueue(
                    conn, kind, row.server_uuid, payload, key=key,
                    max_attempts=DEVICE_TASK_ATTEMPTS,
                ).created  # fmt: skip
            if queued:
                notes.append(f"volume {row.id}: {row.status} server {row.server_uuid} again "
                             "after a restart")  # fmt: skip
        return notes

    def _device_task_failed(self, task: TaskRecord) -> None:
        """A device task failed for good. One whose handler undid its part says so in
        its error; one whose controller died on its last attempt is undone here: an
        attach is detached again (the host may have it), a detach leaves the volume
        in-use (detaching again succeeds whether or not the host still has it)."""
        if _decoded_undone(task.last_error):
            return
        server = self.servers._load(task.target)
        with self.servers.lock_for(task.target):
            if task.kind == ATTACH_VOLUME:
                volume_id = str(task.payload["volume_id"])
                undone = server is None or self._undo_attach(server, f"ua-{volume_id}")
                after = "available" if undone else "in-use"
                self._set_volume(volume_id, task.target, ATTACHING, after,
                                 None if undone else task.target)  # fmt: skip
            elif task.kind == ATTACH_INTERFACE:
                if server is not None:
                    self._undo_attach(server, f"ua-{task.payload['port_id']}")
            elif task.kind == DETACH and task.payload.get("volume"):
                ident = str(task.payload["alias"])[3:]
                self._set_volume(ident, task.target, DETACHING, "in-use", task.target)

    def _undo_attach(self, server: ServerRecord, alias: str) -> bool:
        """Detach ``alias`` again after a failed attach; True when the host no longer has it."""
        if server.domain_name is None:
            return True
        domain = server.domain_name
        try:
            self._host_call(server, lambda c: c.detach_by_alias(domain, alias),
                            f"detaching {quoted(alias)} from server {server.uuid!r}")  # fmt: skip
        except Exception as exc:
            log.error("detaching %s from server %s after a failed attach failed: %s",
                      alias, server.uuid, exc)  # fmt: skip
            return False
        return True

    def _failure(self, lease: Lease, exc: Exception, *, undone: bool) -> PermanentFailure:
        """The task fails for good with ``exc`` (the request waiting for it gets it): a
        device change is not retried behind its caller's back, except after its
        controller died (the lease runs out and the task is claimed again)."""
        self._remember(lease.task.id, exc)
        return PermanentFailure(_encoded_error(exc, undone=undone))

    def _task_server(self, server_uuid: str, what: str) -> ServerRecord:
        """The task's server if devices may still change on it, else a Conflict."""
        server = self.servers._load(server_uuid)
        if (
            server is None
            or server.status not in ("ACTIVE", "SHUTOFF")
            or server.task == "deleting"
            or server.domain_name is None
        ):
            state = "gone" if server is None else server.status + (
                f" ({server.task})" if server.task else ""
            )  # fmt: skip
            raise Conflict(
                f"server {quoted(server_uuid)} is {state}; it can no longer be {what}",
                server_id=server_uuid,
            )
        return server

    def _set_volume(
        self, volume_id: str, server_uuid: str, was: str, status: str, server_after: str | None
    ) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(_volumes)
                .where(
                    (_volumes.c.id == volume_id)
                    & (_volumes.c.server_uuid == server_uuid)
                    & (_volumes.c.status == was)
                )
                .values(status=status, server_uuid=server_after)
            )

    def _volume_row(self, volume_id: str) -> VolumeRecord | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(_volumes).where(_volumes.c.id == volume_id)).first()
        return None if row is None else _volume(row)

    def _interface_row(self, port_id: str) -> Any:
        with read_transaction(self.engine) as conn:
            return conn.execute(select(_interfaces).where(_interfaces.c.id == port_id)).first()

    def _server_volumes(self, server_uuid: str) -> list[VolumeRecord]:
        with read_transaction(self.engine) as conn:
            rows = conn.execute(select(_volumes).where(_volumes.c.server_uuid == server_uuid))
            return [_volume(row) for row in rows]

    def server_volumes(self, principal: Principal, server_id: str) -> list[VolumeRecord]:
        return self._server_volumes(self.servers.get_live(principal, server_id).uuid)

    # --------------------------------------------------------------- interfaces

    def _image_vif_model(self, image_id: str) -> str:
        try:
            image = self.servers.catalog.image(image_id)
        except NotFound:
            return vif_model_for({})  # the image is gone; its default
        return vif_model_for(image.properties)

    def interfaces(self, principal: Principal, server_id: str) -> list[InterfaceRecord]:
        server = self.servers.get_live(principal, server_id)
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(_interfaces)
                .where(_interfaces.c.server_uuid == server.uuid)
                .order_by(_interfaces.c.created_at)
            )
            return [_interface(row) for row in rows]

    def _usable_server(self, principal: Principal, server_id: str) -> ServerRecord:
        """The server, if devices may change on it: ACTIVE or SHUTOFF, on a host."""
        server = self.servers.get(principal, server_id)
        if server.status not in ("ACTIVE", "SHUTOFF") or server.domain_name is None:
            raise Conflict(
                f"server {quoted(server_id)} is {server.status}; devices change only on "
                "ACTIVE or SHUTOFF servers",
                server_id=server_id, status=server.status,
            )  # fmt: skip
        return server

    def _host_call(self, server: ServerRecord, call: Callable[[Any], None], what: str) -> None:
        """Run ``call`` on the server's host; ``what`` names the change for members."""
        try:
            call(self.hosts.client(server.host_uuid or ""))
        except HostOperationFailed as exc:
            raise HostOperationFailed(
                exc.message, public=f"{what} failed: {exc.public}", **exc.details
            ) from exc
        except ComputeError:
            raise
        except Exception as exc:
            raise HostOperationFailed(
                str(exc), public=f"{what} failed on the server's host", server_id=server.uuid
            ) from exc


@contextlib.contextmanager
def _undo_on_failure(what: str, *undo: Callable[[], None]) -> Iterator[None]:
    """Run each of ``undo`` (all of them, logging each failure) when the block raises, then
    let the error through: the compensation of a host step whose store step failed."""
    try:
        yield
    except BaseException as exc:
        log.warning("%s, because recording the change failed: %s", what, exc)
        for step in undo:
            try:
                step()
            except Exception as undo_exc:
                log.error("%s failed: %s", what, undo_exc)
        raise


def _volume(row: Any) -> VolumeRecord:
    return VolumeRecord(
        id=row.id, name=row.name, project=row.project, size_gb=row.size_gb, format=row.format,
        status=row.status, host_uuid=row.host_uuid, path=row.path,
        server_uuid=row.server_uuid, created_at=as_utc(row.created_at),
    )  # fmt: skip


def _interface(row: Any) -> InterfaceRecord:
    return InterfaceRecord(
        id=row.id, server_uuid=row.server_uuid, mac=row.mac, kind=row.kind, source=row.source,
        model=row.model, created_at=as_utc(row.created_at),
    )  # fmt: skip


def _encoded_error(exc: Exception, *, undone: bool) -> str:
    """A device task's error as the task row keeps it: enough for a request waiting in
    another controller to answer as if it had run the task itself."""
    if isinstance(exc, ComputeError):
        data = {"code": exc.code, "message": exc.message, "details": exc.details,
                "public": exc.public_message}  # fmt: skip
    else:
        data = {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}
    try:
        return json.dumps({**data, "undone": undone}, default=str)
    except (TypeError, ValueError):  # pragma: no cover - details are plain values
        return json.dumps({"code": data["code"], "message": str(data["message"]), "undone": undone})


def _decoded(text: str | None) -> dict[str, Any]:
    try:
        data = json.loads(text or "")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _decoded_undone(text: str | None) -> bool:
    return bool(_decoded(text).get("undone"))


def _decoded_error(text: str | None) -> ComputeError:
    """The error a device task failed with, from its row."""
    data = _decoded(text)
    message = str(data.get("message") or text or "the device change failed")
    raw = data.get("details")
    details: dict[str, Any] = raw if isinstance(raw, dict) else {}
    public = str(data.get("public") or "the device change failed on the server's host")
    kinds: dict[str, type[ComputeError]] = {
        "conflict": Conflict, "not_found": NotFound, "invalid_request": InvalidRequest,
    }  # fmt: skip
    kind = kinds.get(str(data.get("code")))
    if kind is not None:
        return kind(message, **details)
    return HostOperationFailed(message, public=public, **details)
