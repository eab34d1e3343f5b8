"""End to end: a namespace host with public and private addresses joins a controller on
PostgreSQL by running ``wattvisor agent``, gets the pairs of its public addresses from
the controller's local database, and gets new ones when its addresses change.

The addresses are only assigned, on a veth pair whose two ends are both inside the
host's namespace: nothing is sent to them. The database is one the test writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.served_app import serving
from support.geo_databases import LINKOPING_V4, LONDON_V4, TOKYO_V6, pair, write_geo_database
from support.namespace_hosts import NamespaceFleet, NamespaceHost
from support.postgres import PostgresServer
from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token_from_file
from wattvisor.config import load_settings

pytestmark = [pytest.mark.libvirtd]

AGENT_PORT = 8775
METRICS_PORT = 9464
WAIT_S = 90.0


@dataclass
class GeoFleet:
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

    def ip(self, *argv: str) -> None:
        self.host.run(["ip", *argv], check=True)

    def start_agent(self, join_token: str) -> None:
        argv = [sys.executable, "-m", "wattvisor.cli", "agent",
                "--controller", self.url, "--join-token", join_token]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "WATTVISOR_DATA_DIR": str(self.agent_dir),
            "WATTVISOR_AGENT__LISTEN": f"{self.host.address}:{AGENT_PORT}",
            "WATTVISOR_METRICS__LISTEN": f"{self.host.address}:{METRICS_PORT}",
            "WATTVISOR_AGENT__HEARTBEAT_S": "0.5",
            "WATTVISOR_ENERGY__SOURCE": "model",
            "WATTVISOR_HOST__VIRT_TYPE": "qemu",
        }
        env.pop("WATTVISOR_CONFIG", None)
        log = self.agent_log.open("ab")
        self.agent = self.host.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait(self, what: str, check: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + WAIT_S
        last: Any = None
        while time.monotonic() < deadline:
            if self.agent is not None and self.agent.poll() is not None:
                raise AssertionError(f"the agent exited: {self.agent_log.read_text()[-3000:]}")
            last = check()
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"{what} not within {WAIT_S} s (last: {last!r}); agent log:\n"
                             f"{self.agent_log.read_text()[-3000:]}")  # fmt: skip

    def host_view(self) -> dict[str, Any] | None:
        found = [h for h in self.call("GET", "/v1/hosts") if h["id"] == self.host.host_uuid]
        return found[0] if found else None

    def exported(self) -> list[tuple[str, str, str]] | None:
        """``(host, latitude, longitude)`` of the agent's ``wattvisor_host_info`` series;
        None while its ``/metrics`` does not answer."""
        try:
            response = httpx.get(f"http://{self.host.address}:{METRICS_PORT}/metrics", timeout=10)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        text = response.text
        return sorted(
            (s.labels["host"], s.labels["latitude"], s.labels["longitude"])
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "wattvisor_host_info"
        )


@pytest.fixture
def geo_fleet(
    namespace_fleet: NamespaceFleet,
    make_namespace_hosts: Callable[[int], list[NamespaceHost]],
    postgres_server: PostgresServer,
    world_readable_tmp: Path,
) -> Iterator[GeoFleet]:
    [host] = make_namespace_hosts(1)
    assert namespace_fleet.subnet is not None
    gateway = str(next(namespace_fleet.subnet.hosts()))
    database = write_geo_database(world_readable_tmp / "city.mmdb")
    settings = load_settings(
        data_dir=world_readable_tmp / "controller",
        store={"url": postgres_server.create_database()},
        host={"libvirt_uri": "test:///default", "virt_type": "qemu"},
        energy={"source": "model"},
        compute={"ready_image": False, "workers": 1},
        metrics={"listen": "127.0.0.1:0"},
        geo={"database": str(database)},
    )  # fmt: skip
    node = AllInOne.build(settings)
    node.start()
    token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
    http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    made: GeoFleet | None = None
    try:
        with serving(node.app, host=gateway) as port:
            made = GeoFleet(
                node, f"http://{gateway}:{port}", http, host,
                world_readable_tmp / "agent", world_readable_tmp / "agent.log",
            )  # fmt: skip
            yield made
    finally:
        if made is not None and made.agent is not None and made.agent.poll() is None:
            made.agent.send_signal(signal.SIGTERM)
            made.agent.wait(30)
        http.close()
        node.stop()


def test_a_host_with_mixed_addresses_gets_the_pairs_of_its_public_ones_and_follows_changes(
    geo_fleet: GeoFleet,
) -> None:
    fleet = geo_fleet
    # Both ends of the pair stay inside the host: addresses to read, nowhere to send to.
    fleet.ip("link", "add", "geo0", "type", "veth", "peer", "name", "geo1")
    fleet.ip("link", "set", "dev", "geo0", "up")
    fleet.ip("addr", "add", "81.2.69.142/32", "dev", "geo0")
    fleet.ip("addr", "add", "10.20.0.1/24", "dev", "geo0")
    fleet.ip("addr", "add", "100.64.7.1/32", "dev", "geo0")
    fleet.ip("addr", "add", "2001:218::2/64", "dev", "geo0", "nodad")
    fleet.ip("addr", "add", "fd00:7::2/64", "dev", "geo0", "nodad")
    # (and the host's own 198.18.x.y on eth0, the benchmarking range: not public either)

    issued = fleet.call("POST", "/v1/hosts/join-tokens", {"ttl": "10m"}, status=201)
    fleet.start_agent(issued["token"])
    joined = fleet.wait("the host to join with its geolocation", lambda: (
        (view := fleet.host_view()) is not None and view["geolocation"] and view
    ))  # fmt: skip
    assert joined["geolocation"] == [pair(LONDON_V4), pair(TOKYO_V6)]
    assert (joined["geolocation_source"], joined["geolocation_reason"]) == ("lookup", None)
    name = fleet.host.name
    london, tokyo = (tuple(pair(n).split(",")) for n in (LONDON_V4, TOKYO_V6))
    fleet.wait("the agent to export its place", lambda: (
        fleet.exported() == sorted([(name, *london), (name, *tokyo)])
    ))  # fmt: skip

    # The address changes: the next heartbeat carries it, the pairs follow.
    fleet.ip("addr", "del", "81.2.69.142/32", "dev", "geo0")
    fleet.ip("addr", "add", "89.160.20.7/32", "dev", "geo0")
    moved = fleet.wait("the geolocation to follow the new address", lambda: (
        (view := fleet.host_view()) is not None
        and view["geolocation"] == [pair(LINKOPING_V4), pair(TOKYO_V6)] and view
    ))  # fmt: skip
    assert moved["geolocation_source"] == "lookup"
    linkoping = tuple(pair(LINKOPING_V4).split(","))
    fleet.wait("the agent to export the new place", lambda: (
        fleet.exported() == sorted([(name, *linkoping), (name, *tokyo)])
    ))  # fmt: skip

    # Only private addresses left: empty, and the host view says why.
    fleet.ip("addr", "flush", "dev", "geo0", "scope", "global")
    emptied = fleet.wait("the geolocation to be emptied", lambda: (
        (view := fleet.host_view()) is not None and not view["geolocation"] and view
    ))  # fmt: skip
    assert emptied["geolocation_reason"] == "no public address"
    fleet.wait("the agent to stop exporting a place", lambda: fleet.exported() == [])
