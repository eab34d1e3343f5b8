"""The ``wattvisor`` command as a user runs it: exit codes, messages, JSON."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from wattvisor.cli.main import app

runner = CliRunner()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTVISOR_")}
    env.update({"WATTVISOR_DATA_DIR": str(tmp_path / "data"),
                "WATTVISOR_HOST__LIBVIRT_URI": "test:///default"})
    env.update(extra)
    return env


def test_host_traits_json_lists_traits_and_inventory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["host", "traits", "--json"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["uri"] == "test:///default"
    assert "COMPUTE_STORAGE_BUS_VIRTIO" in doc["traits"]
    assert doc["inventory"]["VCPU"] > 0
    assert any("static" in note for note in doc["notes"])


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
        app, ["--config", str(config), "host", "traits", "--json"], env=_env(tmp_path)
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


def test_up_serves_placement_and_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattvisor.cli", "up", "--port", str(port)],
        env=_env(tmp_path, COLUMNS="250", WATTVISOR_ENERGY__INTERVAL_S="0.5",
                 WATTVISOR_ENERGY__SOURCE="model"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        base = f"http://127.0.0.1:{port}"
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
            f"{base}/placement/resource_providers/{provider['uuid']}/traits", headers=auth
        )
        assert "COMPUTE_STORAGE_BUS_VIRTIO" in traits.json()["traits"]
        metrics = ""
        deadline = time.monotonic() + 30
        while "wattvisor_host_power_watts" not in metrics and time.monotonic() < deadline:
            metrics = _get(f"{base}/metrics", deadline).text
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
    assert "host.share_local_fs not configured: sharing" in output  # the embedded default
    assert "estimate" in output  # no RAPL here: the CPU model, said plainly
    assert "stopped" in output


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
