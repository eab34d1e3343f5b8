"""Acceptance of the fleet: two namespace hosts, each with a real agent, one controller on
PostgreSQL.

Host A offers no share; host B shares a power-metrics directory (``share_local_fs``),
so only B offers ``COMPUTE_SHARE_LOCAL_FS``. Both measure with RAPL: this machine has
none, so each agent reads a powercap tree in the kernel's layout whose package
counter keeps growing (:class:`support.fleet_agents.FakeRapl`).

The fleet is shared by the module's tests (starting two hosts and their agents costs
seconds); each test leaves it with both agents running and both links up.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest
from biscuit_auth import KeyPair
from sqlalchemy import text

from support.fleet_agents import (
    DOWN_AFTER_S,
    HEARTBEAT_S,
    AgentProcess,
    Controller,
    FakeRapl,
    rapl_settings,
    serve_controller,
    share_settings,
)
from support.guest_domains import marker_fields, read_console, wait_for_marker
from support.namespace_hosts import NamespaceFleet
from support.postgres import PostgresServer
from wattvisor.auth import mint_token
from wattvisor.images import GuestImage
from wattvisor.store import read_transaction

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

TAG = "wvpower"
PROJECT = "proj-power"
BOOT_TIMEOUT_S = 180.0
SPAWN_SETTLE_S = 240.0
"""A build interrupted by the agent's death settles after the agent is back and the
build task's next attempt (its backoff included)."""


