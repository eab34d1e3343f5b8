"""The hosts the controller drives: registry, placement registration, enable/disable.

Each host is a placement resource provider (its libvirt host UUID) plus a row
here holding its libvirt URI, whether it takes new servers, and the sequence
that numbers its domain names (``instance_name_template``). A disabled host
carries ``COMPUTE_STATUS_DISABLED``, which the scheduler's prefilter forbids, as
Nova does: servers already there keep running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, func, insert, select, update

from wattvisor.compute.errors import Conflict, HostOperationFailed, InvalidRequest, NotFound
from wattvisor.compute.hostclient import HostClient, HostFacts
from wattvisor.compute.names import quoted, require_printable
from wattvisor.compute.records import HostRecord
from wattvisor.config.settings import Settings
from wattvisor.host.connection import libvirt_error_summary
from wattvisor.host.driver import Inventory
from wattvisor.host.libvirt_uris import HostURIError, check_host_uri
from wattvisor.placement import ConcurrentUpdate, Placement
from wattvisor.placement import NotFound as PlacementNotFound
from wattvisor.placement.entities import Inventory as PlacementInventory
from wattvisor.scheduler.prefilters import DISABLED_TRAIT
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import HostRow, ServerRow
from wattvisor.store.trust_tables import HostAgentRow

log = logging.getLogger(__name__)

HostClientFactory = Callable[[str], HostClient]
"""Opens a client for a libvirt URI (in-process now, an agent's address later)."""

_hosts = cast(Table, HostRow.__table__)
_servers = cast(Table, ServerRow.__table__)
_agents = cast(Table, HostAgentRow.__table__)


def _close_quietly(client: HostClient) -> None:
    """Close a host client; a failure is logged with the host's URI, never raised."""
    try:
        client.close()
    except Exception:
        log.warning("closing the client of %s failed", client.uri, exc_info=True)


def placement_inventories(
    settings: Settings, inventory: Inventory
) -> dict[str, PlacementInventory]:
    """The host's resources with the operator's reservations and overcommit ratios."""
    host = settings.host
    return {
        "VCPU": PlacementInventory(
            total=inventory.vcpu, reserved=min(host.reserved_host_cpus, inventory.vcpu),
            max_unit=inventory.vcpu, allocation_ratio=host.cpu_allocation_ratio,
        ),
        "MEMORY_MB": PlacementInventory(
            total=inventory.memory_mb,
            reserved=min(host.reserved_host_memory_mb, inventory.memory_mb),
            max_unit=inventory.memory_mb, allocation_ratio=host.ram_allocation_ratio,
        ),
        "DISK_GB": PlacementInventory(
            total=inventory.disk_gb, reserved=min(host.reserved_host_disk_gb, inventory.disk_gb),
            max_unit=inventory.disk_gb, allocation_ratio=host.disk_allocation_ratio,
        ),
    }  # fmt: skip


class HostRegistry:
    """Hosts by provider uuid, with their clients. Thread-safe."""

    def __init__(
        self,
        engine: Engine,
        placement: Placement,
        settings: Settings,
        client_factory: HostClientFactory | None = None,
    ) -> None:
        self.engine = engine
        self.placement = placement
        self.settings = settings
        self.client_factory = client_factory
        self._clients: dict[str, HostClient] = {}
        self._lock = threading.Lock()

    # -- registration --------------------------------------------------------------------

    def add(self, client: HostClient, *, name: str | None = None, local: bool = False) -> str:
        """Register (or re-register after a restart) the host behind ``client``.

        Placement gets its inventory and traits (plus COMPUTE_STATUS_DISABLED when it
        was disabled before); returns its provider uuid.
        """
        facts = client.facts()
        with read_transaction(self.engine) as conn:
            row = conn.execute(
                select(_hosts).where(_hosts.c.provider_uuid == facts.provider_uuid)
            ).first()
            if row is None:
                taken = conn.execute(
                    select(_hosts.c.provider_uuid).where(_hosts.c.name == (name or facts.hostname))
                ).first()
                if taken is not None:
                    raise Conflict(
                        f"host name {name or facts.hostname!r} is already used by host "
                        f"{taken.provider_uuid}; give the new host another name",
                        name=name or facts.hostname,
                    )
        host_name = row.name if row is not None else (name or facts.hostname)
        enabled = True if row is None else bool(row.enabled)
        self._register_provider(facts, host_name, enabled)
        with write_transaction(self.engine) as conn:
            if row is None:
                conn.execute(
                    insert(_hosts).values(
                        provider_uuid=facts.provider_uuid, name=host_name, libvirt_uri=facts.uri,
                        enabled=True, disabled_reason=None, next_index=1, local=local,
                    )
                )  # fmt: skip
            else:
                conn.execute(
                    update(_hosts)
                    .where(_hosts.c.provider_uuid == facts.provider_uuid)
                    .values(libvirt_uri=facts.uri, local=local)
                )
        with self._lock:
            old = self._clients.get(facts.provider_uuid)
            self._clients[facts.provider_uuid] = client
        if old is not None and old is not client:
            _close_quietly(old)
        return facts.provider_uuid

    def _register_provider(self, facts: HostFacts, name: str, enabled: bool) -> None:
        traits = set(facts.traits)
        if not enabled:
            traits.add(DISABLED_TRAIT)
        self.placement.ensure_provider(
            facts.provider_uuid,
            name,
            placement_inventories(self.settings, facts.inventory),
            frozenset(traits),
        )

    def register_uri(self, uri: str, name: str | None = None) -> HostRecord:
        """Connect to another libvirt host by URI and register it (admin).

        Only the URIs of :func:`check_host_uri` are opened. When the host cannot be
        reached, the answer gives libvirt's error code and domain; libvirt's message,
        which can quote host files, goes to the log only.
        """
        require_printable("libvirt URI", uri)
        require_printable("host name", name)
        if self.client_factory is None:
            raise InvalidRequest("this controller cannot open hosts by URI", uri=uri)
        try:
            check_host_uri(uri)
        except HostURIError as exc:
            raise InvalidRequest(str(exc), uri=uri) from exc
        if any(c.uri == uri for c in self.clients()):
            raise Conflict(f"a host with libvirt URI {uri!r} is registered already", uri=uri)
        client: HostClient | None = None
        try:
            client = self.client_factory(uri)
            facts_uuid = client.facts().provider_uuid
        except Exception as exc:
            log.warning("host %s could not be reached: %s", uri, exc, exc_info=exc)
            if client is not None:
                _close_quietly(client)
            raise HostOperationFailed(
                f"host {uri!r} could not be reached ({libvirt_error_summary(exc)}); "
                "libvirt's message is in the controller's log",
                uri=uri,
            ) from exc
        if facts_uuid in self._clients:
            client.close()
            raise Conflict(
                f"libvirt URI {uri!r} leads to host {facts_uuid}, which is registered already",
                uri=uri,
            )
        try:
            provider_uuid = self.add(client, name=name)
        except Exception:
            _close_quietly(client)
            raise
        return self.get(provider_uuid)

    def reconnect(self) -> list[str]:
        """Open clients for hosts registered by URI before a restart; returns problems."""
        problems = []
        with read_transaction(self.engine) as conn:
            # Hosts that joined through their agent are reached through it, never by URI.
            joined = select(_agents.c.host_uuid)
            rows = conn.execute(
                select(_hosts).where(
                    _hosts.c.local.is_(False), _hosts.c.provider_uuid.not_in(joined)
                )
            ).all()
        for row in rows:
            if row.provider_uuid in self._clients or self.client_factory is None:
                continue
            try:
                check_host_uri(row.libvirt_uri)
            except HostURIError as exc:
                problems.append(f"host {row.name} is not reconnected: {exc}")
                continue
            try:
                self.add(self.client_factory(row.libvirt_uri), name=row.name)
            except Exception as exc:
                log.warning("host %s (%s) is unreachable: %s", row.name, row.libvirt_uri, exc)
                problems.append(
                    f"host {row.name} ({row.libvirt_uri}) is unreachable "
                    f"({libvirt_error_summary(exc)}; libvirt's message is in the log)"
                )
        return problems

    # -- lookups -------------------------------------------------------------------------

    def clients(self) -> list[HostClient]:
        with self._lock:
            return list(self._clients.values())

    def client(self, provider_uuid: str) -> HostClient:
        with self._lock:
            client = self._clients.get(provider_uuid)
        if client is None:
            raise HostOperationFailed(
                f"host {provider_uuid} is not connected to this controller",
                public="the host is not connected to this controller",
                host_uuid=provider_uuid,
            )
        return client

    def default_host(self) -> str:
        """The host new volumes go to: the local one, else the first registered."""
        with read_transaction(self.engine) as conn:
            row = conn.execute(
                select(_hosts.c.provider_uuid).order_by(_hosts.c.local.desc(), _hosts.c.name)
            ).first()
        if row is None:
            raise Conflict("no host is registered yet")
        return str(row.provider_uuid)

    def names(self) -> dict[str, str]:
        with read_transaction(self.engine) as conn:
            return {r.provider_uuid: r.name for r in conn.execute(select(_hosts)).all()}

    def list_all(self) -> list[HostRecord]:
        with read_transaction(self.engine) as conn:
            rows = conn.execute(select(_hosts).order_by(_hosts.c.name)).all()
            counted = conn.execute(
                select(_servers.c.host_uuid, func.count())
                .where(_servers.c.status != "DELETED")
                .group_by(_servers.c.host_uuid)
            ).all()
        counts = {str(host): int(n) for host, n in counted}
        return [self._record(row, int(counts.get(row.provider_uuid, 0))) for row in rows]

    def get(self, provider_uuid: str) -> HostRecord:
        for record in self.list_all():
            if record.provider_uuid == provider_uuid:
                return record
        raise NotFound(f"host {quoted(provider_uuid)} does not exist", host_id=provider_uuid)

    def _record(self, row: Any, servers: int) -> HostRecord:
        uuid = str(row.provider_uuid)
        with self._lock:
            client = self._clients.get(uuid)
        try:
            traits = tuple(sorted(self.placement.get_provider_traits(uuid).traits))
            inventories = self.placement.get_inventories(uuid).inventories
            usage = dict(self.placement.get_usages(uuid).usages)
        except PlacementNotFound:
            traits, inventories, usage = (), {}, {}
        return HostRecord(
            provider_uuid=uuid,
            name=row.name,
            libvirt_uri=row.libvirt_uri,
            enabled=bool(row.enabled),
            disabled_reason=row.disabled_reason,
            local=bool(row.local),
            state=client.state() if client is not None else "down: not connected",
            traits=traits,
            inventory={rc: inv.total for rc, inv in inventories.items()},
            usage=usage,
            energy_source=client.energy_source() if client is not None else "none",
            servers=servers,
        )

    # -- enable / disable ----------------------------------------------------------------

    def set_enabled(
        self, provider_uuid: str, enabled: bool, reason: str | None = None
    ) -> HostRecord:
        """Let a host take new servers again, or stop it from taking any."""
        require_printable("disabled reason", reason)
        self.get(provider_uuid)
        for _attempt in range(10):
            current = self.placement.get_provider_traits(provider_uuid)
            wanted = set(current.traits)
            if enabled:
                wanted.discard(DISABLED_TRAIT)
            else:
                wanted.add(DISABLED_TRAIT)
            try:
                self.placement.set_provider_traits(provider_uuid, current.generation, wanted)
                break
            except ConcurrentUpdate:
                continue
        else:
            raise Conflict(f"host {provider_uuid} changed too often to update; try again")
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(_hosts)
                .where(_hosts.c.provider_uuid == provider_uuid)
                .values(enabled=enabled, disabled_reason=None if enabled else reason)
            )
        return self.get(provider_uuid)

    # -- domain names --------------------------------------------------------------------

    def allocate_domain_name(
        self,
        provider_uuid: str,
        record: Callable[[Connection, str], None] | None = None,
    ) -> str:
        """The next free domain name on the host from ``instance_name_template``.

        ``record(conn, name)`` runs in the transaction that takes the name, so that the
        caller can write down its use of the name in the same commit (one write per
        build instead of two). When the name turns out to be taken on the host, the
        next one is taken and recorded again.
        """
        client = self.client(provider_uuid)
        template = self.settings.host.instance_name_template
        for _attempt in range(1000):
            with write_transaction(self.engine) as conn:
                index = (
                    conn.execute(
                        update(_hosts)
                        .where(_hosts.c.provider_uuid == provider_uuid)
                        .values(next_index=_hosts.c.next_index + 1)
                        .returning(_hosts.c.next_index)
                    ).scalar_one()
                    - 1
                )
                name = str(template % index)
                if record is not None:
                    record(conn, name)
            if not client.domain_exists(name):
                return name
            log.info("domain name %s is taken on host %s; trying the next", name, provider_uuid)
        raise HostOperationFailed(
            f"no free domain name on host {provider_uuid}",
            public="the host has no free domain name left",
        )

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            _close_quietly(client)
