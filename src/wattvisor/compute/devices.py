"""Volumes and network interfaces of servers, attached and detached by ``ua-`` alias.

Volumes live in a libvirt ``dir`` pool on their host; one attaches as a virtio disk
whose serial is the volume id and whose alias is ``ua-<volume id>``. Interfaces get
a generated MAC and the alias ``ua-<port id>``, on QEMU user networking unless a
libvirt network or bridge is configured. Each change holds the server's lock (and
the volume's), and every step that touches both a host and the store has a
compensation: a volume's row is written first (``creating``, never shown) and
removed again when the host refuses; when the store refuses after the host did
its part, the host part is undone. So a refused or failed request leaves nothing
behind on the host or in the store.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid as uuidlib
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
from wattvisor.config.settings import Settings
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import InterfaceRow, VolumeRow

log = logging.getLogger(__name__)

_volumes = cast(Table, VolumeRow.__table__)
_interfaces = cast(Table, InterfaceRow.__table__)
VOLUME_FORMATS = ("raw", "qcow2")
INTERFACE_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
MAX_VOLUME_GB = 16384
CREATING = "creating"  # a volume row whose host volume is being made: never shown


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


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

    def attach_volume(self, principal: Principal, server_id: str, volume_id: str) -> VolumeRecord:
        """Attach as a virtio disk with serial = volume id and alias ``ua-<volume id>``."""
        with self._device_change(principal, server_id) as server:
            volume_id = self.volume(principal, volume_id, project=server.project).id  # or name
            with self._volume_locks.hold(volume_id):
                return self._attach_volume(principal, server, server_id, volume_id)

    def _attach_volume(
        self, principal: Principal, server: ServerRecord, server_id: str, volume_id: str
    ) -> VolumeRecord:
        """Attach under the server's and the volume's lock; undone when not recorded."""
        volume = self.volume(principal, volume_id, project=server.project)
        if volume.project != server.project:
            raise NotFound(f"volume {quoted(volume_id)} does not exist", volume_id=volume_id)
        if volume.status != "available":
            raise Conflict(
                f"volume {quoted(volume_id)} is in use by server {volume.server_uuid}",
                volume_id=volume_id, server_id=volume.server_uuid,
            )  # fmt: skip
        if volume.host_uuid != server.host_uuid:
            raise Conflict(
                f"volume {quoted(volume_id)} lives on another host than server "
                f"{quoted(server_id)}; "
                "volumes are local to their host",
                volume_id=volume_id, server_id=server_id,
            )  # fmt: skip
        domain = server.domain_name or ""
        self._host_call(
            server,
            lambda c: c.attach_volume(
                domain, VolumeAttachment(volume.id, volume.path, volume.format)
            ),
            f"attaching volume {volume.id!r} to server {server.uuid!r}",
        )
        with (
            _undo_on_failure(
                f"volume {volume_id}: detaching it from server {server.uuid} again",
                lambda: self._host_call(
                    server,
                    lambda c: c.detach_by_alias(domain, volume.alias),
                    f"detaching volume {volume.id!r} from server {server.uuid!r}",
                ),
            ),
            write_transaction(self.engine) as conn,
        ):
            conn.execute(
                update(_volumes)
                .where(_volumes.c.id == volume_id)
                .values(status="in-use", server_uuid=server.uuid)
            )
        return self.volume(principal, volume_id)

    def detach(self, principal: Principal, server_id: str, alias: str) -> None:
        """Detach the volume or interface whose alias is ``alias`` (``ua-<id>``)."""
        with self._device_change(principal, server_id) as server:
            ident = alias[3:] if alias.startswith("ua-") else ""
            with read_transaction(self.engine) as conn:
                volume = conn.execute(
                    select(_volumes.c.id).where(
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
            held: contextlib.AbstractContextManager[object] = (
                self._volume_locks.hold(ident) if volume is not None else contextlib.nullcontext()
            )
            with held:
                self._detach_and_record(server, alias, ident, is_volume=volume is not None)

    def _detach_and_record(
        self, server: ServerRecord, alias: str, ident: str, *, is_volume: bool
    ) -> None:
        """Detach from the host, then record it; when the store refuses, attach again."""
        domain = server.domain_name or ""
        if is_volume:
            [volume] = [v for v in self._server_volumes(server.uuid) if v.id == ident]
            attachment = VolumeAttachment(volume.id, volume.path, volume.format)

            def reattach() -> None:
                self._host_call(
                    server,
                    lambda c: c.attach_volume(domain, attachment),
                    f"attaching {quoted(alias)} to server {server.uuid!r} again",
                )
        else:
            with read_transaction(self.engine) as conn:
                row = conn.execute(select(_interfaces).where(_interfaces.c.id == ident)).one()
            nic = InterfaceAttachment(ident, row.mac, row.kind, row.source, row.model)

            def reattach() -> None:
                self._host_call(
                    server,
                    lambda c: c.attach_interface(domain, nic),
                    f"attaching {quoted(alias)} to server {server.uuid!r} again",
                )

        self._host_call(
            server,
            lambda c: c.detach_by_alias(domain, alias),
            f"detaching {quoted(alias)} from server {server.uuid!r}",
        )
        with (
            _undo_on_failure(f"{alias}: attaching it to server {server.uuid} again", reattach),
            write_transaction(self.engine) as conn,
        ):
            if is_volume:
                conn.execute(
                    update(_volumes)
                    .where(_volumes.c.id == ident)
                    .values(status="available", server_uuid=None)
                )
            else:
                conn.execute(delete(_interfaces).where(_interfaces.c.id == ident))

    def _server_volumes(self, server_uuid: str) -> list[VolumeRecord]:
        with read_transaction(self.engine) as conn:
            rows = conn.execute(select(_volumes).where(_volumes.c.server_uuid == server_uuid))
            return [_volume(row) for row in rows]

    def server_volumes(self, principal: Principal, server_id: str) -> list[VolumeRecord]:
        return self._server_volumes(self.servers.get_live(principal, server_id).uuid)

    # --------------------------------------------------------------- interfaces

    def attach_interface(
        self, principal: Principal, server_id: str, model: str | None = None
    ) -> InterfaceRecord:
        """A new NIC with a generated MAC and alias ``ua-<port id>``. Without ``model``
        it is the one the server's image names in ``hw_vif_model`` (as Nova), else virtio."""
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
        with self._device_change(principal, server_id) as server:
            if model is None:
                model = self._image_vif_model(server.image_id)
            port_id = str(uuidlib.uuid4())
            mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
            domain = server.domain_name or ""
            self._host_call(
                server,
                lambda c: c.attach_interface(
                    domain, InterfaceAttachment(port_id, mac, kind, source, model)
                ),
                f"adding a {model} interface to server {server.uuid!r}",
            )
            with (
                _undo_on_failure(
                    f"interface {port_id}: detaching it from server {server.uuid} again",
                    lambda: self._host_call(
                        server,
                        lambda c: c.detach_by_alias(domain, f"ua-{port_id}"),
                        f"removing interface {port_id!r} from server {server.uuid!r}",
                    ),
                ),
                write_transaction(self.engine) as conn,
            ):
                conn.execute(
                    insert(_interfaces).values(
                        id=port_id, server_uuid=server.uuid, mac=mac, kind=kind, source=source,
                        model=model, created_at=_now(),
                    )
                )  # fmt: skip
        return next(i for i in self.interfaces(principal, server_id) if i.id == port_id)

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

    @contextlib.contextmanager
    def _device_change(self, principal: Principal, server_id: str) -> Iterator[ServerRecord]:
        """Hold the server's lock across a device change; the server must be on a host."""
        server = self.servers.get(principal, server_id)
        with self.servers.lock_for(server.uuid):
            server = self.servers.get(principal, server_id)
            if server.status not in ("ACTIVE", "SHUTOFF") or server.domain_name is None:
                raise Conflict(
                    f"server {quoted(server_id)} is {server.status}; devices change only on "
                    "ACTIVE or SHUTOFF servers",
                    server_id=server_id, status=server.status,
                )  # fmt: skip
            yield server

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
        server_uuid=row.server_uuid, created_at=_utc(row.created_at),
    )  # fmt: skip


def _interface(row: Any) -> InterfaceRecord:
    return InterfaceRecord(
        id=row.id, server_uuid=row.server_uuid, mac=row.mac, kind=row.kind, source=row.source,
        model=row.model, created_at=_utc(row.created_at),
    )  # fmt: skip
