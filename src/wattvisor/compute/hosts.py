"""The hosts the controller drives: registry, placement registration, enable/disable.

Each host is a placement resource provider (its libvirt host UUID) plus a row
here holding its libvirt URI, whether it takes new servers, and the sequence
that numbers its domain names (``instance_name_template``). A disabled host
carries ``COMPUTE_STATUS_DISABLED``, which the scheduler's prefilter forbids, as
Nova does: servers already there keep running.

A host is added by running ``wattvisor agent`` on it (it joins through
:mod:`wattvisor.compute.host_trust`); the controller reaches it over HTTP through
the client ``client_factory`` opens for the agent's URL, and judges it alive by its
heartbeats (:meth:`HostRegistry.down_hosts`). Only ``wattvisor up``'s own host is
served in-process. The controller never opens libvirt on another machine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, delete, func, insert, select, update

from wattvisor.auth.tokens import utcnow
from wattvisor.compute.errors import Conflict, HostOperationFailed, NotFound
from wattvisor.compute.host_geolocation import HostGeolocation, location_of
from wattvisor.compute.hostclient import HostClient, HostFacts
from wattvisor.compute.names import quoted, require_printable
from wattvisor.compute.records import HostRecord
from wattvisor.config.settings import Settings
from wattvisor.geo import GeoDatabase
from wattvisor.host.driver import Inventory
from wattvisor.host.ip_addresses import host_ip_addresses
from wattvisor.placement import ConcurrentUpdate, Placement
from wattvisor.placement import NotFound as PlacementNotFound
from wattvisor.placement.entities import Inventory as PlacementInventory
from wattvisor.scheduler.prefilters import DISABLED_TRAIT
from wattvisor.store import as_utc, read_transaction, write_transaction
from wattvisor.store.compute_tables import HostRow, ServerRow, UnknownDomainRow
from wattvisor.store.trust_tables import HostAgentRow

log = logging.getLogger(__name__)

HostClientFactory = Callable[[str], HostClient]
"""Opens a client for the URL of a joined host's agent (``HttpHostClient``)."""

