"""A controller on PostgreSQL and namespace hosts that join it by running ``wattvisor agent``.

The fleet tests (tests/e2e/test_fleet_*.py) share these parts: :func:`serve_controller`
builds and serves a controller whose own (``test:///default``) host takes no servers,
:class:`AgentProcess` runs a real agent inside a :class:`NamespaceHost` (joined with a
join token on its first start, with its stored credentials afterwards), and
:class:`FakeRapl` gives a host a powercap tree in the kernel's layout whose package
counter keeps growing, since this machine has no RAPL.

Every wait is bounded, and names what it waited for together with the tail of the
agents' logs, so a failure says where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from api.served_app import serving
from support.namespace_hosts import NamespaceFleet, NamespaceHost
from support.postgres import PostgresServer
from support.synthetic_host import SyntheticPowercap
from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token_from_file
from wattvisor.config import load_settings

AGENT_PORT = 8775
METRICS_PORT = 9464
DOWN_AFTER_S = 3.0
HEARTBEAT_S = 0.5
WAIT_S = 90.0
JOIN_WAIT_S = 240.0
"""An agent's first start imports, opens its libvirtd and samples once before it joins:
on a loaded machine that alone can take minutes."""


class FakeRapl:
    """A powercap tree (package ``intel-rapl:0`` and its ``core`` sub-zone) whose
    counters grow by ``watts`` every ``interval_s``, like a package drawing that power;
    ``root`` is what the agent's ``energy.powercap_root`` points at."""

    def __init__(self, base: Path, *, watts: float = 40.0, interval_s: float = 0.2) -> None:
        self.powercap = SyntheticPowercap(base)
        self.powercap.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000)
        self.powercap.add_zone("intel-rapl:0:0", "core", energy_uj=500_000)
        self.root = self.powercap.root
        self._step_uj = int(watts * interval_s * 1e6)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-rapl", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.powercap.add_energy("intel-rapl:0", self._step_uj)
            self.powercap.add_energy("intel-rapl:0:0", self._step_uj // 2)

    def start(self) -> FakeRapl:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)


