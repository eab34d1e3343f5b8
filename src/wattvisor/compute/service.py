"""The compute service as one object: what the API, the CLI and ``wattvisor up`` hold."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine

from wattvisor.compute.catalog import Catalog
from wattvisor.compute.console import ConsoleService
from wattvisor.compute.devices import DeviceService
from wattvisor.compute.energy_history import EnergyHistory
from wattvisor.compute.errors import ComputeError
from wattvisor.compute.hosts import HostClientFactory, HostRegistry
from wattvisor.compute.identities import IdentityStore
from wattvisor.compute.migrations import MigrationService
from wattvisor.compute.power import PowerService
from wattvisor.compute.records import FlavorRecord, ImageRecord
from wattvisor.compute.server_updates import ServerUpdates
from wattvisor.compute.servers import ServerService
from wattvisor.compute.users import UserStore
from wattvisor.config.settings import Settings
from wattvisor.placement import Placement
from wattvisor.scheduler import HostPowerSource, Scheduler

log = logging.getLogger(__name__)

DEFAULT_FLAVORS: tuple[tuple[str, int, int, int], ...] = (
    ("tiny", 1, 256, 1),
    ("small", 1, 512, 1),
)
"""(name, vCPUs, RAM MiB, disk GiB) created at start-up when ``compute.default_flavors``."""
READY_IMAGE_NAME = "busybox"
READY_IMAGE_CMDLINE_SCENARIO = "metrics"
READY_IMAGE_INTERVAL_S = 2


@dataclass
class Compute:
    """Users, catalog (flavors, images), hosts, servers, their devices and power; project
    identities, and changes to existing servers (rename, resize)."""

    users: UserStore
    catalog: Catalog
    hosts: HostRegistry
    servers: ServerService
    devices: DeviceService
    power: PowerService
    scheduler: Scheduler
    console: ConsoleService
    identities: IdentityStore
    updates: ServerUpdates
    migrations: MigrationService
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _sync_thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _reconciling: set[str] = field(default_factory=set, init=False, repr=False)
    _reconciling_guard: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False
    )

    @classmethod
    def build(
        cls,
        engine: Engine,
        placement: Placement,
        settings: Settings,
        *,
        client_factory: HostClientFactory | None = None,
        power: HostPowerSource | None = None,
        protected_users: frozenset[str] = frozenset(),
    ) -> Compute:
        """Wire the services; the store at ``engine`` must be migrated already."""
        catalog = Catalog(engine)
        hosts = HostRegistry(engine, placement, settings, client_factory)
        scheduler = Scheduler(placement, settings.scheduler, power, down_hosts=hosts.down_hosts)
        servers = ServerService(engine, catalog, hosts, scheduler, settings)
        return cls(
            users=UserStore(engine, protected_users),
            catalog=catalog,
            hosts=hosts,
            servers=servers,
            devices=DeviceService(engine, servers, hosts, settings),
            power=PowerService(
                servers,
                hosts,
                EnergyHistory(engine, settings.history),
                history_step_s=settings.energy.interval_s,
                history_window_s=settings.energy.interval_s * settings.energy.history_samples,
            ),
            scheduler=scheduler,
            console=ConsoleService(servers, hosts),
            identities=servers.identities,
            updates=ServerUpdates(servers, placement),
            migrations=MigrationService(servers, placement, settings.migration),
        )

    def ensure_default_flavors(self) -> list[FlavorRecord]:
        """The built-in flavors, created once (an operator's changes are kept)."""
        return [
            self.catalog.create_flavor(name, vcpus, ram, disk, exist_ok=True)
            for name, vcpus, ram, disk in DEFAULT_FLAVORS
        ]

    def ensure_ready_image(self) -> tuple[ImageRecord | None, str]:
        """The ``busybox`` image (wattvisor's tiny guest), built on first use.

        Returns the image (None when it cannot be built) and one line saying what happened.
        """
        from wattvisor.images import GuestImageError, ensure_guest_image

        try:
            guest = ensure_guest_image()
        except GuestImageError as exc:
            return None, f"image {READY_IMAGE_NAME!r} is not offered: {exc}"
        existing = {i.name: i for i in self.catalog.images()}.get(READY_IMAGE_NAME)
        if existing is not None and existing.initrd_path == str(guest.initrd):
            return existing, f"image {READY_IMAGE_NAME!r}: {guest.summary()}"
        if existing is not None:
            # The guest was rebuilt (new kernel or /init): point the image at the new files.
            self.catalog.delete_image(existing.id)
        try:
            image = self.catalog.create_image(
                READY_IMAGE_NAME,
                kernel_path=str(guest.kernel),
                initrd_path=str(guest.initrd),
                cmdline=guest.cmdline(
                    READY_IMAGE_CMDLINE_SCENARIO, interval=READY_IMAGE_INTERVAL_S
                ),
                image_id=existing.id if existing is not None else None,
            )
        except ComputeError as exc:
            return None, f"image {READY_IMAGE_NAME!r} is not offered: {exc.message}"
        return image, f"image {READY_IMAGE_NAME!r}: {guest.summary()}"

    def start(self, power_sync_interval_s: float) -> None:
        """Run server tasks from the store, and follow the guests' power state every
        ``power_sync_interval_s`` (0: never; one controller of a fleet at a time)."""
        self.servers.start_worker()
        if power_sync_interval_s <= 0 or self._sync_thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(power_sync_interval_s):
                try:
                    for line in self.servers.sync_power_states():
                        log.info("%s", line)
                except Exception:
                    log.exception("power state sync failed; retrying at the next interval")

        self._sync_thread = threading.Thread(target=run, name="wattvisor-power-sync", daemon=True)
        self._sync_thread.start()

    def reconcile_soon(self, host_uuid: str) -> None:
        """Reconcile a host that came back (:meth:`ServerService.reconcile_host`) on a
        thread of its own, so that the heartbeat that told of it is answered at once; one
        at a time per host (a second return meanwhile is covered by the one running)."""
        with self._reconciling_guard:
            if host_uuid in self._reconciling:
                return
            self._reconciling.add(host_uuid)

        def run() -> None:
            try:
                for line in self.servers.reconcile_host(host_uuid):
                    log.info("%s", line)
            except Exception:
                log.exception("reconciling host %s failed; the power sync looks again", host_uuid)
            finally:
                with self._reconciling_guard:
                    self._reconciling.discard(host_uuid)

        threading.Thread(
            target=run, name=f"wattvisor-reconcile-{host_uuid[:8]}", daemon=True
        ).start()

    def reconciling(self) -> bool:
        """True while a returned host is being reconciled (tests wait for it)."""
        with self._reconciling_guard:
            return bool(self._reconciling)

    def close(self) -> None:
        self._stop.set()
        if self._sync_thread is not None:
            self._sync_thread.join(10)
            self._sync_thread = None
        self.servers.shutdown(wait=True)
        self.hosts.close()
