"""The one interface every host energy source implements.

A source answers a single question per sample: how many joules did the whole
host use since the previous call? Everything downstream (attribution, counters,
guest shares, the exporter) is the same whichever source answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class EnergySourceError(RuntimeError):
    """A source cannot be used at all; the message says what to do about it."""


class EnergyReadError(RuntimeError):
    """One reading failed (a file vanished, an endpoint timed out); the next may succeed."""


@dataclass(frozen=True, slots=True)
class SampleWindow:
    """What a source may need to know about the interval it is asked about.

    Measuring sources ignore it; the utilisation model needs both fields because it
    has no meter of its own.
    """

    interval_s: float
    busy_fraction: float


@dataclass(frozen=True, slots=True)
class SourceReading:
    """Host energy used since the previous reading (joules, never negative).

    ``zones`` breaks the figure down where the source can (RAPL zone → joules);
    it is informative only, the attribution uses ``energy_joules``. A baseline
    reading (the first one, or the first after ``reset_baseline``) covers no interval.
    """

    energy_joules: float
    zones: Mapping[str, float] = field(default_factory=dict)
    is_baseline: bool = False


@runtime_checkable
class EnergySource(Protocol):
    """A meter of whole-host energy.

    ``label`` is the value of the ``source`` label on every exported series
    (``rapl``, ``scaphandre`` or ``estimate``). The first ``read`` only sets the
    baseline and returns zero joules.
    """

    @property
    def label(self) -> str: ...

    def describe(self) -> str:
        """One line for the start-up log saying exactly what is measured and from where."""
        ...

    def read(self, window: SampleWindow) -> SourceReading: ...

    def reset_baseline(self) -> None:
        """Forget the previous reading, so the next ``read`` starts a new baseline."""
        ...