@dataclass
class Fleet:
    controller: Controller
    a: AgentProcess
    b: AgentProcess
    image_id: str
    member: httpx.Client

    def create(self, name: str, flavor: str) -> str:
        response = self.member.post(
            f"{self.controller.url}/v1/servers",
            json={"name": name, "flavor": flavor, "image": self.image_id},
        )
        assert response.status_code == 202, response.text
        server_id: str = response.json()["id"]
        return server_id

    def allocations(self) -> set[tuple[str, str]]:
        """(consumer, provider) of every placement allocation."""
        with read_transaction(self.controller.node.compute.servers.engine) as conn:
            rows = conn.execute(text(
                "SELECT DISTINCT c.uuid, p.uuid FROM allocations a "
                "JOIN consumers c ON c.id = a.consumer_id "
                "JOIN resource_providers p ON p.id = a.resource_provider_id"
            )).all()  # fmt: skip
        return {(consumer.lower(), provider.lower()) for consumer, provider in rows}

    def placed_servers(self) -> set[tuple[str, str]]:
        """(server, host) of every server that is not deleted and has a host."""
        servers = self.controller.call("GET", "/v1/servers")
        return {
            (s["id"].lower(), s["host_id"].lower())
            for s in servers
            if s["status"] != "DELETED" and s.get("host_id")
        }

    def addresses(self, server_id: str) -> list[str]:
        with read_transaction(self.controller.node.compute.servers.engine) as conn:
            rows = conn.execute(
                text("SELECT ipv4 FROM server_addresses WHERE server_uuid = :u"),
                {"u": server_id},
            ).all()
        return [row[0] for row in rows]

    def host_sample_times(self, host_uuid: str) -> list[int]:
        with read_transaction(self.controller.node.compute.servers.engine) as conn:
            rows = conn.execute(
                text("SELECT ts_ms FROM energy_host_samples WHERE host_uuid = :h ORDER BY ts_ms"),
                {"h": host_uuid},
            ).all()
        return [row[0] for row in rows]

    def server_sample_times(self, server_id: str) -> list[int]:
        with read_transaction(self.controller.node.compute.servers.engine) as conn:
            rows = conn.execute(
                text("SELECT ts_ms FROM energy_server_samples WHERE server_uuid = :s "
                     "ORDER BY ts_ms"),
                {"s": server_id.lower()},
            ).all()  # fmt: skip
        return [row[0] for row in rows]


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    """A scratch directory QEMU and virtiofsd can traverse, for the module's fleet."""
    path = Path(tempfile.mkdtemp(prefix="wvfleet-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(
    namespace_fleet: NamespaceFleet,
    postgres_server: PostgresServer,
    guest_image: GuestImage,
    libvirt_system: libvirt.virConnect,
    module_dir: Path,
) -> Iterator[Fleet]:
    hosts = namespace_fleet.add_hosts(2)
    raps = [FakeRapl(module_dir / f"rapl-{i}").start() for i in range(2)]
    try:
        with serve_controller(namespace_fleet, postgres_server, module_dir / "controller") as c:
            a = AgentProcess(
                hosts[0], module_dir / "agent-a", c.url,
                {**rapl_settings(raps[0]), "WATTVISOR_HOST__SHARE_LOCAL_FS": "{}"},
            )  # fmt: skip
            b = AgentProcess(
                hosts[1], module_dir / "agent-b", c.url,
                {**rapl_settings(raps[1]), **share_settings(module_dir / "share-b", TAG)},
            )  # fmt: skip
            for joined in c.join(a, b):
                assert joined["energy_source"] == "rapl", joined
            c.call("POST", "/v1/flavors", {
                "name": "metered", "vcpus": 1, "ram_mb": 256, "disk_gb": 1,
                "extra_specs": {"hw:power_metrics": "true"},
            }, status=201)  # fmt: skip
            image = c.call("POST", "/v1/images", {
                "name": "busybox-metrics", "kernel_path": str(guest_image.kernel),
                "initrd_path": str(guest_image.initrd),
                "cmdline": guest_image.cmdline("metrics", interval=1),
            }, status=201)  # fmt: skip
            keys = KeyPair()
            user = {"name": "pat", "project": PROJECT, "public_key": repr(keys.public_key)}
            c.call("POST", "/v1/users", user, status=201)
            token = mint_token(keys.private_key, "pat", timedelta(hours=1))
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as member:
                yield Fleet(c, a, b, image["id"], member)
                for server in c.call("GET", "/v1/servers"):
                    if server["status"] != "DELETED":
                        c.call("DELETE", f"/v1/servers/{server['id']}", status=202)
                for server in c.call("GET", "/v1/servers"):
                    c.wait(f"server {server['id']} deleted", lambda s=server["id"]: (
                        c.server(s)["status"] == "DELETED"
                    ))  # fmt: skip
    finally:
        for rapl in raps:
            rapl.stop()
        for host in hosts:
            namespace_fleet.remove_host(host)


def _energy_readings(console: Path) -> list[int]:
    return [
        int(marker_fields(line)["energy_uj"])
        for line in read_console(console).splitlines()
        if line.startswith("WV-ENERGY ")
    ]


def _vm_energy(metrics: str, server_id: str) -> float | None:
    """The agent's ``wattvisor_vm_energy_joules`` counter for the server, if exported."""
    pattern = re.compile(
        r'^wattvisor_vm_energy_joules(?:_total)?\{[^}]*instance="' + re.escape(server_id)
        + r'"[^}]*\}\s+(\S+)$', re.MULTILINE,
    )  # fmt: skip
    found = pattern.search(metrics)
    return float(found.group(1)) if found else None


def test_a_power_metrics_server_lands_on_the_sharing_host_and_its_energy_reaches_everyone(
    fleet: Fleet,
) -> None:
    c, a, b = fleet.controller, fleet.a, fleet.b
    assert "COMPUTE_SHARE_LOCAL_FS" not in (c.host_view(a.host.host_uuid) or {})["traits"]
    assert "COMPUTE_SHARE_LOCAL_FS" in (c.host_view(b.host.host_uuid) or {})["traits"]

    server_id = fleet.create("metered-1", "metered")
    server = c.settled(server_id, BOOT_TIMEOUT_S)
    assert server["status"] == "ACTIVE", server
    assert server["host_id"] == b.host.host_uuid and server["mount_tags"] == [TAG]
    assert b.domains().get(server_id) == "running"
    assert server_id not in a.domains()

    # The guest finds the share on its config drive and reads its own growing counter.
    console = b.instances / server_id / "console.log"
    metadata = wait_for_marker(console, "WV-METADATA", BOOT_TIMEOUT_S)
    assert marker_fields(metadata) == {"uuid": server_id, "tag": TAG}, metadata
    assert f"tag={TAG}" in wait_for_marker(console, "WV-MOUNTED", BOOT_TIMEOUT_S)
    readings = c.wait("the guest's energy counter to grow", lambda: (
        (found := _energy_readings(console)) and len(found) >= 2 and found[-1] > found[0] > 0
        and found
    ), BOOT_TIMEOUT_S)  # fmt: skip
    assert readings == sorted(readings), read_console(console)

    # B's agent exports the server's series; A's does not know it.
    def exported() -> float | None:
        response = httpx.get(b.metrics_url, timeout=10)
        value = _vm_energy(response.text, server_id)
        return value if value is not None and value > 0 else None

    assert c.wait("B's /metrics to show the server", exported) > 0
    assert _vm_energy(httpx.get(a.metrics_url, timeout=10).text, server_id) is None

    # The controller counts it in the project's power, from what B's agent pushed.
    def project_power() -> dict[str, Any] | None:
        response = fleet.member.get(f"{c.url}/v1/projects/{PROJECT}/power")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["servers"] >= 1 and body["joules"] > 0 else None

    project = c.wait("the project's power to include the server", project_power)
    assert project["sampled"] is True and "rapl" in project["source"], project
    power = fleet.member.get(f"{c.url}/v1/servers/{server_id}/power").json()
    assert power["sampled"] is True and power["joules"] > 0 and power["source"] == "rapl"
    history = c.wait("the server's energy history", lambda: (
        (points := fleet.member.get(f"{c.url}/v1/servers/{server_id}/power/history",
                                    params={"since": 600}).json())
        and points[-1]["joules"] > 0 and points
    ))  # fmt: skip
    assert [p["taken_at"] for p in history] == sorted({p["taken_at"] for p in history})
    listed = fleet.member.get(f"{c.url}/v1/power/servers").json()
    assert [s["joules"] > 0 for s in listed if s["id"] == server_id] == [True], listed


def _kill_when_defined(agent: AgentProcess, server_id: str, timeout_s: float) -> bool:
    """SIGKILL ``agent`` as soon as the server's domain exists in its host's libvirtd
    (the spawn is between ``define`` and the end of ``start``); True if it was seen."""
    deadline = time.monotonic() + timeout_s
    with agent.host.connect() as conn:
        while time.monotonic() < deadline:
            try:
                conn.lookupByUUIDString(server_id)
            except libvirt.libvirtError:
                time.sleep(0.01)
                continue
            agent.kill()
            return True
    return False


def test_an_agent_killed_while_it_spawns_leaves_the_server_settled_and_nothing_behind(
    fleet: Fleet,
) -> None:
    c, b = fleet.controller, fleet.b
    mounts_before = sorted(b.mount_points())
    server_id = fleet.create("interrupted", "metered")
    assert _kill_when_defined(b, server_id, BOOT_TIMEOUT_S), "the domain was never defined"
    c.agents.remove(b)  # dead on purpose until it is started again
    try:
        during = c.server(server_id)
        # The kill fell inside the spawn: the controller has no answer yet.
        assert during["status"] == "BUILD", during
        b.start()  # no join token: the agent uses the credentials it keeps
    finally:
        c.agents.append(b)
    c.wait("B to be up again", lambda: (c.host_view(b.host.host_uuid) or {}).get("state") == "up")
    server = c.settled(server_id, SPAWN_SETTLE_S)
    domains = {**{u: "A" for u in fleet.a.domains()}, **{u: "B" for u in b.domains()}}
    if server["status"] == "ACTIVE":
        assert server["host_id"] == b.host.host_uuid
        assert domains.get(server_id) == "B" and b.domains()[server_id] == "running"
        assert server_id not in fleet.a.domains()
        assert fleet.allocations() == fleet.placed_servers()
        assert fleet.addresses(server_id)
    else:
        assert server["status"] == "ERROR", server
        assert server["fault"], server
        assert server_id not in domains
        assert sorted(b.mount_points()) == mounts_before
        assert not (b.instances / server_id).exists()
        assert not any(consumer == server_id for consumer, _ in fleet.allocations())
        assert fleet.addresses(server_id) == []


def test_a_host_cut_off_the_network_is_down_keeps_its_servers_and_comes_back_whole(
    fleet: Fleet,
) -> None:
    c, a, b = fleet.controller, fleet.a, fleet.b
    on_b = [s["id"] for s in c.call("GET", "/v1/servers")
            if s["host_id"] == b.host.host_uuid and s["status"] == "ACTIVE"]  # fmt: skip
    if not on_b:
        created = fleet.create("on-b", "metered")
        assert c.settled(created, BOOT_TIMEOUT_S)["status"] == "ACTIVE"
        on_b = [created]
    c.wait("B's samples to reach the controller", lambda: fleet.server_sample_times(on_b[0]))
    before = {u: s for u, s in b.domains().items() if u in on_b}
    assert set(before.values()) == {"running"} and set(before) == set(on_b)

    cut_at = time.time()
    b.host.link_down()
    try:
        down = c.wait("B to be down", lambda: (
            (view := c.host_view(b.host.host_uuid)) is not None
            and view["state"].startswith("down") and view
        ), DOWN_AFTER_S + HEARTBEAT_S + 30)  # fmt: skip
        assert "no heartbeat" in down["state"], down
        for server_id in on_b:
            view = c.server(server_id)
            assert (view["status"], view["host_status"]) == ("ACTIVE", "down"), view
        assert {u: s for u, s in b.domains().items() if u in on_b} == before
        # New builds go elsewhere: a plain server to A, a metered one nowhere.
        plain = fleet.create("while-b-is-down", "tiny")
        metered = fleet.create("metered-while-b-is-down", "metered")
        built = c.settled(plain, BOOT_TIMEOUT_S)
        assert (built["status"], built["host_id"]) == ("ACTIVE", a.host.host_uuid), built
        refused = c.settled(metered, BOOT_TIMEOUT_S)
        assert refused["status"] == "ERROR" and "down" in refused["fault"], refused
        # Samples B takes meanwhile stay with its agent until the link is back.
        time.sleep(2 * DOWN_AFTER_S)
    finally:
        b.host.link_up()
    up_at = time.time()

    c.wait("B to be up again", lambda: (c.host_view(b.host.host_uuid) or {}).get("state") == "up")
    for server_id in on_b:
        view = c.wait(f"server {server_id} to be seen up", lambda s=server_id: (
            (v := c.server(s))["host_status"] == "up" and v
        ))  # fmt: skip
        assert view["status"] == "ACTIVE" and view["host_id"] == b.host.host_uuid, view
    a_domains, b_domains = a.domains(), b.domains()
    assert {u: s for u, s in b_domains.items() if u in on_b} == before
    assert not set(on_b) & set(a_domains)
    assert plain in a_domains and plain not in b_domains
    assert metered not in a_domains and metered not in b_domains
    assert fleet.allocations() == fleet.placed_servers()

    # What B sampled while cut off arrives once.
    def outage_samples() -> list[int]:
        times = fleet.server_sample_times(on_b[0])
        return [t for t in times if cut_at * 1000 < t < up_at * 1000]

    arrived = c.wait("B's samples from the outage to arrive", outage_samples)
    # From the whole outage, not only from the last seconds before the link came back.
    middle_ms = (cut_at + up_at) / 2 * 1000
    assert min(arrived) < middle_ms < max(arrived), (cut_at, up_at, arrived)
    host_times = fleet.host_sample_times(b.host.host_uuid)
    assert len(host_times) == len(set(host_times))
    history = fleet.member.get(f"{c.url}/v1/servers/{on_b[0]}/power/history",
                               params={"since": 600}).json()  # fmt: skip
    stamps = [p["taken_at"] for p in history]
    assert stamps == sorted(set(stamps)), stamps
    assert any(cut_at < t < up_at for t in stamps), (cut_at, up_at, stamps)
