"""The ``wattvisor`` command as a user runs it: exit codes, messages, JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_up_says_which_libvirt_it_uses_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattvisor.cli", "up"],
        env=_env(tmp_path, COLUMNS="200"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C" in line:
            break
    proc.send_signal(signal.SIGTERM)
    output = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=30) == 0, output
    assert "libvirt: test:///default (configured by host.libvirt_uri)" in output
    assert "host layer only" in output  # it does not pretend to serve more
    assert "stopped" in output


@pytest.mark.parametrize("command", [["xml", "--help"], ["host", "--help"], ["--version"]])
def test_help_and_version_work_without_settings(command: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, command, env=_env(tmp_path, WATTVISOR_HOST__VIRT_TYPE="xen"))
    assert result.exit_code == 0, result.output
