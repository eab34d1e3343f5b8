"""What ``wattvisor agent`` runs on one host: everything that touches that host.

The libvirt driver (``host.libvirt_uri``, ``qemu:///system`` by default) with its
start-up duties (share mounts re-established, the alias upgrade of the host's own
domains), the energy sampler and its ``/metrics`` listener, the host protocol served
to the cluster's controllers (:mod:`wattvisor.agent.app`), and a heartbeat to the
controller that keeps the host ``up`` and the cluster keys current.

The first start joins the cluster with a join token; later starts reuse the
credentials kept under ``agent.data_dir``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI

from wattvisor.agent.app import create_agent_app
from wattvisor.agent.credentials import (
    AgentCredentials,
    ClusterTrust,
    NotJoined,
    join_cluster,
    make_controller_dependency,
)
from wattvisor.agent.energy_push import EnergyPusher, start_energy_push
from wattvisor.agent.join_facts import join_facts
from wattvisor.compute.hostclient import MigrationEndpoint
from wattvisor.compute.local_host import LocalHostClient
from wattvisor.config import Settings
from wattvisor.energy import EnergySampler, LibvirtDomainCpuStats
from wattvisor.host.driver import HostDriver, StartupReport
from wattvisor.host.image_cache import ExpectedContent, ImageSource
from wattvisor.host.image_fetch import DEFAULT_TIMEOUT as IMAGE_TIMEOUT
from wattvisor.host.image_fetch import ControllerImages
from wattvisor.host.ip_addresses import host_ip_addresses
from wattvisor.host.qemu_access import check_data_dir
from wattvisor.host.tunnels import sweep_tunnels
from wattvisor.host.vm_inventory import LibvirtVMInventory
from wattvisor.telemetry import HostInfoCollector, HostPlace, MetricsListener, serve_metrics

log = logging.getLogger(__name__)

CONTROLLER_TIMEOUT_S = 30.0
MIN_HEARTBEAT_RETRY_S = 1.0


class AgentSetupError(RuntimeError):
    """The agent cannot start as configured; the message says what to change."""


class _ReconnectingStats:
    """The sampler's one libvirt call, through the driver's reconnecting connection."""

    def __init__(self, driver: HostDriver) -> None:
        self.driver = driver

    def getAllDomainStats(self, stats: int, flags: int) -> Any:
        return self.driver.connection.call(lambda c: c.getAllDomainStats(stats, flags))


@dataclass
class HostAgent:
    """The running parts of one agent; :meth:`build`, then :meth:`join`, :meth:`start`."""

    settings: Settings
    driver: HostDriver
    sampler: EnergySampler
    host: LocalHostClient
    credentials: AgentCredentials
    startup: StartupReport
    http: httpx.Client
    swept_tunnels: list[str] = field(default_factory=list)
    """Migration tunnels an earlier run of the agent left behind, removed at this start."""
    metrics: MetricsListener | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _heartbeat: threading.Thread | None = None
    _energy_push: EnergyPusher | None = None
    _reported: dict[str, str] | None = None
    """The domain states the controller last took with a heartbeat."""

    @classmethod
    def build(cls, settings: Settings) -> HostAgent:
        """Open the host (start-up duties included) and the sampler; nothing is served yet."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        driver = HostDriver.from_settings(settings)
        check_data_dir(settings.data_dir, driver.uri)
        startup = driver.startup()
        # No migration outlives its agent: links an earlier run left are leftovers.
        swept = sweep_tunnels()
        if swept:
            log.warning("removed migration tunnels left by an earlier run: %s", swept)
        sampler = EnergySampler.from_settings(
            settings,
            inventory=LibvirtVMInventory(driver),
            domain_stats=LibvirtDomainCpuStats(_ReconnectingStats(driver)),
        )
        credentials = AgentCredentials(settings.agent_data_dir)
        images = _JoinedControllerImages(
            credentials, httpx.Client(timeout=IMAGE_TIMEOUT, verify=_verify(settings))
        )
        return cls(
            settings=settings,
            driver=driver,
            sampler=sampler,
            host=LocalHostClient(
                driver, sampler, image_sources=images, endpoint=migration_endpoint(settings)
            ),
            credentials=credentials,
            startup=startup,
            http=httpx.Client(timeout=CONTROLLER_TIMEOUT_S, verify=_verify(settings)),
            swept_tunnels=swept,
        )

    def join(self, controller: str | None, join_token: str | None) -> tuple[ClusterTrust, bool]:
        """Join with ``join_token`` on first start; afterwards reuse the stored trust.

        Returns the trust and whether this start joined."""
        try:
            trust = self.credentials.trust()
        except NotJoined:
            trust = None
        if trust is not None:
            if controller and controller.rstrip("/") != trust.controller_url.rstrip("/"):
                raise AgentSetupError(
                    f"this host joined the controller at {trust.controller_url!r}, not "
                    f"{controller!r}; remove {str(self.credentials.trust_path)!r} to join "
                    "another cluster"
                )
            return trust, False
        url = controller or self.settings.agent.controller
        if not url or not join_token:
            raise AgentSetupError(
                "this host has not joined a cluster yet: give --controller URL and "
                "--join-token TOKEN (an admin makes one with `wattvisor host join-token`)"
            )
        agent = self.settings.agent
        if agent.address[0] in ("0.0.0.0", "::") and not agent.advertise_url:
            raise AgentSetupError(
                f"agent.listen {agent.listen!r} answers on every address, so controllers "
                "cannot be told one; set agent.advertise_url to the URL they reach this host "
                "at (e.g. http://198.18.0.2:8775)"
            )
        facts = join_facts(
            self.host, [agent.url], name=socket.gethostname(), ip_addresses=host_ip_addresses()
        )
        return join_cluster(self.credentials, self.http, url, join_token, facts), True

    def app(self) -> FastAPI:
        return create_agent_app(self.host, make_controller_dependency(self.credentials))

    def start(self) -> None:
        """Sample energy, serve ``/metrics`` and heartbeat; the host app is served apart."""
        self.sampler.start()
        metrics = self.settings.metrics
        host, port = metrics.address
        self.metrics = serve_metrics(
            self.sampler,
            host=host,
            port=port,
            compat_series=self.settings.energy.compat_series,
            process_pids=metrics.process_pids,
            bearer_token_file=metrics.bearer_token_file,
            extra=[HostInfoCollector(self.place)],
        )
        self._heartbeat = threading.Thread(target=self._beat, name="agent-heartbeat", daemon=True)
        self._heartbeat.start()
        # Samples go to the controller in batches, so its history covers every host.
        self._energy_push = start_energy_push(
            self.settings.energy, self.sampler.latest, self.credentials, self.http
        )

    def place(self) -> HostPlace | None:
        """This host's name and geolocation as the controller last answered them."""
        known = self.credentials.place()
        return HostPlace(known[0], known[1]) if known is not None else None

    def heartbeat_once(self) -> bool:
        """One heartbeat with the host's addresses now (a change refreshes its
        geolocation) and its domain states when they differ from the last ones the
        controller took (the power sync reads them from the store instead of asking
        this host); a failure is logged (the next one tries again)."""
        try:
            states: dict[str, str] | None = self.host.domain_states()
        except Exception as exc:
            log.warning("reading the domain states for the heartbeat failed: %s", exc)
            states = None
            self._reported = None  # sent again once they can be read
        changed = states if states is not None and states != self._reported else None
        try:
            self.credentials.heartbeat(self.http, host_ip_addresses(), changed)
        except Exception as exc:
            log.warning("heartbeat to the controller failed: %s", exc)
            return False
        if changed is not None:
            self._reported = changed
        return True

    def _beat(self) -> None:
        interval = self.settings.agent.heartbeat_s
        while not self._stop.is_set():
            ok = self.heartbeat_once()
            self._stop.wait(interval if ok else max(MIN_HEARTBEAT_RETRY_S, interval / 2))

    def stop(self) -> None:
        self._stop.set()
        if self._energy_push is not None:
            self._energy_push.stop()
            self._energy_push = None
        if self._heartbeat is not None:
            self._heartbeat.join(CONTROLLER_TIMEOUT_S)
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        self.sampler.stop()
        self.http.close()
        self.driver.close()


