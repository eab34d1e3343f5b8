"""``wattvisor_host_info{host, latitude, longitude} 1``: where a host is, for map panels.

One series per ``latitude,longitude`` pair of the host (a host with two public addresses
in two places is on the map twice); none while its geolocation is empty. Each agent
exports its own host, as the controller last answered it, so Prometheus, which already
scrapes every agent, gets each host once whichever controllers run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

HOST_INFO = "wattvisor_host_info"


@dataclass(frozen=True, slots=True)
class HostPlace:
    """A host's name and its ``latitude,longitude`` pairs."""

    host: str
    pairs: Sequence[str]


class HostInfoCollector(Collector):
    """Renders what ``place()`` answers at scrape time (None: nothing known yet)."""

    def __init__(self, place: Callable[[], HostPlace | None]) -> None:
        self._place = place

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            HOST_INFO,
            "Where the host is: one series per latitude,longitude pair of its geolocation "
            "(looked up from its public addresses, or set by an admin); always 1.",
            labels=["host", "latitude", "longitude"],
        )
        try:
            place = self._place()
        except Exception:
            log.exception("the host's geolocation could not be read for /metrics")
            place = None
        if place is not None:
            seen: set[tuple[str, str]] = set()
            for pair in place.pairs:
                latitude, sep, longitude = pair.partition(",")
                if not sep or (latitude, longitude) in seen:
                    continue
                seen.add((latitude, longitude))
                info.add_metric([place.host, latitude, longitude], 1.0)
        yield info
