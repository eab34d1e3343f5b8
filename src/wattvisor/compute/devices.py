"""Volumes and network interfaces of servers, attached and detached by ``ua-`` alias.

Volumes live in a libvirt ``dir`` pool on their host; one attaches as a virtio disk
whose serial is the volume id and whose alias is ``ua-<volume id>``. Interfaces get
a generated MAC and the alias ``ua-<port id>``, on QEMU user networking unless a
libvirt network or bridge is configured. Each change holds the server's lock, and
the store is written only after the host did the work, so a refused request
changes nothing.
"""

from __future__ import annotations

import contextlib
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
from wattvisor.compute.names import require_printable
from wattvisor.compute.records import InterfaceRecord, ServerRecord, VolumeRecord
from wattvisor.compute.servers import ServerService
from wattvisor.config.settings import Settings
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import InterfaceRow, VolumeRow

_volumes = cast(Table, VolumeRow.__table__)
_interfaces = cast(Table, InterfaceRow.__table__)
VOLUME_FORMATS = ("raw", "qcow2")
INTERFACE_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
MAX_VOLUME_GB = 16384


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
        try:
            path = self.hosts.client(host).create_volume(volume_id, size_gb, fmt)
        except ComputeError:
            raise
        except Exception as exc:
            raise HostOperationFailed(
                f"creating volume {name!r} failed: {exc}",
                public=f"creating volume {name!r} failed on its host",
            ) from exc
        now = _now()
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(_volumes).values(
                    id=volume_id, name=name, project=principal.project, size_gb=size_gb,
                    format=fmt, status="available", host_uuid=host, path=path,
                    server_uuid=None, created_at=now,
                )
            )  # fmt: skip
        return self.volume(principal, volume_id)

    def _host_of(self, principal: Principal, server_id: str) -> str:
        server = self.servers.get(principal, server_id)
        if server.status == "DELETED" or server.host_uuid is None:
            raise Conflict(
                f"server {server_id!r} is {server.status} and on no host; volumes go next to "
                "a server once it is ACTIVE or SHUTOFF",
                server_id=server_id, status=server.status,
            )  # fmt: skip
        return server.host_uuid

    def volumes(self, principal: Principal) -> list[VolumeRecord]:
        query = select(_volumes).order_by(_volumes.c.created_at, _volumes.c.id)
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
            row = conn.execute(select(_volumes).where(_volumes.c.id == volume_id)).first()
            if row is None or not can_see_project(principal, row.project):
                named = select(_volumes).where(_volumes.c.name == volume_id)
                scope = project_scope(principal) or project
                if scope is not None:
                    named = named.where(_volumes.c.project == scope)
                rows = conn.execute(named.order_by(_volumes.c.created_at, _volumes.c.id)).all()
                if len(rows) > 1:
                    ids = [r.id for r in rows]
                    raise Conflict(
                        f"{len(rows)} volumes are named {volume_id!r}; give one of their ids: "
                        + ", ".join(ids),
                        name=volume_id, ids=ids,
                    )  # fmt: skip
                row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"volume {volume_id!r} does not exist", volume_id=volume_id)
        return _volume(row)

    def delete_volume(self, principal: Principal, volume_id: str) -> None:
        volume = self.volume(principal, volume_id)
        volume_id = volume.id  # it may have been given by name
        if volume.status != "available":
            raise Conflict(
                f"volume {volume_id!r} is attached to server {volume.server_uuid}; detach it first",
                volume_id=volume_id, server_id=volume.server_uuid,
            )  # fmt: skip
        try:
            self.hosts.client(volume.host_uuid).delete_volume(volume.path)
        except ComputeError:
            raise
        except Exception as exc:
            raise HostOperationFailed(
                f"deleting volume {volume_id!r} failed: {exc}",
                public=f"deleting volume {volume_id!r} failed on its host",
                volume_id=volume_id,
            ) from exc
        with write_transaction(self.engine) as conn:
            conn.execute(delete(_volumes).where(_volumes.c.id == volume_id))

    def attach_volume(self, principal: Principal, server_id: str, volume_id: str) -> VolumeRecord:
        """Attach as a virtio disk with serial = volume id and alias ``ua-<volume id>``."""
        with self._device_change(principal, server_id) as server:
            volume = self.volume(principal, volume_id, project=server.project)
            volume_id = volume.id  # it may have been given by name
            if volume.project != server.project:
                raise NotFound(f"volume {volume_id!r} does not exist", volume_id=volume_id)
            if volume.status != "available":
                raise Conflict(
                    f"volume {volume_id!r} is in use by server {volume.server_uuid}",
                    volume_id=volume_id, server_id=volume.server_uuid,
                )  # fmt: skip
            if volume.host_uuid != server.host_uuid:
                raise Conflict(
                    f"volume {volume_id!r} lives on another host than server {server_id!r}; "
                    "volumes are local to their host",
                    volume_id=volume_id, server_id=server_id,
                )  # fmt: skip
            self._host_call(
                server,
                lambda c: c.attach_volume(
                    server.domain_name or "",
                    VolumeAttachment(volume.id, volume.path, volume.format),
                ),
                f"attaching volume {volume.id!r} to server {server.uuid!r}",
            )
            with write_transaction(self.engine) as conn:
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
                    f"server {server_id!r} has no volume or interface with alias {alias!r}; "
                    f"aliases: {', '.join(aliases) or '(none)'}",
                    alias=alias,
                )
            self._host_call(
                server,
                lambda c: c.detach_by_alias(server.domain_name or "", alias),
                f"detaching {alias!r} from server {server.uuid!r}",
            )
            with write_transaction(self.engine) as conn:
                if volume is not None:
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
        self, principal: Principal, server_id: str, model: str = "virtio"
    ) -> InterfaceRecord:
        """A new NIC with a generated MAC and alias ``ua-<port id>``."""
        if model not in INTERFACE_MODELS:
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
            port_id = str(uuidlib.uuid4())
            mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
            self._host_call(
                server,
                lambda c: c.attach_interface(
                    server.domain_name or "", InterfaceAttachment(port_id, mac, kind, source, model)
                ),
                f"adding a {model} interface to server {server.uuid!r}",
            )
            with write_transaction(self.engine) as conn:
                conn.execute(
                    insert(_interfaces).values(
                        id=port_id, server_uuid=server.uuid, mac=mac, kind=kind, source=source,
                        model=model, created_at=_now(),
                    )
                )  # fmt: skip
        return next(i for i in self.interfaces(principal, server_id) if i.id == port_id)

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
                    f"server {server_id!r} is {server.status}; devices change only on "
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
