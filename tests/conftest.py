"""Fixtures shared by every test: a real libvirtd, the tiny guest image, scratch directories.

Tests marked ``libvirtd`` or ``guest`` need root and a QEMU-capable libvirt.
Locally they are skipped with the reason when that is missing; in CI
(``CI=true``) they fail instead, because CI always has what they need and a
skip there would hide a broken set-up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from support.availability import unavailable
from support.guest_domains import destroy_and_undefine
from support.guest_networks import (
    random_ipv4_subnet,
    random_ipv6_subnet,
    remove_network,
    sweep_leftover_networks,
    unique_network_name,
)
from wattvisor.devtools import libvirtd as dev_libvirtd
from wattvisor.images import GuestImage, GuestImageError, ensure_guest_image
from wattvisor.placement import Placement
from wattvisor.store import make_engine

# PostgreSQL server (session) and store_url (one per backend) fixtures; skips fail in CI
# unless marked skip_by_design; pytester runs small suites to test that policy.
# Namespace hosts (two_hosts, make_namespace_hosts): several libvirt hosts on this machine.
# fd_budget: the open file descriptors each test module leaves behind, in the summary.
pytest_plugins = (
    "support.postgres",
    "support.strict_skips",
    "support.namespace_hosts",
    "support.fd_budget",
    "pytester",
)

SYSTEM_URI = dev_libvirtd.SYSTEM_URI

# Servers built in tests go on an isolated libvirt network (no <forward>: no traffic
# leaves this machine) of this session's own name and subnets, removed at its end.
TEST_NETWORK = unique_network_name()
os.environ["WATTVISOR_HOST__NETWORK__MODE"] = "isolated"
os.environ["WATTVISOR_HOST__NETWORK__NAME"] = TEST_NETWORK
os.environ["WATTVISOR_HOST__NETWORK__IPV4_SUBNET"] = random_ipv4_subnet()
os.environ["WATTVISOR_HOST__NETWORK__IPV6_SUBNET"] = random_ipv6_subnet()


@pytest.fixture(scope="session", autouse=True)
def _remove_test_network() -> Iterator[None]:
    """Remove the networks killed sessions left on the system libvirtd (never a live
    session's), and this session's own at its end, pass or fail."""
    if dev_libvirtd.libvirtd_answers(SYSTEM_URI):
        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(SYSTEM_URI)
            try:
                sweep_leftover_networks(conn)
            finally:
                conn.close()
    yield
    if not dev_libvirtd.libvirtd_answers(SYSTEM_URI):
        return
    with contextlib.suppress(libvirt.libvirtError):
        conn = libvirt.open(SYSTEM_URI)
        try:
            remove_network(conn, TEST_NETWORK)
        finally:
            conn.close()


@pytest.fixture(scope="session")
def libvirt_system() -> Iterator[libvirt.virConnect]:
    """An open connection to a real ``qemu:///system`` libvirtd.

    The daemon is started (via :mod:`wattvisor.devtools.libvirtd`) only when none
    answers, and at the end of the session only what was started here is
    stopped, and only when no other process still relies on it.
    """
    if os.geteuid() != 0 and not dev_libvirtd.libvirtd_answers(SYSTEM_URI):
        unavailable("no libvirtd answers on qemu:///system and starting one needs root")
    try:
        started = dev_libvirtd.ensure_libvirtd(SYSTEM_URI)
    except dev_libvirtd.LocalVirtError as exc:
        unavailable(f"libvirtd could not be started: {exc}")
    conn = libvirt.open(SYSTEM_URI)
    try:
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            _remove_leftover_test_domains(conn)
        conn.close()
        started.stop()


def _remove_leftover_test_domains(conn: libvirt.virConnect) -> None:
    """Last-resort cleanup of this session's domains if a test's own teardown failed."""
    for name in _session_domains:
        with contextlib.suppress(libvirt.libvirtError):
            destroy_and_undefine(conn.lookupByName(name))
    _session_domains.clear()


_session_domains: set[str] = set()


@pytest.fixture
def start_domain(
    libvirt_system: libvirt.virConnect,
) -> Iterator[Callable[[str], libvirt.virDomain]]:
    """``start(xml)`` creates a transient domain that is destroyed after the test, pass or fail.

    Name the domain with ``support.guest_domains.unique_domain_name()`` (``wvtest-<hex>``)
    so that concurrent sessions never collide.
    """
    created: list[str] = []

    def start(xml: str) -> libvirt.virDomain:
        domain = libvirt_system.createXML(xml, 0)
        created.append(domain.name())
        _session_domains.add(domain.name())
        return domain

    yield start
    for name in created:
        with contextlib.suppress(libvirt.libvirtError):
            destroy_and_undefine(libvirt_system.lookupByName(name))
        _session_domains.discard(name)


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The tiny busybox guest (built on first use, then served from the cache)."""
    try:
        return ensure_guest_image()
    except GuestImageError as exc:
        unavailable(f"the guest image cannot be built: {exc}")


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    """A scratch directory every user can traverse (pytest's own tmp_path is 0700).

    For files that QEMU (running as ``libvirt-qemu``) or virtiofsd must reach.
    """
    path = Path(tempfile.mkdtemp(prefix="wvtest-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Guest tests need libvirtd too; make the marker say so for ``-m libvirtd`` runs."""
    for item in items:
        if item.get_closest_marker("guest") and not item.get_closest_marker("libvirtd"):
            item.add_marker(pytest.mark.libvirtd)


@pytest.fixture
def placement(store_url: str) -> Iterator[Placement]:
    """A placement service on a freshly migrated store, once per backend (SQLite, PostgreSQL)."""
    engine = make_engine(store_url)
    try:
        yield Placement(engine)
    finally:
        engine.dispose()
