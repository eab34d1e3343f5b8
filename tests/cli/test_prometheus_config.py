"""``wattvisor prometheus config``: the printed configuration passes ``promtool check
config``, and a real Prometheus running it finds a VM's exporter through the API,
scrapes it and the service metrics with the token, and drops the VM when it stops."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from cli.served_api import Served
from support.prometheus_server import (
    active_targets,
    check_config,
    log_tail,
    query_until,
    running_prometheus,
)
from wattvisor.auth import Principal, mint_token_from_file
from wattvisor.store import write_transaction
from wattvisor.store.compute_tables import ServerAddressRow

ALICE = Principal("alice", "proj-a", "member")
WAIT_S = 120.0


def _config(served: Served, tmp_path: Path, *args: str) -> tuple[Path, dict[str, Any]]:
    result = served.run("prometheus", "config", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Prometheus configuration for the wattvisor deployment")
    path = tmp_path / "prometheus.yml"
    path.write_text(result.stdout)
    body = "".join(line for line in result.stdout.splitlines(True) if not line.startswith("#"))
    return path, json.loads(body)


def _token_file(tmp_path: Path, name: str, token: str) -> Path:
    path = tmp_path / name
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def test_the_admin_configuration_passes_promtool_with_every_job_and_token(
    served: Served, tmp_path: Path
) -> None:
    api_token = _token_file(tmp_path, "api.token", "x")
    metrics_token = _token_file(tmp_path, "metrics.token", "y")
    path, config = _config(
        served, tmp_path, "--token-file", str(api_token), "--metrics-token-file",
        str(metrics_token),
    )  # fmt: skip
    assert "SUCCESS" in check_config(path)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert list(jobs) == [
        "wattvisor-agents", "wattvisor-local", "wattvisor-service", "wattvisor-vm-exporters"
    ]  # fmt: skip
    api = served.env["WATTVISOR_API__PORT"]
    assert jobs["wattvisor-agents"]["http_sd_configs"][0]["url"] == (
        f"http://127.0.0.1:{api}/v1/prometheus/agents"
    )
    assert jobs["wattvisor-agents"]["authorization"]["credentials_file"] == str(metrics_token)
    assert jobs["wattvisor-local"]["authorization"]["credentials_file"] == str(metrics_token)
    service = jobs["wattvisor-service"]
    assert service["static_configs"] == [{"targets": [f"127.0.0.1:{api}"]}]
    assert service["metrics_path"] == "/v1/prometheus/metrics"
    vms = jobs["wattvisor-vm-exporters"]
    assert vms["honor_labels"] is False  # a guest cannot claim another server's labels
    for sd in (vms["http_sd_configs"][0], jobs["wattvisor-agents"]["http_sd_configs"][0]):
        assert sd["authorization"] == {"type": "Bearer", "credentials_file": str(api_token)}


def test_the_member_configuration_has_only_the_vm_exporters(served: Served, tmp_path: Path) -> None:
    token = _token_file(tmp_path, "member.token", "x")
    path, config = _config(served, tmp_path, "--member", "--token-file", str(token))
    check_config(path)
    assert [job["job_name"] for job in config["scrape_configs"]] == ["wattvisor-vm-exporters"]


def test_a_bad_api_address_is_refused_naming_it(served: Served) -> None:
    result = served.run("prometheus", "config", "--url", "ftp://nowhere")
    assert result.exit_code == 2
    assert "ftp://nowhere" in result.output


class _GuestExporter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"wv_guest_up 1\n" if self.path == "/metrics" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def exporter_port() -> Iterator[int]:
    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GuestExporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    try:
        yield int(exporter.server_address[1])
    finally:
        exporter.shutdown()
        exporter.server_close()


def _server_at_loopback(served: Served, port: int) -> str:
    """An ACTIVE server with an exporter port whose address is loopback (the test driver
    runs no guest: the exporter stands in for the guest's, on this machine)."""
    compute = served.node.compute
    compute.catalog.create_flavor(
        "exported", 1, 64,
        extra_specs={"prometheus_exporter_port": str(port), "service_template": "7"},
    )  # fmt: skip
    server = compute.servers.create(ALICE, "web", "exported", "kernel")
    compute.servers.wait(server.uuid, WAIT_S)
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"
    with write_transaction(compute.servers.engine) as conn:
        conn.execute(
            insert(ServerAddressRow).values(
                network="loopback", slot=1, server_uuid=server.uuid, mac="fa:16:3e:00:00:01",
                ipv4="127.0.0.1", ipv6=None, created_at=datetime.now(UTC),
            )
        )  # fmt: skip
    return server.uuid


def test_a_real_prometheus_running_the_configuration_scrapes_a_vm_found_through_the_api(
    served: Served, tmp_path: Path, exporter_port: int
) -> None:
    server = _server_at_loopback(served, exporter_port)
    settings = served.node.settings
    admin = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
    token = _token_file(tmp_path, "api.token", admin)
    path, _config_body = _config(
        served, tmp_path, "--token-file", str(token), "--scrape-interval", "1",
        "--refresh-interval", "1",
    )  # fmt: skip
    with running_prometheus(path, tmp_path) as url:
        found = query_until(url, f'wv_guest_up{{instance="{server}"}}', WAIT_S)
        assert found, log_tail(tmp_path)
        labels = found[0]["metric"]
        assert labels["job"] == "wattvisor-vm-exporters"
        assert (labels["name"], labels["project"], labels["flavor"]) == (
            "web",
            "proj-a",
            "exported",
        )
        record = served.node.compute.servers.get(ALICE, server)
        assert labels["host"] == served.node.compute.hosts.get(record.host_uuid or "").name

        info = query_until(url, f'wattvisor_server_service_template{{instance="{server}"}}')
        assert info and float(info[0]["value"][1]) == 7.0, log_tail(tmp_path)

        served.node.compute.servers.stop(ALICE, server)
        served.node.compute.servers.wait(server, WAIT_S)
        left = active_targets(url, "wattvisor-vm-exporters", 0, WAIT_S)
        assert left == [], left
