"""Host energy sources: RAPL powercap, a scaphandre endpoint, or a utilisation model.

``open_source`` turns ``energy.source`` into one :class:`EnergySource` and says
why it chose it, so ``wattvisor up`` can print which meter it uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattvisor.config.settings import EnergySettings
from wattvisor.energy.sources.base import (
    EnergyReadError,
    EnergySource,
    EnergySourceError,
    SampleWindow,
    SourceReading,
)
from wattvisor.energy.sources.model import UtilisationModelSource
from wattvisor.energy.sources.rapl import RaplSource, RaplZone, counter_delta, discover_zones
from wattvisor.energy.sources.scaphandre import (
    ScaphandreScrape,
    ScaphandreSource,
    parse_scaphandre_metrics,
)

__all__ = [
    "METER_SOURCES",
    "EnergyReadError",
    "EnergySource",
    "EnergySourceError",
    "OpenedSource",
    "RaplSource",
    "RaplZone",
    "SampleWindow",
    "ScaphandreScrape",
    "ScaphandreSource",
    "SourceReading",
    "UtilisationModelSource",
    "counter_delta",
    "discover_zones",
    "is_meter",
    "open_source",
    "parse_scaphandre_metrics",
]

# Sources that read a meter; the utilisation model ("estimate") only computes a figure.
METER_SOURCES = frozenset({RaplSource.label, ScaphandreSource.label})


def is_meter(label: str) -> bool:
    """True when figures labelled ``label`` were measured, not estimated (or absent)."""
    return label in METER_SOURCES


@dataclass(frozen=True, slots=True)
class OpenedSource:
    """The chosen source and a sentence for the start-up log explaining the choice."""

    source: EnergySource
    explanation: str


def _model(settings: EnergySettings) -> UtilisationModelSource:
    return UtilisationModelSource(settings.model_idle_watts, settings.model_max_watts)


def open_source(settings: EnergySettings) -> OpenedSource:
    """Open the source ``settings.source`` names; ``auto`` prefers a meter over the model.

    An explicitly named source that cannot be used raises :class:`EnergySourceError`
    with what to do; ``auto`` instead falls through and says why.
    """
    if settings.source == "rapl":
        rapl = RaplSource(settings.powercap_root)
        return OpenedSource(rapl, f"energy source: {rapl.describe()}")
    if settings.source == "scaphandre":
        if not settings.scaphandre_url:
            raise EnergySourceError(
                "energy.source is 'scaphandre' but energy.scaphandre_url is not set; set it "
                "to the exporter's URL, e.g. 'http://127.0.0.1:8080/metrics'"
            )
        scaph = ScaphandreSource(settings.scaphandre_url, timeout_s=settings.scaphandre_timeout_s)
        return OpenedSource(scaph, f"energy source: {scaph.describe()}")
    if settings.source == "model":
        model = _model(settings)
        return OpenedSource(model, f"energy source: {model.describe()}")

    reasons: list[str] = []
    try:
        rapl = RaplSource(settings.powercap_root)
        return OpenedSource(rapl, f"energy source (auto): {rapl.describe()}")
    except EnergySourceError as exc:
        reasons.append(f"RAPL unusable: {exc}")
    if settings.scaphandre_url:
        try:
            scaph = ScaphandreSource(
                settings.scaphandre_url, timeout_s=settings.scaphandre_timeout_s
            )
            return OpenedSource(scaph, f"energy source (auto): {scaph.describe()}")
        except EnergySourceError as exc:
            reasons.append(f"scaphandre unusable: {exc}")
    model = _model(settings)
    return OpenedSource(model, f"energy source (auto): {model.describe()}; " + "; ".join(reasons))
