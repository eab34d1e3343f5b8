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
from wattvisor.compute.energy_history import EnergyHistory
from wattvisor.compute.errors import HostOperationFailed, HostUnavailable, InvalidRequest, NotFound
from wattvisor.compute.hostclient import HostClient
from wattvisor.compute.hosts import HostRegistry
from wattvisor.compute.names import quoted
from wattvisor.compute.records import PowerView
from wattvisor.compute.servers import ServerService
from wattvisor.energy.snapshot import EnergySnapshot, PowerPoint
from wattvisor.energy.sources import is_meter
from wattvisor.host.driver import HostError
from wattvisor.store import read_transaction
from wattvisor.store.compute_tables import ServerRow

log = logging.getLogger(__name__)

_servers = cast(Table, ServerRow.__table__)
MAX_HISTORY_S = 31 * 86400
"""The longest history window asked for: the rollups' default retention and a day."""


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

    def __init__(
        self,
        servers: ServerService,
        hosts: HostRegistry,
        history: EnergyHistory | None = None,
        history_step_s: float = 2.0,
        history_window_s: float = 300.0,
    ) -> None:
        self.servers = servers
        self.hosts = hosts
        self.history = history
        self.history_step_s = history_step_s
        self.history_window_s = history_window_s
        self._unreachable: set[str] = set()

    def _stored_history(self, **subject: str) -> tuple[Any, ...]:
        assert self.history is not None
        return tuple(
            self.history.history(
                since=self.history.now_s() - self.history_window_s,
                step_s=self.history_step_s,
                **subject,  # type: ignore[arg-type]
            )
        )

    def server_power(self, principal: Principal, server_id: str) -> PowerView:
        server = self.servers.get_live(principal, server_id)
        if server.host_uuid is None:
            return PowerView(server.uuid, 0.0, 0.0, "none", False, None)
        try:
            client: HostClient | None = self.hosts.client(server.host_uuid)
        except HostOperationFailed:
            if self.history is None:
                raise
            client = None  # a host that pushes its samples, not driven from here
        if client is not None and client.pushes_energy and self.history is not None:
            client = None  # its agent pushes its samples: they are read from the store
        snapshot = client.energy_snapshot() if client is not None else None
        vm = snapshot.vms.get(server.uuid.lower()) if snapshot is not None else None
        if (snapshot is None or vm is None) and self.history is not None:
            stored = self.history.now(server_uuid=server.uuid.lower())
            if stored.servers:
                return PowerView(
                    subject=server.uuid, watts=stored.watts, joules=stored.joules,
                    source="+".join(sorted(stored.sources)), sampled=True,
                    taken_at=stored.taken_at,
                    history=self._stored_history(server_uuid=server.uuid.lower()), servers=1,
                )  # fmt: skip
        if snapshot is None or vm is None or client is None:
            source = client.energy_source() if client is not None else "none"
            return PowerView(server.uuid, 0.0, 0.0, source, False, None)
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
        unmetered = {h for h, (snapshot, source) in meters.items() if snapshot is None and
                     (source != "none" or h in self._unreachable)}  # fmt: skip
        if unmetered and self.history is not None:
            # Hosts measured elsewhere (an agent that pushes) or not driven from here: what
            # their agents pushed. A host known to measure nothing is not looked up.
            stored = self.history.latest_servers(unmetered)
            for index, view in enumerate(views):
                found = stored.get(view.server_uuid.lower())
                if found is None or view.sampled:
                    continue
                watts, joules, source, taken_at = found
                views[index] = ServerPowerView(
                    server_uuid=view.server_uuid, name=view.name, project=view.project,
                    status=view.status, watts=watts, joules=joules, source=source,
                    sampled=True, taken_at=taken_at,
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
            if client.pushes_energy and self.history is not None:
                # Its agent pushes its samples: they are read from the store.
                self._unreachable.add(provider_uuid)
                return None, "none"
            snapshot, source = client.energy_snapshot(), client.energy_source()
        except (HostOperationFailed, HostError) as exc:
            log.warning("no energy figures from host %s: %s", provider_uuid, exc)
            self._unreachable.add(provider_uuid)
            return None, "none"
        self._unreachable.discard(provider_uuid)
        return snapshot, source

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
        if self.history is not None:
            # Hosts this controller does not sample in-process count through what their
            # agents pushed: their latest fresh sample for watts, every counter for joules.
            live = self._live_hosts()
            stored = self.history.now(project=project, exclude_hosts=live)
            if stored.servers:
                sampled = True
                watts += stored.watts
                joules += stored.joules
                servers += stored.servers
                sources |= stored.sources
                if stored.taken_at is not None:
                    taken = max(taken or 0.0, stored.taken_at)
                history = self._stored_history(project=project) or history
        return PowerView(
            subject=project, watts=watts, joules=joules,
            source="+".join(sorted(sources)) or "none", sampled=sampled, taken_at=taken,
            history=history, servers=servers,
        )  # fmt: skip

    def stored_history(
        self,
        principal: Principal,
        *,
        project: str | None = None,
        server_id: str | None = None,
        since_s: float,
        step_s: float | None = None,
    ) -> list[PowerPoint]:
        """The last ``since_s`` seconds of a project's or a server's history across every
        host that pushed (full resolution for a day, rolled up for 30), oldest first."""
        if self.history is None:
            return []
        if not 1 <= since_s <= MAX_HISTORY_S:
            raise InvalidRequest(
                f"since {since_s!r} s is not accepted; accepted: 1 to {MAX_HISTORY_S} seconds",
                since=since_s,
            )
        if step_s is not None and not 1 <= step_s <= since_s:
            raise InvalidRequest(
                f"step {step_s!r} s is not accepted; accepted: 1 s up to the window ({since_s} s)",
                step=step_s,
            )
        now = self.history.now_s()
        if server_id is not None:
            server = self.servers.get_live(principal, server_id)
            return self.history.history(
                server_uuid=server.uuid.lower(), since=now - since_s, until=now, step_s=step_s
            )
        assert project is not None
        if not can_see_project(principal, project):
            raise NotFound(f"project {quoted(project)} does not exist", project=project)
        return self.history.history(project=project, since=now - since_s, until=now, step_s=step_s)

    def _live_hosts(self) -> frozenset[str]:
        """Hosts whose current figures come from a sampler this controller reads directly.

        Hosts behind an agent push their samples into the store, which is where their
        figures are read: asking every agent on every request would not scale."""
        live = set()
        for uuid in self.hosts.names():
            try:
                client = self.hosts.client(uuid)
            except HostOperationFailed:
                continue
            if client.pushes_energy:
                continue
            try:
                if client.energy_snapshot() is not None:
                    live.add(uuid)
            except HostError as exc:
                log.warning("no energy figures from host %s: %s", uuid, exc)
        return frozenset(live)

    def host_power(self, provider_uuid: str) -> PowerView:
        self.hosts.get(provider_uuid)
        client = self.hosts.client(provider_uuid)
        try:
            snapshot = client.energy_snapshot()
            if snapshot is None:
                return PowerView(provider_uuid, 0.0, 0.0, client.energy_source(), False, None)
            history = tuple(client.host_history())
        except HostError as exc:
            raise HostUnavailable(
                f"host {provider_uuid}: its agent did not answer ({exc})",
                host_uuid=provider_uuid,
            ) from exc
        return PowerView(
            subject=provider_uuid, watts=snapshot.host.power_watts,
            joules=snapshot.host.energy_joules_total, source=snapshot.source, sampled=True,
            taken_at=snapshot.taken_at, history=history,
            servers=len(snapshot.vms),
        )  # fmt: skip
