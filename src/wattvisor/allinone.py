"""Every role of wattvisor in one process: what ``wattvisor up`` runs.

The controller (API, placement, scheduler, store) and this machine's host agent
(libvirt driver, energy sampler, metrics) are built here and nowhere else, so
the seam between them stays the small interfaces each package offers.
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI
from sqlalchemy import Engine

from wattvisor.agent.energy_push import EnergyPusher
from wattvisor.api.app import create_app
from wattvisor.api.energy_routes import build_energy_router
from wattvisor.api.host_trust_routes import build_host_trust_router
from wattvisor.api.image_file_routes import build_image_file_router
from wattvisor.api.prometheus_routes import build_prometheus_router
from wattvisor.api.v1_routes import build_v1_router
from wattvisor.auth.cluster_keys import ClusterSigner, ensure_cluster_key
from wattvisor.auth.errors import KeyFileError
from wattvisor.auth.fastapi import Authenticator, make_admin_dependency
from wattvisor.auth.keys import bootstrap_admin
from wattvisor.compute import Compute, HostClient, LocalHostClient, UserStore
from wattvisor.compute import placement_inventories as placement_inventories
from wattvisor.compute.energy_history import EnergyHistory, downsample_once
from wattvisor.compute.host_trust import ClusterKeys, HostTrust
from wattvisor.compute.hostclient_http import HttpHostClient
from wattvisor.compute.prometheus_targets import FileSdWriter
from wattvisor.config import Settings
from wattvisor.energy import EnergySampler, LibvirtDomainCpuStats
from wattvisor.host import binaries
from wattvisor.host.driver import HostDriver, StartupReport
from wattvisor.host.networks import NetworkError, NetworkSpec
from wattvisor.host.qemu_access import check_data_dir, runs_local_system_qemu
from wattvisor.host.vm_inventory import LibvirtVMInventory
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate
from wattvisor.telemetry import HostInfoCollector, HostPlace, MetricsListener, serve_metrics

log = logging.getLogger(__name__)


def freeze_startup_heap() -> None:
    """Leave what start-up built (modules, schemas, the placement index, caches) out of
    later garbage collections.

    A full collection walks every tracked object; with the start-up heap in it, each one
    paused the API's threads for 60-90 ms under load. Call once, after start-up, in a
    process that then serves until it exits (``wattvisor up``).
    """
    gc.collect()
    gc.freeze()


class _ReconnectingStats:
    """The one libvirt call the sampler makes, through the host's reconnecting connection."""

    def __init__(self, driver: HostDriver) -> None:
        self.driver = driver

    def getAllDomainStats(self, stats: int, flags: int) -> Any:
        return self.driver.connection.call(lambda c: c.getAllDomainStats(stats, flags))


class LocalHostPower:
    """Watts per used vCPU of the local host (metered or estimated), for the energy weigher.

    The figure is worked out once per energy sample, with the vCPUs in use when it is
    first asked for: the weigher runs under the placement index lock on every
    scheduling, where a store read per request would hold up concurrent ones.
    """

    def __init__(self, sampler: EnergySampler, placement: Placement, provider_uuid: str) -> None:
        self.sampler = sampler
        self.placement = placement
        self.provider_uuid = provider_uuid
        self._figure: tuple[object, float] | None = None  # (snapshot, watts per used vCPU)

    def watts_per_used_vcpu(self, provider_uuid: str) -> float | None:
        if provider_uuid != self.provider_uuid:
            return None
        snapshot = self.sampler.latest()
        if snapshot is None:
            return None
        figure = self._figure
        if figure is not None and figure[0] is snapshot:
            return figure[1]
        used = self.placement.get_usages(provider_uuid).usages.get("VCPU", 0)
        value = snapshot.host.power_watts / max(1, used)
        self._figure = (snapshot, value)
        return value

    def watts_per_used_vcpu_table(self) -> Mapping[str, float]:
        value = self.watts_per_used_vcpu(self.provider_uuid)
        return {} if value is None else {self.provider_uuid: value}


def run_history_duties(history: EnergyHistory, interval_s: float, stop: threading.Event) -> None:
    """Every ``interval_s`` until ``stop``: downsampling (one controller of a fleet at a
    time; the file_sd lists have their own writer); a failed round is logged and tried
    again."""
    while True:
        try:
            downsample_once(history)
        except Exception:
            log.exception("history duties failed; retrying at the next interval")
        if stop.wait(interval_s):
            return


