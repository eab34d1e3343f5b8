"""End to end: live migration between two namespace hosts, each run by its own agent.

A controller on PostgreSQL drives two hosts (A and B) only over HTTP. A busy TCG guest
moves A→B over a VXLAN tunnel made for that migration, and back; its console keeps
counting. Afterwards neither host has a tunnel link, address or route, and the store
holds no VNI reservation. Failures (the target refuses, the tunnel cannot come up, the
target's agent dies mid-migration) leave the guest running on A with its allocations,
nothing behind, and the API saying what failed. Two migrations at once get two VNIs.
A power-metrics guest moves too: its share is unplugged for the move and the target's
own share plugged back, and the energy counter it reads goes on rising from where it was.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from api.served_app import serving
from support.fleet_agents import share_settings
from support.namespace_hosts import NamespaceFleet, NamespaceHost
from support.postgres import PostgresServer
from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token_from_file
from wattvisor.config import load_settings
from wattvisor.host.tunnels import TUNNEL_PREFIX
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

AGENT_PORT = 8775
WAIT_S = 180.0
# A TCG guest booting or resuming on a loaded 2-core machine can take minutes.
GUEST_WAIT_S = 2 * WAIT_S
VNI_FIRST = 7100
OVERLAY_POOL = "100.100.4.0/24"
TAG = "wvmigpm"


@dataclass
class Agent:
    host: NamespaceHost
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def share_dir(self) -> Path:
        """This host's power-metrics share directory (its own, like on a real host)."""
        return self.data_dir.with_name(f"{self.data_dir.name}-power-metrics")


