"""The host's addresses over netlink (pyroute2), read inside a network namespace the test
makes itself: secondary addresses too, both families, nothing sent anywhere."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wattvisor.host.ip_addresses import host_ip_addresses

READ = "import json; from wattvisor.host.ip_addresses import host_ip_addresses as h; " \
       "print(json.dumps(h()))"  # fmt: skip


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root; these tests run as root on this machine")
    name = f"wvgeo-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def _in(netns: str, *argv: str) -> None:
    subprocess.run(["ip", "-n", netns, *argv], check=True, capture_output=True)


def _read_in(netns: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        ["nsenter", f"--net={Path('/run/netns') / netns}", sys.executable, "-c", READ],
        check=True, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    addresses: list[str] = json.loads(result.stdout)
    return addresses


def test_every_address_of_every_interface_is_read_ipv4_first(netns: str) -> None:
    _in(netns, "link", "set", "dev", "lo", "up")
    # A veth pair with both ends inside: an interface to hold addresses, no traffic.
    _in(netns, "link", "add", "geo0", "type", "veth", "peer", "name", "geo1")
    _in(netns, "link", "set", "dev", "geo0", "up")
    _in(netns, "addr", "add", "81.2.69.142/24", "dev", "geo0")
    _in(netns, "addr", "add", "89.160.20.5/32", "dev", "geo0")  # a secondary address
    _in(netns, "addr", "add", "10.9.0.1/24", "dev", "geo0")
    _in(netns, "addr", "add", "2001:218::2/64", "dev", "geo0", "nodad")
    found = _read_in(netns)
    assert {"127.0.0.1", "81.2.69.142", "89.160.20.5", "10.9.0.1", "::1", "2001:218::2"} <= set(
        found
    )
    versions = [":" in a for a in found]
    assert versions == sorted(versions)  # IPv4 first


def test_an_empty_namespace_has_no_addresses(netns: str) -> None:
    assert _read_in(netns) == []


def test_reading_here_gives_canonical_addresses() -> None:
    import ipaddress

    for address in host_ip_addresses():
        assert str(ipaddress.ip_address(address)) == address
