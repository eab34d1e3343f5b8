"""``dashboards/wattvisor.json`` asks Prometheus only for series the exporter serves.

The names come from a real scrape of the exporter's ``/metrics`` over HTTP, on a host
with VMs, projects and a geolocation, so every family has data."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from wattvisor.energy import EnergySampler
from wattvisor.telemetry import HostInfoCollector, HostPlace, serve_metrics

DASHBOARD = Path(__file__).parents[2] / "dashboards" / "wattvisor.json"
METRIC = re.compile(r"\bwattvisor_[A-Za-z0-9_]+")


def _queries(node: Any) -> Iterator[str]:
    """Every PromQL string in the dashboard: panel targets and variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def _scraped_names(sampler: EnergySampler) -> set[str]:
    place = HostPlace("edge-1", ("48.85,2.35",))
    served = serve_metrics(
        sampler, host="127.0.0.1", port=0, extra=[HostInfoCollector(lambda: place)]
    )
    try:
        text = httpx.get(served.url, timeout=10).text
    finally:
        served.stop()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_every_metric_of_the_dashboard_is_served(sampler: EnergySampler) -> None:
    served = _scraped_names(sampler)
    assert "wattvisor_vm_power_watts" in served  # the scrape had VMs in it
    queries = list(_queries(json.loads(DASHBOARD.read_text())))
    used = {name for query in queries for name in METRIC.findall(query)}
    assert len(used) >= 8, used
    assert used - served == set(), f"not served by the exporter: {sorted(used - served)}"


def test_the_check_catches_a_name_the_exporter_does_not_serve(sampler: EnergySampler) -> None:
    served = _scraped_names(sampler)
    assert set(METRIC.findall("rate(wattvisor_vm_energy_joules[5m])")) - served == {
        "wattvisor_vm_energy_joules"
    }