@dataclass
class Fleet:
    node: AllInOne
    url: str
    http: httpx.Client
    agents: list[Agent]
    directory: Path
    image_id: str = ""
    metrics_image_id: str = ""
    made: list[str] = field(default_factory=list)

    @property
    def a(self) -> NamespaceHost:
        return self.agents[0].host

    @property
    def b(self) -> NamespaceHost:
        return self.agents[1].host

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.http.request(method, f"{self.url}{path}", json=body)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    def start_agent(self, agent: Agent, join_token: str | None = None) -> None:
        argv = [sys.executable, "-m", "wattvisor.cli", "agent"]
        if join_token is not None:
            argv += ["--controller", self.url, "--join-token", join_token]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "WATTVISOR_DATA_DIR": str(agent.data_dir),
            "WATTVISOR_AGENT__LISTEN": f"{agent.host.address}:{AGENT_PORT}",
            "WATTVISOR_AGENT__HEARTBEAT_S": "0.5",
            "WATTVISOR_ENERGY__SOURCE": "model",
            "WATTVISOR_HOST__VIRT_TYPE": "qemu",
            **share_settings(agent.share_dir, TAG),
        }
        env.pop("WATTVISOR_CONFIG", None)
        with agent.log.open("ab") as log:
            agent.process = agent.host.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def kill_agent(self, agent: Agent) -> None:
        assert agent.process is not None
        agent.process.send_signal(signal.SIGKILL)
        agent.process.wait(10)
        agent.process = None

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.2)
        logs = "\n".join(a.log.read_text()[-2000:] for a in self.agents if a.log.exists())
        raise AssertionError(f"{what} not within {timeout_s} s; agent logs:\n{logs[-1500:]}")

    def host_up(self, host: NamespaceHost) -> bool:
        return any(
            h["id"] == host.host_uuid and h["state"] == "up" for h in self.call("GET", "/v1/hosts")
        )

    def server(self, server_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/servers/{server_id}")
        return result

    def migration(self, server_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/servers/{server_id}/migration")
        return result

    def create_server(
        self, name: str, flavor: str = "tiny", image: str | None = None
    ) -> dict[str, Any]:
        made = self.call(
            "POST", "/v1/servers",
            {"name": name, "flavor": flavor, "image": image or self.image_id}, status=202,
        )  # fmt: skip
        self.made.append(made["id"])
        built = self.wait(f"server {name} to settle", lambda: (
            (view := self.server(made["id"]))["status"] != "BUILD" and view["task"] is None
            and view
        ))  # fmt: skip
        assert built["status"] == "ACTIVE", built["fault"]
        return built

    def host_of(self, server: dict[str, Any]) -> NamespaceHost:
        return self.a if server["host_id"] == self.a.host_uuid else self.b

    def settle_migration(self, server_id: str) -> dict[str, Any]:
        return self.wait("the migration to end", lambda: (
            (m := self.migration(server_id))["state"] in ("done", "failed", "cancelled") and m
        ))  # fmt: skip


def _console_path(host: NamespaceHost, server_id: str) -> Path:
    with host.connect() as conn:
        xml = conn.lookupByUUIDString(server_id).XMLDesc(0)
    for serial in ET.fromstring(xml).iter("serial"):
        source = serial.find("source")
        if serial.get("type") == "file" and source is not None:
            return Path(str(source.get("path")))
    raise AssertionError(f"server {server_id} has no file console: {xml}")


def _ticks(console: Path) -> int:
    found = re.findall(r"WV-TICK n=(\d+)", console.read_text(errors="replace"))
    return int(found[-1]) if found else 0


def _running_on(host: NamespaceHost, server_id: str) -> bool:
    with host.connect() as conn:
        try:
            return bool(conn.lookupByUUIDString(server_id).isActive())
        except libvirt.libvirtError:
            return False


def _defined_on(host: NamespaceHost, server_id: str) -> bool:
    with host.connect() as conn:
        try:
            conn.lookupByUUIDString(server_id)
        except libvirt.libvirtError:
            return False
        return True


def _leftovers(host: NamespaceHost) -> list[str]:
    """Tunnel links, overlay addresses and routes the host still has."""
    left: list[str] = []
    links = json.loads(host.run(["ip", "-j", "link", "show"], check=True).stdout)
    left += [link["ifname"] for link in links if link["ifname"].startswith(TUNNEL_PREFIX)]
    addrs = json.loads(host.run(["ip", "-j", "addr", "show"], check=True).stdout)
    left += [
        info["local"] for link in addrs for info in link.get("addr_info", [])
        if info["local"].startswith("100.100.")
    ]  # fmt: skip
    routes = host.run(["ip", "route", "show"], check=True).stdout
    left += [line for line in routes.splitlines() if "100.100." in line or TUNNEL_PREFIX in line]
    return left


def _allocation_hosts(fleet: Fleet, server_id: str) -> list[str]:
    held = fleet.node.compute.scheduler.placement.get_allocations(server_id)
    return [part.provider_uuid for part in held.allocations]


@pytest.fixture(scope="module")
def fleet(
    namespace_fleet: NamespaceFleet,
    postgres_server: PostgresServer,
    guest_image: GuestImage,
) -> Iterator[Fleet]:
    # World-readable: QEMU and virtiofsd reach files under it.
    directory = Path(tempfile.mkdtemp(prefix="wvmigration-", dir="/var/tmp"))
    directory.chmod(0o755)
    hosts = namespace_fleet.add_hosts(2)
    assert namespace_fleet.subnet is not None
    gateway = str(next(namespace_fleet.subnet.hosts()))
    settings = load_settings(
        data_dir=directory / "controller",
        store={"url": postgres_server.create_database()},
        host={"libvirt_uri": "test:///default", "virt_type": "qemu",
              "instance_name_template": f"wvmig-{secrets.token_hex(3)}-%04x"},
        energy={"source": "model"},
        compute={"ready_image": False, "workers": 4, "power_sync_interval_s": 0.5},
        agent={"down_after_s": 3.0, "call_timeout_s": 120},
        metrics={"listen": "127.0.0.1:0"},
        migration={"vni_pool": f"{VNI_FIRST}-{VNI_FIRST + 99}", "ipv4_pool": OVERLAY_POOL,
                   "timeout_s": 240},
    )  # fmt: skip
    node = AllInOne.build(settings)
    node.start()
    token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
    http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    agents = [
        Agent(host, directory / f"agent-{i}", directory / f"agent-{i}.log")
        for i, host in enumerate(hosts)
    ]
    made: Fleet | None = None
    try:
        with serving(node.app, host=gateway) as port:
            made = Fleet(node, f"http://{gateway}:{port}", http, agents, directory)
            for agent in agents:
                issued = made.call("POST", "/v1/hosts/join-tokens", {"ttl": "10m"}, status=201)
                made.start_agent(agent, issued["token"])
            for agent in agents:
                made.wait(f"{agent.host.name} to join", lambda h=agent.host: made.host_up(h))
            made.call("POST", f"/v1/hosts/{node.provider_uuid}/disable",
                      {"reason": "only the agents' hosts"})  # fmt: skip
            image = made.call(
                "POST", "/v1/images",
                {"name": "busy-migrating", "kernel_path": str(guest_image.kernel),
                 "initrd_path": str(guest_image.initrd),
                 "cmdline": guest_image.cmdline("busy", interval=1)},
                status=201,
            )  # fmt: skip
            made.image_id = image["id"]
            made.call("POST", "/v1/flavors", {
                "name": "metered", "vcpus": 1, "ram_mb": 128, "disk_gb": 0,
                "extra_specs": {"hw:power_metrics": "true"},
            }, status=201)  # fmt: skip
            metrics = made.call(
                "POST", "/v1/images",
                {"name": "metrics-migrating", "kernel_path": str(guest_image.kernel),
                 "initrd_path": str(guest_image.initrd),
                 "cmdline": guest_image.cmdline("metrics", interval=1)},
                status=201,
            )  # fmt: skip
            made.metrics_image_id = metrics["id"]
            yield made
    finally:
        if made is not None:
            for server_id in made.made:
                for host in hosts:
                    with host.connect() as conn:
                        try:
                            dom = conn.lookupByUUIDString(server_id)
                        except libvirt.libvirtError:
                            continue
                        if dom.isActive():
                            dom.destroy()
                        dom.undefine()
            for agent in made.agents:
                if agent.process is not None and agent.process.poll() is None:
                    agent.process.terminate()
                    agent.process.wait(30)
        http.close()
        node.stop()
        for host in hosts:
            namespace_fleet.remove_host(host)
        shutil.rmtree(directory, ignore_errors=True)


def _migrate(fleet: Fleet, server_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Migrate and wait; returns the finished migration and the highest progress seen."""
    started = fleet.call("POST", f"/v1/servers/{server_id}/migrate", body, status=202)
    assert started["state"] == "queued" and started["server_id"] == server_id
    return fleet.settle_migration(server_id)


def test_a_busy_guest_migrates_over_a_tunnel_and_back_and_keeps_counting(fleet: Fleet) -> None:
    server = fleet.create_server("busy")
    source = fleet.host_of(server)
    other = fleet.b if source is fleet.a else fleet.a
    console = _console_path(source, server["id"])
    fleet.wait("the guest to count", lambda: _ticks(console) >= 2, GUEST_WAIT_S)
    for there, back in ((other, source), (source, other)):
        before = _ticks(console)
        done = _migrate(fleet, server["id"], {"host": there.name, "tunnel": True})
        assert done["state"] == "done", done["fault"]
        assert done["progress"] == 100 and done["vni"] is not None
        assert done["subnet"] is not None and done["subnet"].endswith("/30")
        # The memory crossed the VXLAN link: its counters on both ends say so.
        stats = done["stats"]
        assert stats["source_tunnel_tx_bytes"] > 32 * 2**20, stats
        assert stats["target_tunnel_rx_bytes"] > 32 * 2**20, stats
        assert stats["migrate_uri"].startswith("tcp://100.100.")
        moved = fleet.server(server["id"])
        assert moved["host_id"] == there.host_uuid and moved["task"] is None
        assert moved["status"] == "ACTIVE" and moved["fault"] is None
        assert _allocation_hosts(fleet, server["id"]) == [there.host_uuid]
        assert _running_on(there, server["id"]) and not _defined_on(back, server["id"])
        fleet.wait("the guest to count on", lambda b=before: _ticks(console) > b + 2, GUEST_WAIT_S)
        for host in (fleet.a, fleet.b):
            assert _leftovers(host) == [], host
        assert fleet.node.compute.migrations.pool.held() == []


def test_migration_without_a_tunnel_picks_a_target_itself(fleet: Fleet) -> None:
    server = fleet.create_server("direct")
    source = fleet.host_of(server)
    done = _migrate(fleet, server["id"], {"tunnel": False})
    assert done["state"] == "done", done
    assert done["vni"] is None and done["target_host"] != source.host_uuid
    assert not done["stats"]["migrate_uri"].startswith("tcp://100.100.")
    assert fleet.server(server["id"])["host_id"] == done["target_host"]


def _assert_stayed(fleet: Fleet, server_id: str, source: NamespaceHost, words: str) -> None:
    done = fleet.settle_migration(server_id)
    assert done["state"] == "failed", done
    assert words in done["fault"]
    view = fleet.server(server_id)
    assert view["host_id"] == source.host_uuid and view["status"] == "ACTIVE"
    assert view["task"] is None and words in view["fault"]
    assert _allocation_hosts(fleet, server_id) == [source.host_uuid]
    assert _running_on(source, server_id)
    assert fleet.node.compute.migrations.pool.held() == []


def test_a_target_that_refuses_leaves_the_guest_running_on_its_source(fleet: Fleet) -> None:
    server = fleet.create_server("refused")
    source = fleet.host_of(server)
    target = fleet.b if source is fleet.a else fleet.a
    # The target defines another domain with the server's uuid: its libvirtd refuses.
    with target.connect() as conn:
        squatter = conn.defineXML(
            f"<domain type='qemu'><name>squat-{secrets.token_hex(3)}</name>"
            f"<uuid>{server['id']}</uuid><memory unit='MiB'>32</memory>"
            "<os><type arch='x86_64'>hvm</type></os></domain>"
        )
    try:
        fleet.call("POST", f"/v1/servers/{server['id']}/migrate",
                   {"host": target.host_uuid}, status=202)  # fmt: skip
        _assert_stayed(fleet, server["id"], source, "migration failed")
    finally:
        squatter.undefine()
    for host in (fleet.a, fleet.b):
        assert _leftovers(host) == []


def test_a_tunnel_that_cannot_come_up_stops_the_migration_before_anything_moves(
    fleet: Fleet,
) -> None:
    server = fleet.create_server("no-tunnel")
    source = fleet.host_of(server)
    target = fleet.b if source is fleet.a else fleet.a
    # A VXLAN link holding the VNI the migration will get: the kernel refuses a second.
    blocker = "wvblock0"
    target.run(["ip", "link", "add", blocker, "type", "vxlan", "id", str(VNI_FIRST),
                "dstport", "4789", "local", target.address], check=True)  # fmt: skip
    try:
        fleet.call("POST", f"/v1/servers/{server['id']}/migrate",
                   {"host": target.name}, status=202)  # fmt: skip
        _assert_stayed(fleet, server["id"], source, "the tunnel could not come up")
    finally:
        target.run(["ip", "link", "del", blocker])
    for host in (fleet.a, fleet.b):
        assert _leftovers(host) == []


def test_the_target_agent_dying_mid_migration_leaves_the_guest_on_its_source(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fleet.create_server("orphaned")
    source = fleet.host_of(server)
    target_agent = next(a for a in fleet.agents if a.host is not source)
    service = fleet.node.compute.migrations
    # Slow enough that the agent dies while memory is still being sent.
    monkeypatch.setattr(
        service, "settings", service.settings.model_copy(update={"max_bandwidth_mib_s": 4})
    )
    fleet.call("POST", f"/v1/servers/{server['id']}/migrate",
               {"host": target_agent.host.name}, status=202)  # fmt: skip
    seen: list[dict[str, Any]] = []
    try:
        fleet.wait("memory to be sent", lambda: (
            seen[:] == [m := fleet.migration(server["id"])] or (
                m["state"] == "migrating" and m["progress"] > 0)
        ))  # fmt: skip
    except AssertionError as exc:
        raise AssertionError(f"last seen: {seen}") from exc
    fleet.kill_agent(target_agent)
    _assert_stayed(fleet, server["id"], source, "target host stopped answering")
    assert _leftovers(source) == []
    # The dead agent's end is removed at its next start.
    fleet.start_agent(target_agent)
    fleet.wait("the agent to be back", lambda: fleet.host_up(target_agent.host))
    fleet.wait("its tunnel to be swept", lambda: _leftovers(target_agent.host) == [])
    assert not _defined_on(target_agent.host, server["id"])


def test_two_migrations_at_once_use_different_vnis(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = fleet.node.compute.migrations
    monkeypatch.setattr(
        service, "settings", service.settings.model_copy(update={"max_bandwidth_mib_s": 16})
    )
    servers = [fleet.create_server(f"pair-{i}") for i in range(2)]
    for server in servers:
        fleet.call("POST", f"/v1/servers/{server['id']}/migrate", {"tunnel": True}, status=202)
    seen = fleet.wait("both tunnels to exist at once", lambda: (
        len(held := service.pool.held()) == 2 and held
    ))  # fmt: skip
    assert len({r.vni for r in seen}) == 2 and len({r.subnet for r in seen}) == 2
    finished = [fleet.settle_migration(s["id"]) for s in servers]
    assert [m["state"] for m in finished] == ["done", "done"], [m["fault"] for m in finished]
    assert finished[0]["vni"] != finished[1]["vni"]
    for host in (fleet.a, fleet.b):
        assert _leftovers(host) == []


_ENERGY = re.compile(r"WV-ENERGY n=\d+ energy_uj=\[(\d+)\]|WV-REMOUNTED")


def _energy_lines(console: Path) -> list[str]:
    """The guest's counter readings (the value) and re-mounts (``remounted``), in order."""
    return [
        m.group(1) or "remounted" for m in _ENERGY.finditer(console.read_text(errors="replace"))
    ]


def _energies(lines: list[str]) -> list[int]:
    return [int(line) for line in lines if line != "remounted"]


def test_a_power_metrics_guest_migrates_and_reads_the_targets_share_counting_on(
    fleet: Fleet,
) -> None:
    server = fleet.create_server("metered", flavor="metered", image=fleet.metrics_image_id)
    assert server["power_metrics"] is True and server["mount_tags"] == [TAG]
    source = fleet.host_of(server)
    there = fleet.b if source is fleet.a else fleet.a
    there_agent = next(a for a in fleet.agents if a.host is there)
    console = _console_path(source, server["id"])
    with source.connect() as conn:
        source_name = conn.lookupByUUIDString(server["id"]).name()
    fleet.wait("the guest to read a rising counter", lambda: (
        len(v := _energies(_energy_lines(console))) >= 3 and v[-1] > v[0] > 0
    ), GUEST_WAIT_S)  # fmt: skip
    before = _energies(_energy_lines(console))
    done = _migrate(fleet, server["id"], {"host": there.name, "tunnel": True})
    assert done["state"] == "done", done["fault"]
    stats = done["stats"]
    # QEMU 7.2 cannot carry a virtiofs device: the share was unplugged and plugged back.
    assert stats["share_path"] == "unplug" and stats["share_tags"] == [TAG], stats
    assert "share_error" not in stats, stats
    assert stats["share_energy_joules"] * 1_000_000 >= before[-1], (stats, before)
    moved = fleet.server(server["id"])
    assert moved["host_id"] == there.host_uuid and moved["fault"] is None
    assert _running_on(there, server["id"]) and not _defined_on(source, server["id"])

    # The guest mounts the tag again and reads on, from the target's share.
    def remounted_and_reading() -> list[int] | None:
        lines = _energy_lines(console)
        marks = [i for i, line in enumerate(lines) if line == "remounted"]
        if not marks:
            return None
        after = _energies(lines[marks[-1] :])
        return after if len(after) >= 3 else None

    after = fleet.wait(
        "the guest to read its counter on the target", remounted_and_reading, GUEST_WAIT_S
    )
    assert after[0] >= before[-1] and after[-1] > before[-1], (before, after)
    everything = _energies(_energy_lines(console))
    assert everything == sorted(everything), everything  # never went down
    assert everything[-1] > max(before)

    # What it reads is the target's share: its directory, its virtiofsd, read-only view.
    with there.connect() as conn:
        xml = conn.lookupByUUIDString(server["id"]).XMLDesc(0)
    [fs] = [f for f in ET.fromstring(xml).iter("filesystem")
            if (f.find("target") is not None and f.find("target").get("dir") == TAG)]  # type: ignore[union-attr]  # fmt: skip
    assert fs.find("driver").get("type") == "virtiofs"  # type: ignore[union-attr]
    alias = fs.find("alias")
    assert alias is not None and str(alias.get("name")).startswith("ua-"), xml
    counter = there_agent.share_dir / stats["domain_name"] / "intel-rapl:0" / "energy_uj"
    on_target = int(there.run(["cat", str(counter)], check=True).stdout)
    assert on_target >= after[-1], (on_target, after)
    source_dir = fs.find("source").get("dir")  # type: ignore[union-attr]
    procs = there.run(["ps", "-ww", "-eo", "pid,args"], check=True).stdout.splitlines()
    pids = [line.split()[0] for line in procs
            if "virtiofsd" in line and f"source={source_dir}" in line]  # fmt: skip
    assert len(pids) >= 1, (source_dir, procs)
    # Its source is the target agent's own read-only view of the target's share.
    assert Path(str(source_dir)).is_relative_to(there_agent.data_dir), source_dir
    mounts = there.run(["cat", "/proc/self/mountinfo"], check=True).stdout.splitlines()
    view = [line.split() for line in mounts if line.split()[4] == source_dir]
    assert view and "ro" in view[-1][5].split(","), (source_dir, view)
    # The source gave its share up.
    source_agent = next(a for a in fleet.agents if a.host is source)
    assert source.run(["test", "-e", str(source_agent.share_dir / source_name)]).returncode != 0
