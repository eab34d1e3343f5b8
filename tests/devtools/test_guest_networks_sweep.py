"""The start-of-session sweep of test networks on the shared libvirtd: a network whose
recorded owner process is gone is removed, a live session's and an unrecorded one are
left alone (real ``qemu:///system``; the networks are only defined, never started)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import libvirt
import pytest

from support.guest_networks import (
    PREFIX,
    STATE_DIR,
    owner_of,
    remove_network,
    sweep_leftover_networks,
    unique_network_name,
)
from support.session_owner import Owner, start_ticks_of

pytestmark = [pytest.mark.libvirtd]


def _dead_owner() -> Owner:
    """A process that existed and ended: its pid with the start time it had."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    owner = Owner(child.pid, start_ticks_of(child.pid))
    assert owner.start_ticks is not None and owner.alive()
    child.communicate(b"", timeout=30)
    assert not owner.alive()
    return owner


def _define(conn: libvirt.virConnect, name: str) -> None:
    # No <forward>: isolated; defined only, so no bridge is ever made.
    conn.networkDefineXML(f"<network><name>{name}</name></network>")


def _exists(conn: libvirt.virConnect, name: str) -> bool:
    return name in {n.name() for n in conn.listAllNetworks()}


@pytest.fixture
def made(libvirt_system: libvirt.virConnect) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        remove_network(libvirt_system, name)


def test_the_sweep_removes_a_dead_sessions_network_and_spares_live_and_unknown_ones(
    libvirt_system: libvirt.virConnect, made: list[str]
) -> None:
    dead = unique_network_name(_dead_owner())
    live = unique_network_name()  # this session's
    unknown = f"{PREFIX}{dead[-8:][::-1]}"  # no record: whose it is cannot be told
    made += [dead, live, unknown]
    for name in made:
        _define(libvirt_system, name)
    assert owner_of(dead) is not None and owner_of(unknown) is None

    swept = sweep_leftover_networks(libvirt_system)

    assert dead in swept and live not in swept and unknown not in swept
    assert not _exists(libvirt_system, dead)
    assert not (STATE_DIR / f"{dead}.json").exists()
    assert _exists(libvirt_system, live) and owner_of(live) == Owner.me()
    assert _exists(libvirt_system, unknown)


def test_removing_a_network_forgets_its_owner(
    libvirt_system: libvirt.virConnect, made: list[str]
) -> None:
    name = unique_network_name()
    made.append(name)
    _define(libvirt_system, name)
    remove_network(libvirt_system, name)
    assert not _exists(libvirt_system, name) and owner_of(name) is None
