"""A real Prometheus server scrapes the exporter and answers PromQL about VMs."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from wattvisor.energy import EnergySampler
from wattvisor.telemetry import make_metrics_app, prometheus_scrape_job

PROMETHEUS = "/usr/bin/prometheus"
BUSY_VM = "aaaaaaaa-1111-4111-8111-000000000001"
IDLE_VM = "bbbbbbbb-2222-4222-8222-000000000002"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def exporter_port(sampler: EnergySampler) -> Iterator[int]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(make_metrics_app(sampler), host="127.0.0.1", port=port,
                       log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "exporter did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def prometheus_url(tmp_path: Path, exporter_port: int) -> Iterator[str]:
    assert shutil.which(PROMETHEUS) or Path(PROMETHEUS).exists(), "Debian package prometheus"
    config = tmp_path / "prometheus.yml"
    job = prometheus_scrape_job([f"127.0.0.1:{exporter_port}"], scrape_interval_s=1)
    config.write_text(json.dumps({"scrape_configs": [job]}))
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
            if reply.status_code == 200:
                result: list[dict[str, Any]] = reply.json()["data"]["result"]
                if result:
                    return result
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prometheus returned nothing for {promql!r} within 90 s")


def test_prometheus_scrapes_vm_series_and_answers_promql(prometheus_url: str) -> None:
    vms = _query(prometheus_url, 'wattvisor_vm_power_watts{job="wattvisor"}')
    by_instance = {row["metric"]["instance"]: row for row in vms}
    assert set(by_instance) == {BUSY_VM, IDLE_VM}
    busy = by_instance[BUSY_VM]["metric"]
    assert (busy["domain"], busy["project"], busy["source"]) == ("instance-busy", "project-a",
                                                                 "rapl")
    assert float(by_instance[BUSY_VM]["value"][1]) == pytest.approx(80.0 * 3 / 4.4 / 2)

    host = _query(prometheus_url, "wattvisor_host_power_watts")
    assert host[0]["metric"]["instance"].startswith("127.0.0.1:")

    per_project = _query(prometheus_url,
                         "sum by (project) (wattvisor_vm_energy_joules_total)")
    totals = {row["metric"]["project"]: float(row["value"][1]) for row in per_project}
    assert totals == {"project-a": pytest.approx(80.0 * 3 / 4.4),
                      "project-b": pytest.approx(80.0 / 4.4)}
