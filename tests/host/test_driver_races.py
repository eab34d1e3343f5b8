"""Lifecycle calls tolerate a guest changing state under them (libvirt's test driver).

A guest can power off, or another client can stop, start or undefine it, between
the moment the driver looks at it and the moment it acts. These tests force
exactly that interleaving: the domain handle the driver gets is the real libvirt
domain, and right before the named libvirt call the change is made for real
through the same libvirt connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from wattvisor.config import HostSettings
from wattvisor.guest import Domain
from wattvisor.host.driver import DomainNotFound, HostDriver

TEST_URI = "test:///default"


class _Interleaved:
    """A real libvirt domain; ``change`` runs once, right before its method ``before``."""

    def __init__(self, dom: libvirt.virDomain, before: str, change: Callable[[], None]) -> None:
        self._dom = dom
        self._before = before
        self._change: Callable[[], None] | None = change

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._dom, name)
        if name != self._before or self._change is None:
            return attr

        def interleaved(*args: Any, **kwargs: Any) -> Any:
            change, self._change = self._change, None
            assert change is not None
            change()
            return attr(*args, **kwargs)

        return interleaved

    @property
    def changed(self) -> bool:
        return self._change is None


class RacingDriver(HostDriver):
    """The host driver whose next domain lookup hands out an interleaved domain."""

    race: tuple[str, Callable[[], None]] | None = None
    handed_out: _Interleaved | None = None

    def _lookup(self, ident: str) -> libvirt.virDomain:
        dom = super()._lookup(ident)
        if self.race is None:
            return dom
        before, change = self.race
        self.race = None
        self.handed_out = _Interleaved(dom, before, change)
        return self.handed_out

    def other_client(self, ident: str) -> libvirt.virDomain:
        """The same domain as another libvirt client sees it."""
        return self.connection.get().lookupByUUIDString(ident)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[RacingDriver]:
    host = RacingDriver(HostSettings(virt_type="qemu"), tmp_path, uri=TEST_URI)
    yield host
    for state in host.list_domains():
        if state.name.startswith("wvrace-"):
            host.undefine(state.uuid)
    host.close()


def _guest() -> Domain:
    domain = Domain(name=f"wvrace-{uuid.uuid4().hex[:8]}", memory_mib=64, virt_type="qemu")
    domain.virt_type = "test"  # the test driver only runs domains of type 'test'
    return domain


def _running(driver: RacingDriver) -> str:
    state = driver.define(_guest())
    driver.start(state.uuid)
    return state.uuid


def _exists(driver: RacingDriver, ident: str) -> bool:
    try:
        driver.domain_state(ident)
    except DomainNotFound:
        return False
    return True


def test_undefine_of_a_guest_that_powers_off_meanwhile_succeeds(driver: RacingDriver) -> None:
    ident = _running(driver)
    driver.race = ("destroy", lambda: driver.other_client(ident).destroy())
    driver.undefine(ident)
    assert driver.handed_out is not None and driver.handed_out.changed
    assert not _exists(driver, ident)


def test_destroy_of_a_guest_that_powers_off_meanwhile_succeeds(driver: RacingDriver) -> None:
    ident = _running(driver)
    driver.race = ("destroy", lambda: driver.other_client(ident).destroy())
    state = driver.destroy(ident)
    assert driver.handed_out is not None and driver.handed_out.changed
    assert not state.active and state.state == "shutoff"


def test_start_of_a_guest_started_meanwhile_succeeds(driver: RacingDriver) -> None:
    ident = driver.define(_guest()).uuid
    driver.race = ("create", lambda: driver.other_client(ident).create())
    state = driver.start(ident)
    assert driver.handed_out is not None and driver.handed_out.changed
    assert state.active


def test_undefine_of_a_guest_undefined_meanwhile_succeeds(driver: RacingDriver) -> None:
    ident = driver.define(_guest()).uuid
    driver.race = ("undefineFlags", lambda: driver.other_client(ident).undefine())
    driver.undefine(ident)
    assert driver.handed_out is not None and driver.handed_out.changed
    assert not _exists(driver, ident)


def _transient(driver: RacingDriver) -> str:
    xml = _guest().to_xml()
    return str(driver.connection.get().createXML(xml, 0).UUIDString())


def test_undefine_of_a_transient_guest_that_vanishes_meanwhile_succeeds(
    driver: RacingDriver,
) -> None:
    ident = _transient(driver)
    driver.race = ("destroy", lambda: driver.other_client(ident).destroy())
    driver.undefine(ident)
    assert driver.handed_out is not None and driver.handed_out.changed
    assert not _exists(driver, ident)


def test_shutdown_of_a_transient_guest_that_vanishes_meanwhile_says_shutoff(
    driver: RacingDriver,
) -> None:
    ident = _transient(driver)
    driver.race = ("shutdown", lambda: driver.other_client(ident).destroy())
    state = driver.shutdown(ident, timeout_s=5)
    assert driver.handed_out is not None and driver.handed_out.changed
    assert (state.state, state.active) == ("shutoff", False)


def test_start_of_a_guest_that_cannot_start_still_fails(driver: RacingDriver) -> None:
    """Tolerance is for the wanted state only: a refusal that leaves the guest off is an error."""
    ident = driver.define(_guest()).uuid
    driver.race = ("create", lambda: driver.other_client(ident).undefine())
    with pytest.raises(DomainNotFound):
        driver.start(ident)


def test_state_of_a_guest_that_powered_off_by_itself_says_so(driver: RacingDriver) -> None:
    ident = _running(driver)
    assert driver.destroy(ident).reason == "destroyed"
    assert driver.start(ident).reason == ""
