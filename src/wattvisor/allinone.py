"""Every role of wattvisor in one process: what ``wattvisor up`` runs.

The controller (API, placement, scheduler, store) and this machine's host agent
(libvirt driver, energy sampler, metrics) are built here and nowhere else, so
the seam between them stays the small interfaces each package offers.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI

from wattvisor.api.app import create_app
from wattvisor.auth import UserRegistry
from wattvisor.auth.fastapi import (
    install_auth_errors,
    make_admin_dependency,
    make_auth_dependency,
)
from wattvisor.auth.keys import bootstrap_admin
from wattvisor.config import Settings
from wattvisor.energy import EnergySampler, LibvirtDomainCpuStats
from wattvisor.host.driver import HostDriver, Inventory, StartupReport
from wattvisor.host.vm_inventory import LibvirtVMInventory
from wattvisor.placement import Placement
from wattvisor.placement.entities import Inventory as PlacementInventory
from wattvisor.store import make_engine, migrate
from wattvisor.telemetry import make_metrics_app

log = logging.getLogger(__name__)


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
    }


class _ReconnectingStats:
    """The one libvirt call the sampler makes, through the host's reconnecting connection."""

    def __init__(self, driver: HostDriver) -> None:
        self.driver = driver

    def getAllDomainStats(self, stats: int, flags: int) -> Any:
        return self.driver.connection.call(lambda c: c.getAllDomainStats(stats, flags))


class LocalHostPower:
    """Measured watts per used vCPU of the local host, for the scheduler's energy weigher."""

    def __init__(self, sampler: EnergySampler, placement: Placement, provider_uuid: str) -> None:
        self.sampler = sampler
        self.placement = placement
        self.provider_uuid = provider_uuid

    def watts_per_used_vcpu(self, provider_uuid: str) -> float | None:
        if provider_uuid != self.provider_uuid:
            return None
        snapshot = self.sampler.latest()
        if snapshot is None:
            return None
        used = self.placement.get_usages(provider_uuid).usages.get("VCPU", 0)
        return snapshot.host.power_watts / max(1, used)

    def watts_per_used_vcpu_table(self) -> Mapping[str, float]:
        value = self.watts_per_used_vcpu(self.provider_uuid)
        return {} if value is None else {self.provider_uuid: value}


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
    users: UserRegistry
    admin_message: str
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> AllInOne:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        driver = HostDriver.from_settings(settings)
        startup = driver.startup()

        engine = make_engine(settings.store_url)
        migrate(engine)
        placement = Placement(engine)
        provider_uuid = driver.host_uuid()
        traits = driver.traits()
        placement.ensure_provider(
            provider_uuid,
            socket.gethostname(),
            placement_inventories(settings, driver.inventory()),
            traits,
        )

        sampler = EnergySampler.from_settings(
            settings,
            inventory=LibvirtVMInventory(driver),
            domain_stats=LibvirtDomainCpuStats(_ReconnectingStats(driver)),
        )
        users = UserRegistry()
        admin = bootstrap_admin(settings)
        users.register(admin.user, replace=True)
        authenticated = make_auth_dependency(users.lookup, settings.auth)
        admin_only = make_admin_dependency(authenticated)
        app = create_app(
            settings, placement=placement, placement_dependencies=[Depends(admin_only)]
        )
        install_auth_errors(app)
        metrics = make_metrics_app(sampler, compat_series=settings.energy.compat_series)
        # An ASGI app on an exact route (mount() would redirect /metrics to /metrics/).
        app.add_route("/metrics", metrics)  # type: ignore[arg-type]
        app.state.driver = driver
        app.state.sampler = sampler
        notes = list(driver.capabilities().notes)
        return cls(settings, driver, placement, sampler, app, provider_uuid, startup, users,
                   admin.message, notes)

    def start(self) -> None:
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()
        self.driver.close()
