"""Energy: host meters, attribution to VMs and processes, monotonic counters, guest shares.

Pipeline: a source (:mod:`wattvisor.energy.sources`) measures the host, the
sampler attributes each interval (:mod:`wattvisor.energy.attribution`), keeps
totals that survive restarts, writes each VM's guest-visible counter, and
publishes immutable snapshots that the exporter and the API read.
"""

from __future__ import annotations

from wattvisor.energy.attribution import IntervalEnergy, attribute, busy_fraction
from wattvisor.energy.counters import EnergyLedger, EnergyStateError, LedgerStore, VMCounter
from wattvisor.energy.domain_stats import DomainCpu, DomainCpuStats, LibvirtDomainCpuStats
from wattvisor.energy.guest_share import GuestShareError, GuestShareWriter
from wattvisor.energy.inventory import VMInventory, VMRecord
from wattvisor.energy.procfs import ProcfsError
from wattvisor.energy.sampler import EnergySampler
from wattvisor.energy.snapshot import (
    EnergySnapshot,
    HostEnergy,
    PowerPoint,
    ProcessPower,
    ProjectEnergy,
    VMEnergy,
)
from wattvisor.energy.sources import (
    EnergyReadError,
    EnergySource,
    EnergySourceError,
    OpenedSource,
    open_source,
)

__all__ = [
    "DomainCpu",
    "DomainCpuStats",
    "EnergyLedger",
    "EnergyReadError",
    "EnergySampler",
    "EnergySnapshot",
    "EnergySource",
    "EnergySourceError",
    "EnergyStateError",
    "GuestShareError",
    "GuestShareWriter",
    "HostEnergy",
    "IntervalEnergy",
    "LedgerStore",
    "LibvirtDomainCpuStats",
    "OpenedSource",
    "PowerPoint",
    "ProcessPower",
    "ProcfsError",
    "ProjectEnergy",
    "VMCounter",
    "VMEnergy",
    "VMInventory",
    "VMRecord",
    "attribute",
    "busy_fraction",
    "open_source",
]
