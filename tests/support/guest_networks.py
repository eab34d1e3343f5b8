"""libvirt networks of tests: unique names and subnets, their removal, and the sweep of
what killed sessions left.

A session's network lives on the shared libvirtd, which outlives the session: one
killed before its teardown leaves a persistent ``wvtest-net-*`` network behind. So
each name is recorded with the process that owns it (pid and start time, as
:mod:`support.namespace_hosts` does for its hosts) under :data:`STATE_DIR` before
the network exists, and a session starts by removing the networks whose owner is
gone. A network without a record (another tool's, or one being recorded) is left
alone, and so is every network of a live session.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import secrets
from collections.abc import Iterator
from pathlib import Path

import libvirt

from support.session_owner import Owner

PREFIX = "wvtest-net-"
STATE_DIR = Path("/run/wattvisor-test-networks")
"""One ``<network name>.json`` per recorded network: its owner's pid and start time."""


def unique_network_name(owner: Owner | None = None) -> str:
    """``wvtest-net-<hex>``: never the name of another session's network. The name is
    recorded as ``owner``'s (this process by default) before anything is made with it."""
    name = f"{PREFIX}{secrets.token_hex(4)}"
    with contextlib.suppress(OSError):  # no record (not root): never swept, only left
        record_owner(name, owner or Owner.me())
    return name


def record_owner(name: str, owner: Owner) -> None:
    with _state_lock():
        path = STATE_DIR / f"{name}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"pid": owner.pid, "start_ticks": owner.start_ticks}))
        os.replace(temporary, path)


def owner_of(name: str) -> Owner | None:
    """The recorded owner of network ``name``, None when there is no readable record."""
    try:
        data = json.loads((STATE_DIR / f"{name}.json").read_text())
        return Owner(int(data["pid"]), data["start_ticks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def random_ipv4_subnet(prefix: int = 24) -> str:
    """A subnet in 10.160.0.0/11 that concurrent sessions are unlikely to share."""
    rng = random.SystemRandom()
    third = rng.randrange(0, 256) & (0xFF << max(0, 24 - prefix)) & 0xFF
    return f"10.{rng.randrange(160, 192)}.{third}.0/{prefix}"


def random_ipv6_subnet() -> str:
    rng = random.SystemRandom()
    return f"fd57:7476:{rng.randrange(0x1000, 0xFFFF):x}:{rng.randrange(0x1000, 0xFFFF):x}::/64"


def remove_network(conn: libvirt.virConnect, name: str) -> None:
    """Stop and undefine the libvirt network ``name`` if it exists, and forget its owner."""
    try:
        network = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        _forget(name)
        return
    with contextlib.suppress(libvirt.libvirtError):
        if network.isActive():
            network.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        network.undefine()
    with contextlib.suppress(libvirt.libvirtError):
        conn.networkLookupByName(name)
        return  # still there (removal failed): keep the record, the next sweep tries again
    _forget(name)


def sweep_leftover_networks(conn: libvirt.virConnect) -> list[str]:
    """Remove the ``wvtest-net-*`` networks whose recorded owner process is gone; returns
    their names. Records of dead owners whose network is gone already are dropped too."""
    swept: list[str] = []
    names = {n.name() for n in conn.listAllNetworks() if n.name().startswith(PREFIX)}
    for name in sorted(names):
        owner = owner_of(name)
        if owner is None or owner.alive():
            continue
        remove_network(conn, name)
        swept.append(name)
    if STATE_DIR.is_dir():
        for record in STATE_DIR.glob(f"{PREFIX}*.json"):
            name = record.name.removesuffix(".json")
            owner = owner_of(name)
            if name not in names and owner is not None and not owner.alive():
                _forget(name)
    return swept


def _forget(name: str) -> None:
    with _state_lock(), contextlib.suppress(FileNotFoundError):
        (STATE_DIR / f"{name}.json").unlink()


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(STATE_DIR / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
