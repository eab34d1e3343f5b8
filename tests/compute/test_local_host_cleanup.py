"""Clean-up after a failed spawn: every step runs, and every failure is logged with what
it was cleaning (libvirt's test driver, real share mounts; needs root)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from support.availability import require_root
from wattvisor.compute import LocalHostClient
from wattvisor.compute.hostclient import SpawnFlavor, SpawnImage, SpawnRequest
from wattvisor.config import HostSettings
from wattvisor.host.driver import HostDriver
from wattvisor.host.shares import mount_table, mount_tmpfs, unmount_all


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    require_root("mounting share views")
    yield tmp_path
    for entry in reversed(mount_table()):
        if entry.mount_point.is_relative_to(os.path.realpath(tmp_path)):
            unmount_all(entry.mount_point)


def _request(tmp: Path) -> SpawnRequest:
    kernel = tmp / "vmlinuz"
    kernel.write_bytes(b"kernel")
    return SpawnRequest(
        server_uuid=str(uuid.uuid4()), display_name="doomed",
        domain_name=f"wvclean-{uuid.uuid4().hex[:8]}", project="p", user="u",
        flavor=SpawnFlavor(id="f", name="tiny", vcpus=1, ram_mb=64, disk_gb=0, swap_mb=0,
                           ephemeral_gb=0),
        image=SpawnImage(id="i", name="k", kernel_path=str(kernel)),
        power_metrics=True, created_at=datetime.now(UTC), user_uuid=str(uuid.uuid4()),
        project_uuid=str(uuid.uuid4()),
    )  # fmt: skip


def test_a_failed_clean_up_step_is_logged_and_the_next_one_still_runs(
    scratch: Path, caplog: pytest.LogCaptureFixture
) -> None:
    share_dir = scratch / "power-metrics"
    data_dir = scratch / "data"
    driver = HostDriver(
        HostSettings(virt_type="qemu", share_local_fs={str(share_dir): "scaphandre"}),
        data_dir, uri="test:///default",
    )  # fmt: skip
    client = LocalHostClient(driver)
    request = _request(scratch)
    # The spawn fails after its share is prepared: its config drive cannot be written.
    instance_dir = data_dir / "instances" / request.server_uuid
    (instance_dir / "config-drive.iso").mkdir(parents=True)
    # And removing the share will fail: something is mounted inside the domain's folder.
    pinned = share_dir / request.domain_name / "pinned"
    pinned.mkdir(parents=True)
    mount_tmpfs(pinned, 64)
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(IsADirectoryError):
            client.spawn(request)
    finally:
        client.close()

    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        f"failed spawn of server {request.server_uuid}" in m
        and f"removing the shares of {request.domain_name}" in m
        for m in failures
    ), failures
    assert not instance_dir.exists()  # the step after the failed one still ran
