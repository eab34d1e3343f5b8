"""A real Prometheus server (Debian package ``prometheus``) on loopback for tests.

``running_prometheus`` checks the configuration with ``promtool check config`` first,
then runs the server on a free loopback port with its own TSDB folder, and stops it
(by its pid) afterwards. Every wait is bounded.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def check_config(config: Path) -> str:
    """``promtool check config``'s output; fails the test when promtool refuses the file."""
    checked = subprocess.run(
        [PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0 and "SUCCESS" in output, output
    return output


@contextmanager
def running_prometheus(config: Path, directory: Path) -> Iterator[str]:
    """The URL of a Prometheus running ``config`` (checked by promtool first)."""
    check_config(config)
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS, f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def log_tail(directory: Path, chars: int = 3000) -> str:
    path = directory / "prometheus.log"
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def wait_for(
    url: str, path: str, params: dict[str, str], found: Callable[[Any], bool], timeout_s: float
) -> Any:
    """GET ``url+path`` until ``found(data)`` holds for its ``data``; None after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    data: Any = None
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"{url}{path}", params=params, timeout=5)
            if reply.status_code == 200:
                data = reply.json()["data"]
                if found(data):
                    return data
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    return None


def query_until(url: str, promql: str, timeout_s: float = 120) -> list[dict[str, Any]]:
    """The result of ``promql`` once it is not empty (empty list after ``timeout_s``)."""
    data = wait_for(url, "/api/v1/query", {"query": promql}, lambda d: bool(d["result"]), timeout_s)
    return [] if data is None else list(data["result"])


def active_targets(url: str, job: str, count: int, timeout_s: float = 120) -> list[dict[str, Any]]:
    """The active targets of ``job`` once there are ``count`` of them that are up."""

    def ready(data: Any) -> bool:
        up = [t for t in data["activeTargets"] if t["labels"].get("job") == job]
        return len(up) == count and all(t["health"] == "up" for t in up)

    data = wait_for(url, "/api/v1/targets", {"state": "active"}, ready, timeout_s)
    if data is None:
        data = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]
    return [t for t in data["activeTargets"] if t["labels"].get("job") == job]
