"""The ``wattvisor`` command as a user runs it: exit codes, messages, JSON."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from wattvisor.cli.main import app

runner = CliRunner()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTVISOR_")}
    env.update(
        {
            "WATTVISOR_DATA_DIR": str(tmp_path / "data"),
            "WATTVISOR_HOST__LIBVIRT_URI": "test:///default",
        }
    )
    env.update(extra)
    return env


def test_host_traits_local_json_lists_traits_and_inventory_labelled_as_local(
    tmp_path: Path,
) -> None:
    result = runner.invoke(app, ["host", "traits", "--local", "--json"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["source"], doc["uri"]) == ("local", "test:///default")
    assert "COMPUTE_STORAGE_BUS_VIRTIO" in doc["traits"]
    assert doc["inventory"]["VCPU"] > 0
    assert any("static" in note for note in doc["notes"])
    assert any("not asked of the running service" in note for note in doc["notes"])
    table = runner.invoke(app, ["host", "traits", "--local"], env=_env(tmp_path))
    assert "traits discovered here from this shell's settings" in table.stdout
    assert "COMPUTE_SHARE_LOCAL_FS is not listed" in table.stdout


def test_host_traits_without_a_service_says_so_and_offers_local(tmp_path: Path) -> None:
    result = runner.invoke(app, ["host", "traits"], env=_env(tmp_path))
    assert result.exit_code == 1
    assert "no token" in result.output and "host traits --local" in result.output


def test_bad_setting_is_refused_with_value_and_accepted_values(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["host", "traits"], env=_env(tmp_path, WATTVISOR_HOST__VIRT_TYPE="xen")
    )
    assert result.exit_code == 2
    assert "host.virt_type" in result.output and "'xen'" in result.output
    assert "'kvm' or 'qemu'" in result.output


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = runner.invoke(app, ["--config", str(missing), "host", "traits"], env=_env(tmp_path))
    assert result.exit_code == 2
    assert str(missing) in result.output


def test_config_file_settings_reach_the_host(tmp_path: Path) -> None:
    config = tmp_path / "wattvisor.toml"
    config.write_text('[host]\nvirt_type = "qemu"\n')
    result = runner.invoke(
        app, ["--config", str(config), "host", "traits", "--local", "--json"], env=_env(tmp_path)
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["virt_type"] == "qemu"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, deadline: float) -> httpx.Response:
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=5)
    except httpx.ConnectError:
        return True
    return False


def test_up_serves_placement_and_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, metrics_port = _free_port(), _free_port()
    token_file = tmp_path / "metrics.token"
    token_file.write_text("scrape-token\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattvisor.cli", "up", "--port", str(port)],
        env=_env(
            tmp_path,
            COLUMNS="250",
            WATTVISOR_ENERGY__INTERVAL_S="0.5",
            WATTVISOR_ENERGY__SOURCE="model",
            WATTVISOR_METRICS__LISTEN=f"127.0.0.1:{metrics_port}",
            WATTVISOR_METRICS__BEARER_TOKEN_FILE=str(token_file),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    base = f"http://127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        anonymous = _get(f"{base}/placement/resource_providers", time.monotonic() + 30)
        assert anonymous.status_code == 401
        assert anonymous.json()["errors"][0]["code"] == "missing_credentials"  # Placement's shape
        minted = runner.invoke(app, ["token", "create", "--admin"], env=_env(tmp_path))
        assert minted.exit_code == 0, minted.output
        auth = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        providers = httpx.get(f"{base}/placement/resource_providers", headers=auth)
        assert providers.status_code == 200, providers.text
        [provider] = providers.json()["resource_providers"]
        traits = httpx.get(
            f"{base}/placement/resource_providers/{provider['uuid']}/traits",
            headers={**auth, "OpenStack-API-Version": "placement 1.6"},  # traits came in 1.6
        )
        assert "COMPUTE_STORAGE_BUS_VIRTIO" in traits.json()["traits"]
        assert httpx.get(f"{base}/metrics").status_code == 404  # not on the API's port
        assert httpx.get(metrics_url).status_code == 401
        scrape = {"Authorization": "Bearer scrape-token"}
        metrics = ""
        deadline = time.monotonic() + 30
        while "wattvisor_host_power_watts" not in metrics and time.monotonic() < deadline:
            metrics = httpx.get(metrics_url, headers=scrape).text
            time.sleep(0.3)
        assert 'wattvisor_energy_source_info{source="estimate"}' in metrics
        assert "wattvisor_host_power_watts" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        output = "".join(lines) + proc.stdout.read()
        code = proc.wait(timeout=30)
    assert code == 0, output
    assert "libvirt: test:///default (configured by host.libvirt_uri)" in output
    assert "placement API at /placement" in output
    assert f"Prometheus metrics at {metrics_url} (bearer token from {token_file})" in output
    assert "scrape-token" not in output
    assert "host.share_local_fs not configured: sharing" in output  # the embedded default
    assert "estimate" in output  # no RAPL here: the CPU model, said plainly
    # The embedded default (a NAT network; on the test driver nothing reaches iptables).
    assert (
        "network: servers get one interface on wattvisor (nat, 10.251.0.0/20, "
        "fd57:7476:6973::/64), static addresses on their config drive" in output
    )
    assert "stopped" in output
    assert _refused(f"{base}/v1/flavors") and _refused(metrics_url)
    _assert_startup_says_each_thing_once(output)


def test_up_refuses_a_busy_metrics_address_before_starting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = runner.invoke(
            app, ["up", "--port", str(_free_port())],
            env=_env(tmp_path, COLUMNS="250", WATTVISOR_METRICS__LISTEN=f"127.0.0.1:{taken}"),
        )  # fmt: skip
    assert result.exit_code == 1
    assert f"metrics.listen http://127.0.0.1:{taken}/metrics is already in use" in result.output
    assert not (tmp_path / "data" / "wattvisor.db").exists()  # nothing was started


def test_up_refuses_metrics_on_the_api_port_and_a_missing_token_file(tmp_path: Path) -> None:
    port = _free_port()
    same = runner.invoke(
        app,
        ["up", "--port", str(port)],
        env=_env(tmp_path, COLUMNS="250", WATTVISOR_METRICS__LISTEN=f"127.0.0.1:{port}"),
    )
    assert same.exit_code == 1 and "is the API's own address" in same.output
    missing = tmp_path / "no.token"
    result = runner.invoke(
        app, ["up", "--port", str(port)],
        env=_env(tmp_path, COLUMNS="250", WATTVISOR_METRICS__LISTEN="127.0.0.1:0",
                 WATTVISOR_METRICS__BEARER_TOKEN_FILE=str(missing)),
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"metrics.bearer_token_file '{missing}' cannot be read" in result.output
    assert not (tmp_path / "data" / "wattvisor.db").exists()


def _assert_startup_says_each_thing_once(output: str) -> None:
    startup = output.split("press Ctrl-C to stop")[0]
    # Log lines start with a time column ("[12/02/26 05:53:54] INFO ..."), blank when repeated.
    lines = [re.sub(r"^\s*(\[[^]]*\])?\s*", "", line) for line in startup.splitlines()]
    repeated = [line for line, n in Counter(filter(None, lines)).items() if n > 1]
    assert not repeated, startup
    assert startup.count("energy source") == 1, startup
    assert "connected to libvirt" not in startup, startup  # the "libvirt:" line says it
    for alembic_line in ("Context impl", "Will assume", "Running upgrade"):
        assert alembic_line not in output, output


def test_up_refuses_a_busy_port_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["up", "--port", str(port)], env=_env(tmp_path))
    assert result.exit_code == 1
    assert f"127.0.0.1:{port} is already in use" in result.output


@pytest.mark.parametrize("command", [["xml", "--help"], ["host", "--help"], ["--version"]])
def test_help_and_version_work_without_settings(command: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, command, env=_env(tmp_path, WATTVISOR_HOST__VIRT_TYPE="xen"))
    assert result.exit_code == 0, result.output
