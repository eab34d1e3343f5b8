"""Migration tunnels between two namespace hosts: made, used, counted, removed, swept."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import uuid
from typing import Any

import pytest

from support.namespace_hosts import NamespaceHost
from wattvisor.host.tunnels import (
    IPV4_OVERHEAD,
    TUNNEL_PREFIX,
    TunnelError,
    TunnelSpec,
    check_spec,
    link_name,
)

pytestmark = pytest.mark.libvirtd

# Runs inside a host: the agent's own process calls the module the same way.
_CALL = """
import dataclasses, json, sys
from wattvisor.host import tunnels
function = getattr(tunnels, sys.argv[1])
args = json.loads(sys.argv[2])
if sys.argv[1] in ("tunnel_up", "timed_up_down"):
    args = [tunnels.TunnelSpec(**args[0])]
result = function(*args)
if dataclasses.is_dataclass(result):
    result = dataclasses.asdict(result)
elif isinstance(result, list):
    result = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in result]
print(json.dumps(result))
"""


def _call(host: NamespaceHost, function: str, *args: Any) -> Any:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = host.run([sys.executable, "-c", _CALL, function, json.dumps(args)], env=env,
                      check=True)  # fmt: skip
    return json.loads(result.stdout)


def _ends(a: NamespaceHost, b: NamespaceHost, vni: int = 4321) -> tuple[dict[str, Any], ...]:
    migration = str(uuid.uuid4())
    return (
        {"migration_id": migration, "vni": vni, "local_underlay": a.address,
         "remote_underlay": b.address, "address": "100.100.200.1/30", "peer": "100.100.200.2"},
        {"migration_id": migration, "vni": vni, "local_underlay": b.address,
         "remote_underlay": a.address, "address": "100.100.200.2/30", "peer": "100.100.200.1"},
    )  # fmt: skip


def _links(host: NamespaceHost) -> list[str]:
    links = json.loads(host.run(["ip", "-j", "link", "show"], check=True).stdout)
    return [link["ifname"] for link in links if link["ifname"].startswith(TUNNEL_PREFIX)]


def _routes(host: NamespaceHost) -> str:
    return host.run(["ip", "route", "show"], check=True).stdout


_SERVE_ONCE = """
import socket, sys
server = socket.create_server((sys.argv[1], 7777))
server.settimeout(30)
conn, _ = server.accept()
total = 0
while chunk := conn.recv(65536):
    total += len(chunk)
print(total)
"""

_SEND = """
import socket, sys, time
for _ in range(100):
    try:
        conn = socket.create_connection((sys.argv[1], 7777), timeout=5)
        break
    except OSError:
        time.sleep(0.1)
conn.sendall(b"x" * int(sys.argv[2]))
conn.close()
"""


def test_a_tunnel_carries_traffic_between_two_hosts_and_goes_without_a_trace(
    two_hosts: tuple[NamespaceHost, NamespaceHost],
) -> None:
    a, b = two_hosts
    on_a, on_b = _ends(a, b)
    made_a = _call(a, "tunnel_up", on_a)
    made_b = _call(b, "tunnel_up", on_b)
    name = link_name(on_a["migration_id"])
    assert made_a["name"] == made_b["name"] == name
    assert made_a["vni"] == 4321 and made_a["address"] == "100.100.200.1/30"
    underlay_mtu = json.loads(a.run(["ip", "-j", "route", "get", b.address]).stdout)[0]
    link = json.loads(a.run(["ip", "-j", "link", "show", "dev", underlay_mtu["dev"]]).stdout)
    assert made_a["mtu"] == link[0]["mtu"] - IPV4_OVERHEAD
    # Again: the same link, nothing doubled.
    assert _call(a, "tunnel_up", on_a)["name"] == name and _links(a) == [name]
    size = 4 * 2**20
    env = {**os.environ}
    receiver = b.popen([sys.executable, "-c", _SERVE_ONCE, "100.100.200.2"], env=env,
                       stdout=subprocess.PIPE)  # fmt: skip
    a.run([sys.executable, "-c", _SEND, "100.100.200.2", str(size)], check=True)
    out, _ = receiver.communicate(timeout=60)
    assert int(out) == size
    last_a = _call(a, "tunnel_down", on_a["migration_id"])
    last_b = _call(b, "tunnel_down", on_b["migration_id"])
    assert last_a["tx_bytes"] > size and last_b["rx_bytes"] > size
    for host in (a, b):
        assert _links(host) == [] and "100.100.200." not in _routes(host)
        assert "100.100.200." not in host.run(["ip", "addr"]).stdout
    assert _call(a, "tunnel_down", on_a["migration_id"]) is None


def test_the_sweep_removes_every_tunnel_an_earlier_agent_left_and_nothing_else(
    two_hosts: tuple[NamespaceHost, NamespaceHost],
) -> None:
    a, b = two_hosts
    first, _ = _ends(a, b, vni=5001)
    second, _ = _ends(a, b, vni=5002)
    second = {**second, "address": "100.100.201.1/30", "peer": "100.100.201.2"}
    a.run(["ip", "link", "add", "wvkeep0", "type", "bridge"], check=True)
    try:
        _call(a, "tunnel_up", first)
        _call(a, "tunnel_up", second)
        assert len(_links(a)) == 2
        swept = _call(a, "sweep_tunnels")
        assert sorted(swept) == sorted(
            [link_name(first["migration_id"]), link_name(second["migration_id"])]
        )
        assert _links(a) == [] and "wvkeep0" in a.run(["ip", "link"]).stdout
    finally:
        a.run(["ip", "link", "del", "wvkeep0"])


def test_a_link_of_the_migration_with_another_vni_is_refused(
    two_hosts: tuple[NamespaceHost, NamespaceHost],
) -> None:
    a, b = two_hosts
    on_a, _ = _ends(a, b, vni=6001)
    _call(a, "tunnel_up", on_a)
    try:
        result = a.run(
            [sys.executable, "-c", _CALL, "tunnel_up", json.dumps([{**on_a, "vni": 6002}])],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert result.returncode != 0 and "exists with vni 6001, not 6002" in result.stderr
    finally:
        _call(a, "tunnel_down", on_a["migration_id"])


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"vni": 0}, "vni 0 is outside"),
        ({"vni": 1 << 24}, "is outside"),
        ({"migration_id": "x; rm -rf /"}, "is not a uuid"),
        ({"address": "100.100.0.1/24"}, "must be a /30 or an IPv6 /127"),
        ({"peer": "100.100.0.9"}, "is not the other address"),
        ({"remote_underlay": "fd00::1"}, "different IP versions"),
    ],
)
def test_a_spec_that_cannot_make_a_point_to_point_tunnel_is_refused_naming_the_value(
    change: dict[str, Any], words: str
) -> None:
    spec = TunnelSpec(
        migration_id=str(uuid.uuid4()), vni=10, local_underlay="198.18.0.2",
        remote_underlay="198.18.0.3", address="100.100.0.1/30", peer="100.100.0.2",
    )  # fmt: skip
    with pytest.raises(TunnelError, match=re.escape(words)):
        check_spec(dataclasses.replace(spec, **change))
