"""libvirt networks of tests: unique names and subnets, and their removal."""

from __future__ import annotations

import contextlib
import random
import secrets

import libvirt


def unique_network_name() -> str:
    """``wvtest-net-<hex>``: never the name of another session's network."""
    return f"wvtest-net-{secrets.token_hex(4)}"


def random_ipv4_subnet(prefix: int = 24) -> str:
    """A subnet in 10.160.0.0/11 that concurrent sessions are unlikely to share."""
    rng = random.SystemRandom()
    third = rng.randrange(0, 256) & (0xFF << max(0, 24 - prefix)) & 0xFF
    return f"10.{rng.randrange(160, 192)}.{third}.0/{prefix}"


def random_ipv6_subnet() -> str:
    rng = random.SystemRandom()
    return f"fd57:7476:{rng.randrange(0x1000, 0xFFFF):x}:{rng.randrange(0x1000, 0xFFFF):x}::/64"


def remove_network(conn: libvirt.virConnect, name: str) -> None:
    """Stop and undefine the libvirt network ``name`` if it exists."""
    try:
        network = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return
    with contextlib.suppress(libvirt.libvirtError):
        if network.isActive():
            network.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        network.undefine()