class _JoinedControllerImages:
    """Image files from the controller this host joined, known only once it has joined
    (the agent is built before it joins); checked against the same CA as other calls."""

    def __init__(self, credentials: AgentCredentials, client: httpx.Client) -> None:
        self._credentials = credentials
        self._client = client
        self._images: ControllerImages | None = None

    def source(
        self, image_id: str, part: str, path: str, expected: ExpectedContent | None
    ) -> ImageSource:
        if self._images is None:
            trust = self._credentials.trust()
            self._images = ControllerImages(
                trust.controller_url, self._credentials.host_token, client=self._client
            )
        return self._images.source(image_id, part, path, expected)


def migration_endpoint(settings: Settings) -> MigrationEndpoint:
    """Where other hosts reach this one for migrations: ``migration.underlay_address`` or
    the host of the agent's URL (resolved when a name), and the libvirt URI on it."""
    address = settings.migration.underlay_address
    if address is None:
        host = urlsplit(settings.agent.url).hostname or ""
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            try:
                address = str(socket.getaddrinfo(host, None)[0][4][0])
            except (OSError, IndexError):
                return MigrationEndpoint(underlay_address=None, libvirt_uri=None)
        if ipaddress.ip_address(address).is_unspecified:
            return MigrationEndpoint(underlay_address=None, libvirt_uri=None)
    shown = f"[{address}]" if ":" in address else address
    uri = settings.migration.libvirt_uri or f"qemu+tcp://{shown}/system"
    return MigrationEndpoint(underlay_address=address, libvirt_uri=uri)


def _verify(settings: Settings) -> Any:
    """How the agent checks the controller's certificate: ``agent.ca_file`` when set."""
    if settings.agent.ca_file is not None:
        import ssl

        return ssl.create_default_context(cafile=str(settings.agent.ca_file))
    return True
