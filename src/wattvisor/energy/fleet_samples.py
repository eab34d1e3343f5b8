"""Samples as an agent pushes them to its controllers: plain data, the same on both ends.

One :class:`HostSample` per sampler interval: the host meter's power over the interval,
its energy in that interval and its monotonic counter, and each server's the same.
The interval joules are what keeps energy conserved through downsampling; the
counters are what ``*_joules_total`` series show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wattvisor.energy.snapshot import EnergySnapshot
from wattvisor.energy.sources import is_meter


@dataclass(frozen=True, slots=True)
class ServerSample:
    uuid: str
    power_watts: float
    joules: float
    energy_joules_total: float


@dataclass(frozen=True, slots=True)
class HostSample:
    """``taken_at`` is Unix time in seconds (the end of the interval)."""

    taken_at: float
    interval_s: float
    source: str
    measured: bool
    power_watts: float
    joules: float
    energy_joules_total: float
    servers: tuple[ServerSample, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at,
            "interval_s": self.interval_s,
            "source": self.source,
            "measured": self.measured,
            "power_watts": self.power_watts,
            "joules": self.joules,
            "energy_joules_total": self.energy_joules_total,
            "servers": [
                {
                    "uuid": s.uuid,
                    "power_watts": s.power_watts,
                    "joules": s.joules,
                    "energy_joules_total": s.energy_joules_total,
                }
                for s in self.servers
            ],
        }


def sample_of(snapshot: EnergySnapshot) -> HostSample:
    """The push form of one sampler snapshot."""
    interval = snapshot.interval
    return HostSample(
        taken_at=snapshot.taken_at,
        interval_s=snapshot.interval_s,
        source=snapshot.source,
        measured=is_meter(snapshot.source),
        power_watts=snapshot.host.power_watts,
        joules=interval.host_joules,
        energy_joules_total=snapshot.host.energy_joules_total,
        servers=tuple(
            ServerSample(
                uuid=vm.uuid,
                power_watts=vm.power_watts,
                joules=interval.vm_joules.get(uuid, 0.0),
                energy_joules_total=vm.energy_joules_total,
            )
            for uuid, vm in snapshot.vms.items()
        ),
    )
