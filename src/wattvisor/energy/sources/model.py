"""Host power estimated from CPU utilisation, for machines without a meter.

``P = P_idle + (P_max - P_idle) * utilisation`` with per-host figures from
settings (e.g. from the vendor's SPECpower sheet). Everything derived from it is
exported with ``source="estimate"`` so nobody mistakes it for a measurement.
"""

from __future__ import annotations

from wattvisor.energy.sources.base import EnergySourceError, SampleWindow, SourceReading


class UtilisationModelSource:
    """Linear CPU-utilisation power model."""

    label = "estimate"

    def __init__(self, idle_watts: float, max_watts: float) -> None:
        if idle_watts < 0 or max_watts <= 0 or max_watts < idle_watts:
            raise EnergySourceError(
                f"energy.model_idle_watts={idle_watts} and energy.model_max_watts={max_watts} "
                "do not describe a host; need 0 <= idle <= max and max > 0"
            )
        self.idle_watts = idle_watts
        self.max_watts = max_watts
        self._baseline = True

    def describe(self) -> str:
        return (
            f"CPU-utilisation model (estimate): {self.idle_watts:g} W idle to "
            f"{self.max_watts:g} W at full load"
        )

    def reset_baseline(self) -> None:
        self._baseline = True

    def power_watts(self, busy_fraction: float) -> float:
        utilisation = min(max(busy_fraction, 0.0), 1.0)
        return self.idle_watts + (self.max_watts - self.idle_watts) * utilisation

    def read(self, window: SampleWindow) -> SourceReading:
        if self._baseline:
            self._baseline = False
            return SourceReading(energy_joules=0.0, is_baseline=True)
        joules = self.power_watts(window.busy_fraction) * max(window.interval_s, 0.0)
        return SourceReading(energy_joules=joules)