_hosts = cast(Table, HostRow.__table__)
_servers = cast(Table, ServerRow.__table__)
_agents = cast(Table, HostAgentRow.__table__)
_unknown = cast(Table, UnknownDomainRow.__table__)


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
        self.geolocation = HostGeolocation(engine, GeoDatabase(settings.geo.database))
        """Hosts' geolocation: looked up, or set by an admin."""
        self._clients: dict[str, HostClient] = {}
        self._added: set[str] = set()
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
        if local:
            # This machine's own addresses: no agent reports them for a host driven here.
            try:
                self.geolocation.refresh_local(facts.provider_uuid, host_ip_addresses())
            except Exception:
                log.exception("looking up the geolocation of host %s failed", host_name)
        with self._lock:
            old = self._clients.get(facts.provider_uuid)
            self._clients[facts.provider_uuid] = client
            self._added.add(facts.provider_uuid)
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

    # -- joined hosts ------------------------------------------------------------------

    def _agent_row(self, provider_uuid: str) -> Any:
        with read_transaction(self.engine) as conn:
            return conn.execute(select(_agents).where(_agents.c.host_uuid == provider_uuid)).first()

    def _open_agent(self, provider_uuid: str) -> HostClient | None:
        """The client of a host that joined through its agent, opened on first use (the
        join may have reached another controller of the cluster)."""
        if self.client_factory is None:
            return None
        row = self._agent_row(provider_uuid)
        if row is None:
            return None
        urls = [a for a in row.addresses if str(a).startswith(("http://", "https://"))]
        if not urls:
            log.warning(
                "host %s joined without an agent URL among %s", provider_uuid, row.addresses
            )
            return None
        opened = self.client_factory(str(urls[0]))
        with self._lock:
            client = self._clients.setdefault(provider_uuid, opened)
        if client is not opened:
            _close_quietly(opened)
        return client

    def joined_hosts(self) -> list[str]:
        """Hosts that joined through their agent."""
        with read_transaction(self.engine) as conn:
            return [str(u) for u in conn.execute(select(_agents.c.host_uuid)).scalars()]

    def down_hosts(self) -> dict[str, str]:
        """Joined hosts whose agent sent no heartbeat for ``agent.down_after_s``: why.

        Measured from the last heartbeat, or from the join before the first one."""
        limit = self.settings.agent.down_after_s
        now = utcnow()
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(_agents.c.host_uuid, _agents.c.joined_at, _agents.c.last_heartbeat_at)
            ).all()
        down = {}
        for row in rows:
            seen = as_utc(row.last_heartbeat_at or row.joined_at)
            silent = (now - seen).total_seconds()
            if silent > limit:
                down[str(row.host_uuid)] = (
                    f"down: no heartbeat from its agent for {silent:.0f} s "
                    f"(agent.down_after_s = {limit:g})"
                )
        return down

    def note_unknown_domains(self, provider_uuid: str, uuids: set[str]) -> None:
        """Record (and log once) the domains a host runs that the store does not know:
        they are reported to admins and left alone. The host's list becomes ``uuids``:
        a domain gone from the host, or owned by a server now, leaves it."""
        uuids = {u.lower() for u in uuids}
        with write_transaction(self.engine) as conn:
            before = set(
                conn.execute(
                    select(_unknown.c.domain_uuid).where(_unknown.c.host_uuid == provider_uuid)
                ).scalars()
            )
            gone = before - uuids
            if gone:
                conn.execute(
                    delete(_unknown).where(
                        (_unknown.c.host_uuid == provider_uuid)
                        & _unknown.c.domain_uuid.in_(sorted(gone))
                    )
                )
            new = sorted(uuids - before)
            if new:
                # Another controller reconciling the same host may insert them too.
                conn.execute(
                    _insert_new(conn, _unknown),
                    [{"host_uuid": provider_uuid, "domain_uuid": u, "first_seen_at": utcnow()}
                     for u in new],
                )  # fmt: skip
        for uuid in new:
            log.warning(
                "host %s runs domain %s, which no server of this cluster owns; left alone",
                provider_uuid, uuid,
            )  # fmt: skip

    def unknown_domains(self) -> dict[str, tuple[str, ...]]:
        """Each host's unknown domains (see :meth:`note_unknown_domains`)."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(_unknown.c.host_uuid, _unknown.c.domain_uuid).order_by(
                    _unknown.c.host_uuid, _unknown.c.domain_uuid
                )
            ).all()
        found: dict[str, tuple[str, ...]] = {}
        for host, domain in rows:
            found[str(host)] = (*found.get(str(host), ()), str(domain))
        return found

    # -- lookups -------------------------------------------------------------------------

    def clients(self) -> list[HostClient]:
        with self._lock:
            return list(self._clients.values())

    def driven_here(self, provider_uuid: str) -> bool:
        """Whether this controller drives the host itself (:meth:`add`), not through an
        agent: such a host is up while its client is (no heartbeat to look up)."""
        with self._lock:
            return provider_uuid in self._added

    def live_clients(self) -> list[HostClient]:
        """A client for every host that is not down (joined hosts' opened on first use)."""
        down = self.down_hosts()
        with read_transaction(self.engine) as conn:
            uuids = [str(u) for u in conn.execute(select(_hosts.c.provider_uuid)).scalars()]
        clients = []
        for uuid in uuids:
            if uuid in down:
                continue
            with self._lock:
                client = self._clients.get(uuid)
            if client is None:
                client = self._open_agent(uuid)
            if client is not None:
                clients.append(client)
        return clients

    def client(self, provider_uuid: str) -> HostClient:
        with self._lock:
            client = self._clients.get(provider_uuid)
        if client is None:
            client = self._open_agent(provider_uuid)
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
        down = self.down_hosts()
        unknown = self.unknown_domains()
        return [
            self._record(row, int(counts.get(row.provider_uuid, 0)), down, unknown) for row in rows
        ]

    def get(self, provider_uuid: str) -> HostRecord:
        for record in self.list_all():
            if record.provider_uuid == provider_uuid:
                return record
        raise NotFound(f"host {quoted(provider_uuid)} does not exist", host_id=provider_uuid)

    def _record(
        self,
        row: Any,
        servers: int,
        down: dict[str, str] | None = None,
        unknown_domains: dict[str, tuple[str, ...]] | None = None,
    ) -> HostRecord:
        uuid = str(row.provider_uuid)
        with self._lock:
            client = self._clients.get(uuid)
        unknown = (unknown_domains if unknown_domains is not None else self.unknown_domains()).get(
            uuid, ()
        )
        agent = self._agent_row(uuid)
        if agent is not None:
            # A joined host's liveness is its heartbeat; what meters it, what it reported.
            state = (down if down is not None else self.down_hosts()).get(uuid, "up")
            energy = str(agent.energy_source)
        else:
            state = client.state() if client is not None else "down: not connected"
            energy = client.energy_source() if client is not None else "none"
        try:
            traits = tuple(sorted(self.placement.get_provider_traits(uuid).traits))
            inventories = self.placement.get_inventories(uuid).inventories
            usage = dict(self.placement.get_usages(uuid).usages)
        except PlacementNotFound:
            traits, inventories, usage = (), {}, {}
            if agent is not None and state == "up":
                # Registered, but placement has not been told yet: nothing can land here.
                state = "joining: not in placement yet"
        location = location_of(row)
        return HostRecord(
            provider_uuid=uuid,
            name=row.name,
            libvirt_uri=row.libvirt_uri,
            enabled=bool(row.enabled),
            disabled_reason=row.disabled_reason,
            local=bool(row.local),
            state=state,
            traits=traits,
            inventory={rc: inv.total for rc, inv in inventories.items()},
            usage=usage,
            energy_source=energy,
            servers=servers,
            unknown_domains=unknown,
            geolocation=location.pairs,
            geolocation_source=location.source,
            geolocation_reason=location.reason,
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


def _insert_new(conn: Connection, table: Table) -> Any:
    """An INSERT that skips rows whose key exists already (both backends know how)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()
