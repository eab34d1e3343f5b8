"""A real Prometheus server scrapes the metrics listener (with its bearer token from a
``credentials_file``) and answers PromQL about VMs."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from wattvisor.energy import EnergySampler
from wattvisor.telemetry import prometheus_scrape_job, serve_metrics

PROMETHEUS = "/usr/bin/prometheus"
BUSY_VM = "aaaaaaaa-1111-4111-8111-000000000001"
IDLE_VM = "bbbbbbbb-2222-4222-8222-000000000002"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "metrics.token"
    path.write_text(secrets.token_urlsafe(32) + "\n")
    path.chmod(0o600)  # Prometheus runs as this test's user here
    return path


@pytest.fixture
def exporter_port(sampler: EnergySampler, token_file: Path) -> Iterator[int]:
    """The product's own metrics listener, asking for the token."""
    listener = serve_metrics(sampler, host="127.0.0.1", port=0, bearer_token_file=token_file)
    try:
        assert httpx.get(listener.url).status_code == 401
        yield listener.port
    finally:
        listener.stop()


@pytest.fixture
def prometheus_url(tmp_path: Path, exporter_port: int, token_file: Path) -> Iterator[str]:
    assert shutil.which(PROMETHEUS) or Path(PROMETHEUS).exists(), "Debian package prometheus"
    config = tmp_path / "prometheus.yml"
    job = prometheus_scrape_job(
        [f"127.0.0.1:{exporter_port}"], scrape_interval_s=1, credentials_file=token_file
    )
    config.write_text(json.dumps({"scrape_configs": [job]}))
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
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
    assert (busy["domain"], busy["project"], busy["source"]) == (
        "instance-busy",
        "project-a",
        "rapl",
    )
    assert float(by_instance[BUSY_VM]["value"][1]) == pytest.approx(80.0 * 3 / 4.4 / 2)

    host = _query(prometheus_url, "wattvisor_host_power_watts")
    assert host[0]["metric"]["instance"].startswith("127.0.0.1:")

    per_project = _query(prometheus_url, "sum by (project) (wattvisor_vm_energy_joules_total)")
    totals = {row["metric"]["project"]: float(row["value"][1]) for row in per_project}
    assert totals == {
        "project-a": pytest.approx(80.0 * 3 / 4.4),
        "project-b": pytest.approx(80.0 / 4.4),
    }
