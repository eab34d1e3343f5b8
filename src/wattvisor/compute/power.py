"""Power views from the energy sampler's latest snapshot on each host.

A server's power comes from its host's sampler; a project's is the sum over every
host; a host's is its whole meter (admins only). Reading never triggers a sample.
"""

from __future__ import annotations

from typing import Any

from wattvisor.auth import Principal, can_see_project
from wattvisor.compute.errors import NotFound
from wattvisor.compute.hosts import HostRegistry
from wattvisor.compute.records import PowerView
from wattvisor.compute.servers import ServerService


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
            source=snapshot.source, measured=True, taken_at=snapshot.taken_at,
            history=tuple(client.vm_history(server.uuid)), servers=1,
        )  # fmt: skip

    def project_power(self, principal: Principal, project: str) -> PowerView:
        """The sum over every host's latest sample for the project."""
        if not can_see_project(principal, project):
            raise NotFound(f"project {project!r} does not exist", project=project)
        watts = joules = 0.0
        servers = 0
        sources: set[str] = set()
        taken: float | None = None
        measured = False
        history: tuple[Any, ...] = ()
        for client in self.hosts.clients():
            snapshot = client.energy_snapshot()
            if snapshot is None:
                continue
            found = snapshot.projects.get(project)
            if found is None:
                continue
            measured = True
            watts += found.power_watts
            joules += found.energy_joules_total
            servers += found.vm_count
            sources.add(snapshot.source)
            taken = max(taken or 0.0, snapshot.taken_at)
            if not history:
                history = tuple(client.project_history(project))
        return PowerView(
            subject=project, watts=watts, joules=joules,
            source="+".join(sorted(sources)) or "none", measured=measured, taken_at=taken,
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
            joules=snapshot.host.energy_joules_total, source=snapshot.source, measured=True,
            taken_at=snapshot.taken_at, history=tuple(client.host_history()),
            servers=len(snapshot.vms),
        )  # fmt: skip
