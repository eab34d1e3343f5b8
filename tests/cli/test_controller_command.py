"""``wattvisor controller``: one replica of a fleet on a shared PostgreSQL store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from wattvisor.cli.main import app

try:
    from support.postgres import PostgresServer
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import PostgresServer  # type: ignore[no-redef]

runner = CliRunner()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTVISOR_")}
    env.update({"WATTVISOR_DATA_DIR": str(tmp_path / "data"), **extra})
    return env


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


def test_controller_refuses_a_store_controllers_cannot_share_naming_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["controller", "--port", str(_free_port())], env=_env(tmp_path))
    assert result.exit_code == 1
    assert "store.url scheme 'sqlite' cannot be shared by controllers" in result.output
    assert "wattvisor up" in result.output
    assert not (tmp_path / "data" / "wattvisor.db").exists()  # nothing was written


def test_two_controllers_serve_one_store_and_stop_on_sigterm(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()
    env = _env(tmp_path, COLUMNS="250", WATTVISOR_STORE__URL=url)
    ports = [_free_port(), _free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "wattvisor.cli", "controller", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for port in ports
    ]
    outputs = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            started = ""
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                started += line
                if not line or "Ctrl-C" in line:
                    break
            assert "Ctrl-C" in started, started
        minted = runner.invoke(app, ["token", "create", "--admin"], env=env)
        assert minted.exit_code == 0, minted.output
        auth = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        for port in ports:
            flavors = _get(f"http://127.0.0.1:{port}/v1/flavors", time.monotonic() + 30)
            assert flavors.status_code == 401
            listed = httpx.get(f"http://127.0.0.1:{port}/v1/flavors", headers=auth)
            assert listed.status_code == 200, listed.text
            assert {"tiny", "small"} <= {f["name"] for f in listed.json()}
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.stdout is not None
            outputs.append((proc.wait(timeout=60), proc.stdout.read()))
    for code, output in outputs:
        assert code == 0, output
        assert "stopped" in output