def build_host_trust(
    settings: Settings, engine: Engine, placement: Placement
) -> tuple[HostTrust, list[str]]:
    """The cluster key (made on first start, registered if the store has none) and the
    trust service over it; the notes say when this controller's key file is not the
    cluster's current key (then it cannot sign join tokens or calls to agents)."""
    files = ensure_cluster_key(settings.cluster_key_path)
    cluster = ClusterKeys(engine)
    state = cluster.ensure(files.public_key)
    signer = ClusterSigner(
        settings.cluster_key_path,
        lambda: cluster.require().current.public_key,
        lambda: cluster.require().cluster_id,
    )
    notes: list[str] = []
    if state.current.public_key != files.public_key:
        try:
            signer.private_key()
        except KeyFileError as exc:
            notes.append(str(exc))
    return HostTrust(engine, placement, settings, cluster, signer), notes


def network_notes(client: LocalHostClient, spec: NetworkSpec) -> list[str]:
    """Make the local host's network ready at start-up, so a host that cannot run it
    (a NAT network without iptables) says so now rather than at the first build."""
    try:
        client.networks.ensure(spec)
    except NetworkError as exc:
        return [f"servers will not build until their network works: {exc}"]
    return []


@dataclass
class AllInOne:
    """The running pieces; :meth:`build` wires them, :meth:`start`/:meth:`stop` run them."""

    settings: Settings
    driver: HostDriver
    placement: Placement
    sampler: EnergySampler
    app: FastAPI
    provider_uuid: str
    startup: StartupReport
    users: UserStore
    admin_message: str
    compute: Compute
    notes: list[str] = field(default_factory=list)
    metrics: MetricsListener | None = None
    history: EnergyHistory | None = None
    pusher: EnergyPusher | None = None
    _duties_stop: threading.Event = field(default_factory=threading.Event)
    _duties: threading.Thread | None = None
    file_sd: FileSdWriter | None = None
    # The store engine built here (None when a caller passed its own parts): its pooled
    # connections hold the database files or sockets until stop() disposes it.
    engine: Engine | None = None

    @classmethod
    def build(cls, settings: Settings) -> AllInOne:
        """Wire every part; refuses (``DataDirUnreachable``) before touching the host or
        the store when QEMU could not open the files it would be given under data_dir."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        driver = HostDriver.from_settings(settings)
        check_data_dir(settings.data_dir, driver.uri)
        startup = driver.startup()

        engine = make_engine(settings.store_url)
        migrate(engine)
        placement = Placement(engine)
        provider_uuid = driver.host_uuid()
        sampler = EnergySampler.from_settings(
            settings,
            inventory=LibvirtVMInventory(driver),
            domain_stats=LibvirtDomainCpuStats(_ReconnectingStats(driver)),
        )

        trust, trust_notes = build_host_trust(settings, engine, placement)
        signer = trust.signer

        def open_agent(url: str) -> HostClient:
            # A host that joined through its agent; every call carries the controller token.
            if signer is None:
                raise KeyFileError("this controller holds no cluster key to call agents with")
            return HttpHostClient(
                url,
                signer.controller_token,
                timeout_s=settings.agent.call_timeout_s,
                ca_file=settings.agent.ca_file,
            )

        admin = bootstrap_admin(settings)
        compute = Compute.build(
            engine,
            placement,
            settings,
            client_factory=open_agent,
            power=LocalHostPower(sampler, placement, provider_uuid),
            protected_users=frozenset({admin.user.name}),
        )
        local = LocalHostClient(driver, sampler)
        compute.hosts.add(local, name=socket.gethostname(), local=True)
        notes = list(driver.capabilities().notes)
        notes += network_notes(local, compute.servers.addresses.spec)
        if runs_local_system_qemu(driver.uri):
            notes += [b.missing_message() for b in binaries.missing("host")]
        notes += compute.servers.recover()
        notes += compute.devices.recover()
        user = admin.user
        compute.users.register(user.name, user.project, user.role, user.public_key, replace=True)
        if settings.compute.default_flavors:
            compute.ensure_default_flavors()

        notes += trust_notes
        authenticator = Authenticator(
            compute.users.lookup,
            settings.auth,
            host_keys=trust.host_keys,
            join_verifier=trust.join_verifier,
        )
        authenticated = authenticator.dependency
        history = compute.power.history
        assert history is not None
        admin_only = make_admin_dependency(authenticated)
        app = create_app(
            settings,
            placement=placement,
            placement_dependencies=[Depends(admin_only)],
            routers=[
                build_v1_router(compute, authenticated, admin_only),
                build_image_file_router(compute, authenticated),
                build_host_trust_router(trust, authenticator, authenticated, admin_only),
                build_energy_router(history, compute.power, authenticated, admin_only),
                build_prometheus_router(
                    engine,
                    authenticated,
                    admin_only,
                    compat_series=settings.energy.compat_series,
                    address_family=settings.history.prometheus_vm_address,
                ),
            ],
            authenticator=authenticator,
        )
        app.state.host_trust = trust
        trust.on_return = compute.reconcile_soon  # a host back from down: look at it now
        app.state.driver = driver
        app.state.sampler = sampler
        app.state.compute = compute
        # The local host's samples go into the store through the same service call the
        # push endpoint makes (no HTTP): history survives restarts and is downsampled
        # like every agent's.
        pusher = EnergyPusher(
            sampler.latest,
            lambda batch: history.ingest(provider_uuid, batch),
            poll_s=max(0.05, settings.energy.interval_s / 2),
            push_interval_s=settings.energy.interval_s,
            batch_samples=settings.energy.push_batch_samples,
            backlog_samples=settings.energy.push_backlog_samples,
        )
        return cls(
            settings,
            driver,
            placement,
            sampler,
            app,
            provider_uuid,
            startup,
            compute.users,
            admin.message,
            compute,
            notes,
            history=history,
            pusher=pusher,
            engine=engine,
        )

    def ensure_ready_image(self) -> str:
        """Offer the built-in guest as image ``busybox`` (built on first use); one line says how."""
        if not self.settings.compute.ready_image:
            return "the ready image is switched off (compute.ready_image = false)"
        _image, message = self.compute.ensure_ready_image()
        return message

    def start(self) -> None:
        self.sampler.start()
        self.compute.start(self.settings.compute.power_sync_interval_s)
        if self.pusher is not None:
            self.pusher.start()
        if self.file_sd is None:
            history_settings = self.settings.history
            self.file_sd = FileSdWriter(
                self.compute.servers.engine,
                history_settings.prometheus_file_sd,
                history_settings.prometheus_vm_file_sd,
                history_settings.prometheus_file_sd_interval_s,
                family=history_settings.prometheus_vm_address,
            )
            self.file_sd.start()
        interval = self.settings.history.downsample_interval_s
        if self.history is not None and interval > 0 and self._duties is None:
            self._duties_stop.clear()
            self._duties = threading.Thread(
                target=self._run_history_duties, args=(interval,),
                name="wattvisor-history", daemon=True,
            )  # fmt: skip
            self._duties.start()

    def _run_history_duties(self, interval_s: float) -> None:
        assert self.history is not None
        run_history_duties(self.history, interval_s, self._duties_stop)

    def start_metrics_listener(self) -> MetricsListener:
        """Serve ``/metrics`` on ``metrics.listen``, apart from the API (see telemetry.listener).

        Separate from :meth:`start` so that only ``wattvisor up`` binds the metrics
        address; raises :class:`wattvisor.telemetry.MetricsListenerError` with what to change.
        """
        if self.metrics is None:
            metrics = self.settings.metrics
            host, port = metrics.address
            self.metrics = serve_metrics(
                self.sampler,
                host=host,
                port=port,
                compat_series=self.settings.energy.compat_series,
                process_pids=metrics.process_pids,
                bearer_token_file=metrics.bearer_token_file,
                extra=[HostInfoCollector(self._local_place)],
            )
        return self.metrics

    def _local_place(self) -> HostPlace | None:
        """The local host's name and geolocation from the store (read at each scrape)."""
        known = self.compute.hosts.geolocation.place(self.provider_uuid)
        return HostPlace(*known) if known is not None else None

    def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.file_sd is not None:
            self.file_sd.stop()
            self.file_sd = None
        self._duties_stop.set()
        if self._duties is not None:
            self._duties.join(10)
            self._duties = None
        if self.pusher is not None:
            self.pusher.stop()
        self.app.state.host_trust.close()
        self.sampler.stop()
        self.compute.close()
        self.driver.close()
        if self.engine is not None:
            self.engine.dispose()