@dataclass
class AgentProcess:
    """``wattvisor agent`` inside ``host``; ``settings`` are extra ``WATTVISOR_*`` values."""

    host: NamespaceHost
    directory: Path
    controller_url: str
    settings: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory.with_name(f"{self.directory.name}.log")

    @property
    def instances(self) -> Path:
        """Where the agent keeps each server's files (console log, config drive, disks)."""
        return self.directory / "instances"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host.address}:{METRICS_PORT}/metrics"

    def start(self, join_token: str | None = None) -> None:
        argv = [sys.executable, "-m", "wattvisor.cli", "agent"]
        if join_token is not None:
            argv += ["--controller", self.controller_url, "--join-token", join_token]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "WATTVISOR_DATA_DIR": str(self.directory),
            "WATTVISOR_AGENT__LISTEN": f"{self.host.address}:{AGENT_PORT}",
            "WATTVISOR_AGENT__HEARTBEAT_S": str(HEARTBEAT_S),
            "WATTVISOR_METRICS__LISTEN": f"{self.host.address}:{METRICS_PORT}",
            "WATTVISOR_ENERGY__SOURCE": "model",
            "WATTVISOR_HOST__VIRT_TYPE": "qemu",
            **self.settings,
        }
        env.pop("WATTVISOR_CONFIG", None)
        with self.log.open("ab") as log:
            self.process = self.host.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the agent."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the agent of {self.host.name} exited:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def domains(self) -> dict[str, str]:
        """Every domain of the host's own libvirtd, uuid -> state, read from inside the
        host (so it works while the host is cut off the network)."""
        script = (
            "import json, libvirt\n"
            "c = libvirt.open('qemu:///system')\n"
            "states = {1: 'running', 3: 'paused', 5: 'shutoff'}\n"
            "print(json.dumps({d.UUIDString(): states.get(d.state()[0], str(d.state()[0]))"
            " for d in c.listAllDomains()}))\n"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        result = self.host.run([sys.executable, "-c", script], env=env, check=True)
        found: dict[str, str] = json.loads(result.stdout)
        return {uuid.lower(): state for uuid, state in found.items()}

    def mount_points(self) -> list[str]:
        """The mount points of the host's mount namespace (the agent's shares live there)."""
        assert self.host.anchor_pid is not None
        table = Path(f"/proc/{self.host.anchor_pid}/mountinfo").read_text()
        return [line.split()[4] for line in table.splitlines() if len(line.split()) > 4]


@dataclass
class Controller:
    """A served controller and an admin's HTTP client for it."""

    node: AllInOne
    url: str
    http: httpx.Client
    agents: list[AgentProcess] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.http.request(method, f"{self.url}{path}", json=body)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
        """``check()`` until it gives a true value (returned); fails after ``timeout_s``,
        or at once when an agent that should run exited."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for agent in self.agents:
                agent.check_alive()
            value = check()
            if value:
                return value
            time.sleep(0.2)
        logs = "\n".join(f"--- {a.host.name}:\n{a.log_tail()}" for a in self.agents)
        raise AssertionError(f"{what} not within {timeout_s} s; agent logs:\n{logs}")

    def host_view(self, host_uuid: str) -> dict[str, Any] | None:
        found = [h for h in self.call("GET", "/v1/hosts") if h["id"] == host_uuid]
        return found[0] if found else None

    def server(self, server_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/servers/{server_id}")
        return result

    def settled(self, server_id: str, timeout_s: float = WAIT_S) -> dict[str, Any]:
        """The server once it is out of BUILD and has no task running."""
        return self.wait(f"server {server_id} to settle", lambda: (  # type: ignore[no-any-return]
            (view := self.server(server_id))["status"] != "BUILD" and view["task"] is None
            and view
        ), timeout_s)  # fmt: skip

    def join(self, *agents: AgentProcess, timeout_s: float = JOIN_WAIT_S) -> list[dict[str, Any]]:
        """Start ``agents`` side by side, each with a fresh join token; their hosts' views
        once every one is up."""
        for agent in agents:
            issued = self.call("POST", "/v1/hosts/join-tokens", {"ttl": "10m"}, status=201)
            self.agents.append(agent)
            agent.start(issued["token"])
        views = []
        for agent in agents:
            views.append(self.wait(
                f"host {agent.host.name} to join and be up",
                lambda a=agent: (
                    (view := self.host_view(a.host.host_uuid)) is not None
                    and view["state"] == "up"
                    and view
                ),
                timeout_s,
            ))  # fmt: skip
            # A host is up from its first heartbeat, so its agent must take calls by then.
            with socket.create_connection((agent.host.address, AGENT_PORT), timeout=5):
                pass
        return views


@contextlib.contextmanager
def serve_controller(
    namespace_fleet: NamespaceFleet,
    postgres_server: PostgresServer,
    directory: Path,
    **overrides: Any,
) -> Iterator[Controller]:
    """A controller on a fresh PostgreSQL database, served on the hosts' bridge so the
    agents reach it. Its own host is disabled: every server goes to an agent's host."""
    assert namespace_fleet.subnet is not None
    gateway = str(next(namespace_fleet.subnet.hosts()))
    settings = load_settings(
        data_dir=directory,
        store={"url": postgres_server.create_database()},
        host={"libvirt_uri": "test:///default", "virt_type": "qemu",
              "instance_name_template": f"wvfleet-{secrets.token_hex(3)}-%04x"},
        energy={"source": "model"},
        compute={"ready_image": False, "workers": 2, "power_sync_interval_s": 0.5},
        agent={"down_after_s": DOWN_AFTER_S, "call_timeout_s": 60},
        metrics={"listen": "127.0.0.1:0"},
        **overrides,
    )  # fmt: skip
    node = AllInOne.build(settings)
    node.start()
    token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
    http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    controller: Controller | None = None
    try:
        with serving(node.app, host=gateway) as port:
            controller = Controller(node, f"http://{gateway}:{port}", http)
            controller.call("POST", f"/v1/hosts/{node.provider_uuid}/disable",
                            {"reason": "servers go to the agents' hosts"})  # fmt: skip
            yield controller
    finally:
        if controller is not None:
            for agent in controller.agents:
                agent.stop()
        http.close()
        node.stop()


def new_agent(
    host: NamespaceHost, directory: Path, controller: Controller, settings: dict[str, str]
) -> AgentProcess:
    directory.parent.mkdir(parents=True, exist_ok=True)
    return AgentProcess(host, directory, controller.url, settings)


def share_settings(directory: Path, tag: str) -> dict[str, str]:
    """Agent settings that share ``directory`` read-only with power-metrics guests."""
    directory.mkdir(parents=True, exist_ok=True)
    return {"WATTVISOR_HOST__SHARE_LOCAL_FS": json.dumps({str(directory): tag})}


def rapl_settings(rapl: FakeRapl, interval_s: float = 0.5) -> dict[str, str]:
    """Agent settings that measure with RAPL (a :class:`FakeRapl` tree) and push often."""
    return {
        "WATTVISOR_ENERGY__SOURCE": "rapl",
        "WATTVISOR_ENERGY__POWERCAP_ROOT": str(rapl.root),
        "WATTVISOR_ENERGY__INTERVAL_S": str(interval_s),
        "WATTVISOR_ENERGY__PUSH_INTERVAL_S": "1",
    }
