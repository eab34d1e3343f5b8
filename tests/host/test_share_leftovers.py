"""Share mounts and folders left behind by a crash are removed by delete and by start-up.

What a SIGKILL between "share prepared" and "domain defined" leaves: a tmpfs on
``<share dir>/<domain>`` and a read-only bind view under ``<data_dir>/shares/``,
with no domain to own them. Real mounts (needs root) on libvirt's test driver.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from support.availability import require_root
from wattvisor.compute import LocalHostClient
from wattvisor.config import HostSettings
from wattvisor.guest import Domain, InstanceMetadata
from wattvisor.host.driver import HostDriver
from wattvisor.host.shares import mount_table, unmount_all

TEST_URI = "test:///default"


def _mounts_under(*roots: Path) -> list[Path]:
    """Mount points at or below ``roots``, read from /proc/self/mountinfo."""
    real = [Path(os.path.realpath(r)) for r in roots]
    return sorted(
        e.mount_point for e in mount_table() if any(e.mount_point.is_relative_to(r) for r in real)
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    require_root("mounting share views")
    yield tmp_path
    for entry in reversed(mount_table()):
        if entry.mount_point.is_relative_to(tmp_path):
            unmount_all(entry.mount_point)


def _driver(scratch: Path) -> HostDriver:
    share_dir = scratch / "power-metrics"
    share_dir.mkdir(exist_ok=True)
    return HostDriver(
        HostSettings(virt_type="qemu", share_local_fs={str(share_dir): "scaphandre"}),
        scratch / "data",
        uri=TEST_URI,
    )


def _crashed_build(driver: HostDriver) -> str:
    """Shares prepared for a domain that was never defined, as a killed build leaves them."""
    name = f"wvleft-{uuid.uuid4().hex[:8]}"
    [share] = driver.prepare_shares(name)
    assert share.data_dir in _mounts_under(share.data_dir)  # the per-domain tmpfs
    return name


def _defined_with_share(driver: HostDriver) -> Domain:
    """A domain of wattvisor's (it carries the instance metadata) with a share."""
    name = f"wvkeep-{uuid.uuid4().hex[:8]}"
    domain = Domain(
        name=name, memory_mib=64, virt_type="qemu",
        instance_metadata=InstanceMetadata(
            package_version="0", display_name=name, creation_time=datetime.now(UTC)
        ),
    )  # fmt: skip
    domain.virt_type = "test"
    for device in driver.share_devices(driver.prepare_shares(name)):
        domain.add_device(device)
    driver.define(domain)
    return domain


def test_delete_of_a_server_whose_domain_never_came_removes_its_shares(scratch: Path) -> None:
    driver = _driver(scratch)
    client = LocalHostClient(driver)
    try:
        name = _crashed_build(driver)
        client.delete(str(uuid.uuid4()), name)
    finally:
        client.close()
    roots = (scratch / "power-metrics", scratch / "data" / "shares")
    assert _mounts_under(*roots) == []
    assert not (scratch / "power-metrics" / name).exists()
    assert not (scratch / "data" / "shares" / "scaphandre" / name).exists()


def test_startup_removes_shares_no_domain_owns_and_keeps_the_others(scratch: Path) -> None:
    before_crash = _driver(scratch)
    kept = _defined_with_share(before_crash)
    left = _crashed_build(before_crash)
    (scratch / "data" / "shares" / "scaphandre" / "wvleft-empty").mkdir()  # a bare folder

    # The restart. (The first driver stays open: test:///default forgets its domains
    # when its last connection closes.)
    driver = _driver(scratch)
    try:
        report = driver.startup()
        assert kept.name in report.shares_reestablished
        assert report.problems == []
        roots = (scratch / "power-metrics", scratch / "data" / "shares")
        mounted = _mounts_under(*roots)
        assert all(left not in str(point) for point in mounted), mounted
        assert any(kept.name in str(point) for point in mounted)
        assert not (scratch / "power-metrics" / left).exists()
        assert not (scratch / "data" / "shares" / "scaphandre" / left).exists()
        assert not (scratch / "data" / "shares" / "scaphandre" / "wvleft-empty").exists()
        assert str(scratch / "power-metrics" / left) in report.shares_removed
    finally:
        driver.undefine(kept.name)
        driver.close()
        before_crash.close()
    assert _mounts_under(scratch / "power-metrics", scratch / "data" / "shares") == []


def test_startup_leaves_the_folder_of_any_domain_on_the_host(scratch: Path) -> None:
    """A domain without wattvisor's metadata (another tool's, or another wattvisor's)
    keeps whatever carries its name."""
    driver = _driver(scratch)
    domain = Domain(name=f"wvother-{uuid.uuid4().hex[:8]}", memory_mib=64, virt_type="qemu")
    domain.virt_type = "test"
    driver.define(domain)
    folder = scratch / "power-metrics" / domain.name
    folder.mkdir()
    try:
        report = driver.startup()
        assert folder.is_dir()
        assert domain.name not in report.shares_reestablished
    finally:
        driver.undefine(domain.name)
        driver.close()


def test_a_share_that_cannot_be_made_is_that_domains_problem_only(scratch: Path) -> None:
    driver = _driver(scratch)
    good = _defined_with_share(driver)
    bad = _defined_with_share(driver)
    driver.release_shares(bad.name)
    driver.release_shares(good.name)
    # A symbolic link where the domain's folder belongs: never shared (ShareError).
    (scratch / "power-metrics" / bad.name).symlink_to(scratch)
    try:
        report = driver.startup()
        assert report.shares_reestablished == [good.name]
        [problem] = report.problems
        assert bad.name in problem and "symbolic link" in problem
    finally:
        (scratch / "power-metrics" / bad.name).unlink()
        for domain in (good, bad):
            driver.undefine(domain.name)
        driver.close()
