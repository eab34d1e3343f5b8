"""Immutable results of one sample: what the exporter and the REST API read.

A snapshot is built completely and then published by swapping one reference,
so readers (a Prometheus scrape, ``GET /v1/servers/{id}/power``) never wait for
a sample and never see one half-done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wattvisor.energy.attribution import IntervalEnergy


@dataclass(frozen=True, slots=True)
class HostEnergy:
    """The whole host: totals (joules) and power over the last interval (watts)."""

    energy_joules_total: float
    idle_energy_joules_total: float
    other_processes_energy_joules_total: float
    power_watts: float
    idle_power_watts: float
    other_processes_power_watts: float


@dataclass(frozen=True, slots=True)
class VMEnergy:
    """One VM. ``cpu_source`` says where its CPU share came from this interval.

    ``libvirt`` (domain ``cpu.time``), ``procfs`` (its QEMU process tree) or
    ``none`` (not running here now; the total stays until the VM is deleted).
    """

    uuid: str
    domain: str
    project: str
    energy_joules_total: float
    power_watts: float
    running: bool
    cpu_source: str


@dataclass(frozen=True, slots=True)
class ProjectEnergy:
    """Sum over a project's VMs on this host."""

    project: str
    energy_joules_total: float
    power_watts: float
    vm_count: int


@dataclass(frozen=True, slots=True)
class ProcessPower:
    """One of the most power-hungry non-VM processes of the last interval."""

    pid: int
    comm: str
    power_watts: float


@dataclass(frozen=True, slots=True)
class EnergySnapshot:
    """Everything one sample produced.

    ``taken_at`` is Unix time (seconds); ``interval_s`` is the measured interval the
    powers are averaged over; ``source`` is the ``source`` label (``rapl``,
    ``scaphandre`` or ``estimate``); ``interval`` holds the raw joules of this
    interval for conservation checks.
    """

    taken_at: float
    interval_s: float
    source: str
    busy_fraction: float
    host: HostEnergy
    vms: Mapping[str, VMEnergy]
    projects: Mapping[str, ProjectEnergy]
    top_processes: tuple[ProcessPower, ...]
    interval: IntervalEnergy

    @property
    def is_estimate(self) -> bool:
        return self.source == "estimate"


@dataclass(frozen=True, slots=True)
class PowerPoint:
    """One point of a VM's, project's or the host's recent history."""

    taken_at: float
    power_watts: float
    energy_joules_total: float
