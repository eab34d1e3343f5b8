"""Host power scraped from a scaphandre Prometheus exporter already running on the host.

Sites that run scaphandre keep it; wattvisor reads its host figure instead of
opening RAPL a second time. scaphandre exports power (µW), not energy, so energy
is power * interval, which is what scaphandre itself does between two records.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from wattvisor.energy.sources.base import (
    EnergyReadError,
    EnergySourceError,
    SampleWindow,
    SourceReading,
)

HOST_POWER = "scaph_host_power_microwatts"
PROCESS_POWER = "scaph_process_power_consumption_microwatts"


@dataclass(frozen=True, slots=True)
class ScaphandreScrape:
    """The two series wattvisor uses from one scrape, in watts."""

    host_watts: float
    process_watts: Mapping[int, float]


def parse_scaphandre_metrics(text: str, *, url: str = "") -> ScaphandreScrape:
    """Pick host and per-process power out of scaphandre's exposition text."""
    host: float | None = None
    processes: dict[int, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        where = url or "scaphandre endpoint"
        raise EnergyReadError(f"{where} did not return metrics: {exc}") from exc
    for family in families:
        for sample in family.samples:
            if sample.name == HOST_POWER:
                host = (host or 0.0) + sample.value / 1e6
            elif sample.name == PROCESS_POWER:
                pid = sample.labels.get("pid", "")
                if pid.isdigit():
                    processes[int(pid)] = processes.get(int(pid), 0.0) + sample.value / 1e6
    if host is None:
        raise EnergyReadError(
            f"{url or 'scaphandre endpoint'} has no {HOST_POWER} series; is it a scaphandre "
            "Prometheus exporter (`scaphandre prometheus`)?"
        )
    return ScaphandreScrape(host_watts=host, process_watts=processes)


class ScaphandreSource:
    """Host energy integrated from a scaphandre endpoint's host power."""

    label = "scaphandre"

    def __init__(self, url: str, *, timeout_s: float = 1.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise EnergySourceError(
                f"energy.scaphandre_url {url!r} is not an http(s) URL; use e.g. "
                "'http://127.0.0.1:8080/metrics'"
            )
        self.url = url
        self._timeout_s = timeout_s
        # The exporter is local to the host: never route it through an http_proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._baseline = True
        self.last: ScaphandreScrape | None = None
        try:
            self.scrape()
        except EnergyReadError as exc:
            raise EnergySourceError(f"{exc}; check energy.scaphandre_url") from exc

    def describe(self) -> str:
        return f"scaphandre exporter at {self.url} ({HOST_POWER} x interval)"

    def reset_baseline(self) -> None:
        self._baseline = True

    def scrape(self) -> ScaphandreScrape:
        """One GET of the endpoint, bounded by the timeout."""
        try:
            with self._opener.open(self.url, timeout=self._timeout_s) as response:
                text = response.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise EnergyReadError(f"cannot scrape {self.url}: {exc}") from exc
        self.last = parse_scaphandre_metrics(text, url=self.url)
        return self.last

    def read(self, window: SampleWindow) -> SourceReading:
        scrape = self.scrape()
        if self._baseline:
            self._baseline = False
            return SourceReading(energy_joules=0.0, is_baseline=True)
        return SourceReading(energy_joules=max(scrape.host_watts, 0.0) * window.interval_s)
