"""Split one interval's host energy into idle, VMs and other processes.

Kepler's model: the interval's energy ΔE is split by the machine's busy fraction
(``/proc/stat``) into *active* and *idle*; idle stays with the host, active is
shared by CPU time among every consumer. A VM is one consumer (its domain's
``cpu.time``, or its QEMU process tree), every other process is one consumer,
and a VM's QEMU processes are never counted a second time as "other processes".
By construction ``host = idle + Σ VMs + Σ other processes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IntervalEnergy:
    """Joules used in one interval, by whom."""

    host_joules: float
    idle_joules: float
    vm_joules: Mapping[str, float]
    process_joules: Mapping[int, float]
    other_joules: float

    @property
    def active_joules(self) -> float:
        return self.host_joules - self.idle_joules


def busy_fraction(busy_ticks: int, total_ticks: int) -> float:
    """Share of CPU capacity that was busy, clamped to [0, 1]; 0 when no time passed."""
    if total_ticks <= 0:
        return 0.0
    return min(max(busy_ticks / total_ticks, 0.0), 1.0)


def attribute(
    energy_joules: float,
    busy: float,
    vm_cpu_ns: Mapping[str, float],
    process_cpu_ns: Mapping[int, float],
) -> IntervalEnergy:
    """Attribute ``energy_joules`` given the busy fraction and each consumer's CPU time.

    With no CPU time recorded for anyone (all busy time was kernel work, or the
    consumers exited mid-interval), there is nobody to give active energy to, so
    it is reported as idle rather than lost.
    """
    energy = max(energy_joules, 0.0)
    active = energy * min(max(busy, 0.0), 1.0)
    vm_total = sum(v for v in vm_cpu_ns.values() if v > 0)
    process_total = sum(v for v in process_cpu_ns.values() if v > 0)
    denominator = vm_total + process_total
    if denominator <= 0 or active <= 0:
        return IntervalEnergy(
            host_joules=energy,
            idle_joules=energy,
            vm_joules={uuid: 0.0 for uuid in vm_cpu_ns},
            process_joules={},
            other_joules=0.0,
        )
    vm_joules = {
        uuid: (active * (ns / denominator) if ns > 0 else 0.0) for uuid, ns in vm_cpu_ns.items()
    }
    process_joules = {
        pid: active * (ns / denominator) for pid, ns in process_cpu_ns.items() if ns > 0
    }
    other = active * (process_total / denominator)
    return IntervalEnergy(
        host_joules=energy,
        idle_joules=energy - active,
        vm_joules=vm_joules,
        process_joules=process_joules,
        other_joules=other,
    )
