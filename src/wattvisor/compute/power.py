"""Power views from the energy sampler's latest snapshot on each host.

A server's power comes from its host's sampler; a project's is the sum over every
host; a host's is its whole meter (admins only). Reading never triggers a sample.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select

from wattvisor.auth import Principal, can_see_project, project_scope
from wattvisor.compute.errors import HostOperationFailed, NotFound
from wattvisor.compute.hosts import HostRegistry
from wattvisor.compute.names import quoted
from wattvisor.compute.records import PowerView
from wattvisor.compute.servers import ServerService
from wattvisor.energy.snapshot import EnergySnapshot
from wattvisor.energy.sources import is_meter
from wattvisor.host.driver import HostError
from wattvisor.store import read_transaction
from wattvisor.store.compute_tables import ServerRow

log = logging.getLogger(__name__)

_servers = cast(Table, ServerRow.__table__)


@dataclass(frozen=True, slots=True)
class ServerPowerView:
    """One row of "servers by watts": a server's latest figures, without history."""

    server_uuid: str
    name: str
    project: str
    status: str
    watts: float
    joules: float
    source: str
    sampled: bool
    taken_at: float | None

    @property
    def measured(self) -> bool:
        """True only for a meter's figure: an estimate is not a measurement."""
        return self.sampled and is_meter(self.source)


class PowerService:
    """Watts, joules, their source and recent history for servers, projects and hosts."""

    def __init__(self, servers: ServerService, hosts: HostRegistry) -> None:
        self.servers = servers
        self.hosts = hosts

    def server_power(self, principal: Principal, server_id: str) -> PowerView:
        server = self.servers.get_live(principal, server_id)
        if server.host_uuid is None:
            return PowerView(server.uuid, 0.0, 0.0, "none", False, None)
        client = self.hosts.client(server.host_uuid)
        snapshot = client.energy_snapshot()
        vm = snapshot.vms.get(server.uuid.lower()) if snapshot is not None else None
        if snapshot is None or vm is None:
            return PowerView(server.uuid, 0.0, 0.0, client.energy_source(), False, None)
        return PowerView(
            subject=server.uuid, watts=vm.power_watts, joules=vm.energy_joules_total,
            source=snapshot.source, sampled=True, taken_at=snapshot.taken_at,
            history=tuple(client.vm_history(server.uuid)), servers=1,
        )  # fmt: skip

    def servers_power(
        self, principal: Principal, project: str | None = None
    ) -> list[ServerPowerView]:
        """Every server ``principal`` may see (of ``project`` if given), highest watts first.

        One store query for the servers and one snapshot per host, however many
        servers there are: ``power top`` asks for this every refresh. A host that is
        not connected gives its servers ``source="none"`` instead of failing the list.
        """
        if project is not None and not can_see_project(principal, project):
            raise NotFound(f"project {quoted(project)} does not exist", project=project)
        wanted = project if project is not None else project_scope(principal)
        query = select(
            _servers.c.uuid, _servers.c.name, _servers.c.project, _servers.c.status,
            _servers.c.host_uuid,
        ).where(_servers.c.status != "DELETED")  # fmt: skip
        if wanted is not None:
            query = query.where(_servers.c.project == wanted)
        with read_transaction(self.servers.engine) as conn:
            rows = conn.execute(query).all()
        meters: dict[str, tuple[EnergySnapshot | None, str]] = {}
        down: dict[str, str] | None = None  # looked up once, if a host is behind an agent
        views = []
        for row in rows:
            snapshot, source = None, "none"
            if row.host_uuid is not None:
                if row.host_uuid not in meters:
                    if down is None and not self.hosts.driven_here(row.host_uuid):
                        down = self.hosts.down_hosts()
                    meters[row.host_uuid] = self._meter(row.host_uuid, down or ())
                snapshot, source = meters[row.host_uuid]
            vm = snapshot.vms.get(row.uuid.lower()) if snapshot is not None else None
            views.append(
                ServerPowerView(
                    server_uuid=row.uuid, name=row.name, project=row.project, status=row.status,
                    watts=vm.power_watts if vm else 0.0,
                    joules=vm.energy_joules_total if vm else 0.0,
                    source=snapshot.source if vm and snapshot else source, sampled=vm is not None,
                    taken_at=snapshot.taken_at if vm and snapshot else None,
                )
            )  # fmt: skip
        views.sort(key=lambda v: (-v.watts, v.name, v.server_uuid))
        return views

    def _meter(
        self, provider_uuid: str, down: Collection[str] = ()
    ) -> tuple[EnergySnapshot | None, str]:
        """A host's latest snapshot and energy source; none for a host that is down, not
        connected here, or whose agent does not answer (the list is still given)."""
        if provider_uuid in down:
            return None, "none"
        try:
            client = self.hosts.client(provider_uuid)
            return client.energy_snapshot(), client.energy_source()
        except (HostOperationFailed, HostError) as exc:
            log.warning("no energy figures from host %s: %s", provider_uuid, exc)
            return None, "none"

    def project_power(self, principal: Principal, project: str) -> PowerView:
        """The sum over every host's latest sample for the project."""
        if not can_see_project(principal, project):
            raise NotFound(f"project {quoted(project)} does not exist", project=project)
        watts = joules = 0.0
        servers = 0
        sources: set[str] = set()
        taken: float | None = None
        sampled = False
        history: tuple[Any, ...] = ()
        for client in self.hosts.live_clients():
            try:
                snapshot = client.energy_snapshot()
            except HostError as exc:
                log.warning("no energy figures from host %s: %s", client.uri, exc)
                continue
            if snapshot is None:
                continue
            found = snapshot.projects.get(project)
            if found is None:
                continue
            sampled = True
            watts += found.power_watts
            joules += found.energy_joules_total
            servers += found.vm_count
            sources.add(snapshot.source)
            taken = max(taken or 0.0, snapshot.taken_at)
            if not history:
                history = tuple(client.project_history(project))
        return PowerView(
            subject=project, watts=watts, joules=joules,
            source="+".join(sorted(sources)) or "none", sampled=sampled, taken_at=taken,
            history=history, servers=servers,
        )  # fmt: skip

    def host_power(self, provider_uuid: str) -> PowerView:
        self.hosts.get(provider_uuid)
        client = self.hosts.client(provider_uuid)
        snapshot = client.energy_snapshot()
        if snapshot is None:
            return PowerView(provider_uuid, 0.0, 0.0, client.energy_source(), False, None)
        return PowerView(
            subject=provider_uuid, watts=snapshot.host.power_watts,
            joules=snapshot.host.energy_joules_total, source=snapshot.source, sampled=True,
            taken_at=snapshot.taken_at, history=tuple(client.host_history()),
            servers=len(snapshot.vms),
        )  # fmt: skip
