"""``wattvisor_host_info{host, latitude, longitude}``: one series per pair, parsed back
from a real scrape."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wattvisor.energy import EnergySampler
from wattvisor.telemetry import (
    HOST_INFO,
    HostInfoCollector,
    HostPlace,
    make_metrics_registry,
    serve_metrics,
)

Labels = list[tuple[dict[str, str], float]]


def _host_info(text: str) -> Labels:
    found: Labels = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == HOST_INFO:
                found.append((dict(sample.labels), sample.value))
    return found


def _scrape(sampler: EnergySampler, place: HostPlace | None) -> Labels:
    registry = make_metrics_registry(sampler, extra=[HostInfoCollector(lambda: place)])
    return _host_info(generate_latest(registry).decode())


def test_each_pair_is_one_series_labelled_host_latitude_longitude(
    sampler: EnergySampler,
) -> None:
    place = HostPlace("edge-1", ("51.5142,-0.0931", "35.685,139.7514"))
    assert _scrape(sampler, place) == [
        ({"host": "edge-1", "latitude": "51.5142", "longitude": "-0.0931"}, 1.0),
        ({"host": "edge-1", "latitude": "35.685", "longitude": "139.7514"}, 1.0),
    ]


@pytest.mark.parametrize("place", [None, HostPlace("edge-1", ())])
def test_no_geolocation_exports_no_series(sampler: EnergySampler, place: HostPlace | None) -> None:
    assert _scrape(sampler, place) == []


def test_a_repeated_pair_is_one_series(sampler: EnergySampler) -> None:
    place = HostPlace("edge-1", ("1,2", "1,2"))
    assert _scrape(sampler, place) == [({"host": "edge-1", "latitude": "1", "longitude": "2"}, 1.0)]


def test_a_failing_source_keeps_the_other_series(sampler: EnergySampler) -> None:
    def broken() -> HostPlace:
        raise RuntimeError("store gone")

    registry = make_metrics_registry(sampler, extra=[HostInfoCollector(broken)])
    text = generate_latest(registry).decode()
    assert _host_info(text) == []
    assert "wattvisor_host_power_watts" in text


def test_the_listener_serves_it_with_the_energy_series(sampler: EnergySampler) -> None:
    place = HostPlace("edge-2", ("58.4167,15.6167",))
    served = serve_metrics(
        sampler, host="127.0.0.1", port=0, extra=[HostInfoCollector(lambda: place)]
    )
    try:
        text = httpx.get(served.url, timeout=10).text
    finally:
        served.stop()
    assert _host_info(text) == [
        ({"host": "edge-2", "latitude": "58.4167", "longitude": "15.6167"}, 1.0)
    ]
    assert "wattvisor_host_energy_joules_total" in text
