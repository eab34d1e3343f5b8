"""End to end: a controller on PostgreSQL and a host that joins by running ``wattvisor agent``.

The host is a namespace host (its own libvirtd as ``qemu:///system`` inside it); the
agent runs there as a real process, joins with a join token, and the controller
drives it only over HTTP. A TCG guest is built there, liveness follows the agent's
heartbeats, and a host that comes back is reconciled with the store.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from api.served_app import serving
from support.namespace_hosts import NamespaceFleet, NamespaceHost
from support.postgres import PostgresServer
from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token_from_file
from wattvisor.config import load_settings
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

AGENT_PORT = 8775
DOWN_AFTER_S = 3.0
WAIT_S = 90.0


@dataclass
class Fleet:
    node: AllInOne
    url: str
    http: httpx.Client
    host: NamespaceHost
    agent_dir: Path
    agent_log: Path
    agent: subprocess.Popen[bytes] | None = None

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.http.request(method, f"{self.url}{path}", json=body)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    def start_agent(self, join_token: str | None = None) -> None:
        argv = [sys.executable, "-m", "wattvisor.cli", "agent"]
        if join_token is not None:
            argv += ["--controller", self.url, "--join-token", join_token]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "WATTVISOR_DATA_DIR": str(self.agent_dir),
            "WATTVISOR_AGENT__LISTEN": f"{self.host.address}:{AGENT_PORT}",
            "WATTVISOR_AGENT__HEARTBEAT_S": "0.5",
            "WATTVISOR_ENERGY__SOURCE": "model",
            "WATTVISOR_HOST__VIRT_TYPE": "qemu",
        }
        env.pop("WATTVISOR_CONFIG", None)
        log = self.agent_log.open("ab")
        self.agent = self.host.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait(10)
        self.agent = None

    def wait(self, what: str, check: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.agent is not None and self.agent.poll() is not None:
                raise AssertionError(f"the agent exited: {self.agent_log.read_text()[-3000:]}")
            value = check()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"{what} not within {WAIT_S} s; agent log:\n"
                             f"{self.agent_log.read_text()[-3000:]}")  # fmt: skip

    def host_view(self) -> dict[str, Any] | None:
        hosts = self.call("GET", "/v1/hosts")
        found = [h for h in hosts if h["id"] == self.host.host_uuid]
        return found[0] if found else None

    def server(self, server_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/servers/{server_id}")
        return result


@pytest.fixture
def fleet(
    namespace_fleet: NamespaceFleet,
    make_namespace_hosts: Callable[[int], list[NamespaceHost]],
    postgres_server: PostgresServer,
    world_readable_tmp: Path,
) -> Iterator[Fleet]:
    [host] = make_namespace_hosts(1)
    assert namespace_fleet.subnet is not None
    gateway = str(next(namespace_fleet.subnet.hosts()))
    settings = load_settings(
        data_dir=world_readable_tmp / "controller",
        store={"url": postgres_server.create_database()},
        host={"libvirt_uri": "test:///default", "virt_type": "qemu",
              "instance_name_template": f"wvfleet-{secrets.token_hex(3)}-%04x"},
        energy={"source": "model"},
        compute={"ready_image": False, "workers": 2, "power_sync_interval_s": 0.5},
        agent={"down_after_s": DOWN_AFTER_S, "call_timeout_s": 60},
        metrics={"listen": "127.0.0.1:0"},
    )  # fmt: skip
    node = AllInOne.build(settings)
    node.start()
    token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
    http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    made: Fleet | None = None
    try:
        with serving(node.app, host=gateway) as port:
            made = Fleet(
                node, f"http://{gateway}:{port}", http, host,
                world_readable_tmp / "agent", world_readable_tmp / "agent.log",
            )  # fmt: skip
            yield made
    finally:
        if made is not None and made.agent is not None and made.agent.poll() is None:
            made.agent.terminate()
            made.agent.wait(30)
        http.close()
        node.stop()


def test_a_host_joins_by_its_agent_and_runs_servers_the_controller_asks_for(
    fleet: Fleet, guest_image: GuestImage, libvirt_system: libvirt.virConnect
) -> None:
    issued = fleet.call("POST", "/v1/hosts/join-tokens", {"ttl": "10m"}, status=201)
    fleet.start_agent(issued["token"])
    joined = fleet.wait("the host to join and be up", lambda: (
        (view := fleet.host_view()) is not None and view["state"] == "up" and view
    ))  # fmt: skip
    assert joined["energy_source"] == "estimate" and joined["local"] is False
    assert joined["name"] == fleet.host.name and joined["inventory"]["VCPU"] > 0
    local = fleet.node.provider_uuid
    fleet.call("POST", f"/v1/hosts/{local}/disable", {"reason": "only the agent's host"})
    image = fleet.call(
        "POST", "/v1/images",
        {"name": "busybox-e2e", "kernel_path": str(guest_image.kernel),
         "initrd_path": str(guest_image.initrd), "cmdline": guest_image.cmdline("idle")},
        status=201,
    )  # fmt: skip
    ids = [
        fleet.call("POST", "/v1/servers", {"name": name, "flavor": "tiny", "image": image["id"]},
                   status=202)["id"]
        for name in ("kept", "lost")
    ]  # fmt: skip
    for server_id in ids:
        built = fleet.wait(f"server {server_id} to settle", lambda s=server_id: (
            (view := fleet.server(s))["status"] != "BUILD" and view["task"] is None and view
        ))  # fmt: skip
        assert built["status"] == "ACTIVE", built["fault"]
        assert built["host_id"] == fleet.host.host_uuid and built["host_status"] == "up"
    kept, lost = ids
    with fleet.host.connect() as conn:
        assert conn.lookupByUUIDString(kept).isActive()
        assert conn.lookupByUUIDString(lost).isActive()
    with pytest.raises(libvirt.libvirtError):
        libvirt_system.lookupByUUIDString(kept)

    # The agent dies: the host goes down, its servers stay as they are and are not rebuilt.
    fleet.kill_agent()
    down = fleet.wait("the host to be down", lambda: (
        (view := fleet.host_view()) is not None and view["state"].startswith("down") and view
    ))  # fmt: skip
    assert "no heartbeat" in down["state"]
    for server_id in ids:
        view = fleet.server(server_id)
        assert (view["status"], view["host_status"]) == ("ACTIVE", "down")
    refused = fleet.call("POST", "/v1/servers", {"name": "nowhere", "flavor": "tiny",
                                                 "image": image["id"]}, status=202)  # fmt: skip
    no_host = fleet.wait("the build to be refused", lambda: (
        (view := fleet.server(refused["id"]))["status"] == "ERROR" and view
    ))  # fmt: skip
    assert "down" in no_host["fault"]

    # Behind the agent's back: one guest is removed, a foreign domain appears.
    foreign = str(uuid.uuid4())
    with fleet.host.connect() as conn:
        domain = conn.lookupByUUIDString(lost)
        domain.destroy()
        domain.undefine()
        conn.defineXML(
            f"<domain type='qemu'><name>foreign-{foreign[:8]}</name><uuid>{foreign}</uuid>"
            "<memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"
        )
    try:
        fleet.start_agent()  # no join token: the stored credentials are used
        fleet.wait("the host to be up again", lambda: (
            (view := fleet.host_view()) is not None and view["state"] == "up"
        ))  # fmt: skip
        gone = fleet.wait("the lost server to be ERROR", lambda: (
            (view := fleet.server(lost))["status"] == "ERROR" and view
        ))  # fmt: skip
        assert "lost" in gone["fault"]
        assert fleet.server(kept)["status"] == "ACTIVE"
        assert fleet.server(kept)["host_status"] == "up"
        reported = fleet.wait("the foreign domain to be reported", lambda: (
            foreign in (fleet.host_view() or {}).get("unknown_domains", [])
        ))  # fmt: skip
        assert reported
        with fleet.host.connect() as conn:
            conn.lookupByUUIDString(foreign)  # left alone

        # Delete goes through the agent and removes the domain from the host.
        fleet.call("DELETE", f"/v1/servers/{kept}", status=202)
        fleet.wait("the server to be deleted", lambda: (
            fleet.server(kept)["status"] == "DELETED"
        ))  # fmt: skip
        with fleet.host.connect() as conn, pytest.raises(libvirt.libvirtError):
            conn.lookupByUUIDString(kept)
    finally:
        with fleet.host.connect() as conn:
            conn.lookupByUUIDString(foreign).undefine()
