"""End to end: a guest built by wattvisor.guest, defined by the host driver, with share_local_fs.

The guest mounts the tag, reads a file the host keeps updating, and its write
attempts fail; the host folder is unchanged. This is the promise behind
COMPUTE_SHARE_LOCAL_FS, exercised through the product's own code paths.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import libvirt
import pytest

from support.growing_file import GrowingCounterFile
from support.guest_domains import marker_fields, unique_domain_name, wait_for_marker
from wattvisor import __version__
from wattvisor.config import HostSettings
from wattvisor.guest import (
    Domain,
    Filesystem,
    InstanceMetadata,
    MemoryBacking,
    Serial,
    ShareMeta,
    validate_domain_xml,
)
from wattvisor.host.driver import HostDriver
from wattvisor.host.shares import mount_table
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

TAG = "wvpower"
BOOT_TIMEOUT_S = 120.0


@pytest.fixture
def driver(libvirt_system: libvirt.virConnect, world_readable_tmp: Path) -> Iterator[HostDriver]:
    share_dir = world_readable_tmp / "scaphandre"
    share_dir.mkdir()
    host = HostDriver(
        HostSettings(virt_type="qemu", share_local_fs={str(share_dir): TAG}),
        world_readable_tmp / "data",
        uri="qemu:///system",
    )
    yield host
    host.close()


def _markers(console: Path) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for line in console.read_text(errors="replace").splitlines():
        if line.startswith("WV-"):
            marker, _, rest = line.rstrip("\r").partition(" ")
            fields = marker_fields(rest)
            found[marker + (f"#{fields.get('n')}" if marker == "WV-READ" else "")] = fields
    return found


def test_guest_built_by_wattvisor_reads_its_share_and_cannot_write(
    driver: HostDriver, guest_image: GuestImage, world_readable_tmp: Path
) -> None:
    assert "COMPUTE_SHARE_LOCAL_FS" in driver.traits()
    name = unique_domain_name()
    console = world_readable_tmp / "console.log"
    [share] = driver.prepare_shares(name)
    domain = Domain(
        name=name,
        uuid=str(uuid.uuid4()),
        memory_mib=256,
        vcpus=1,
        virt_type="qemu",
        machine="pc",
        kernel=str(guest_image.kernel),
        initrd=str(guest_image.initrd),
        cmdline=guest_image.cmdline("share", tag=TAG, file="energy_uj", pause=3),
        memory_backing=MemoryBacking(source_type="memfd", access_mode="shared"),
        instance_metadata=InstanceMetadata(
            package_version=__version__,
            display_name="power-demo",
            creation_time=datetime.now(UTC),
            shares=(ShareMeta(tag=TAG, purpose="power_metrics"),),
        ),
    )
    domain.add_device(Serial(type="file", source_path=str(console)))
    for device in driver.share_devices([share]):
        domain.add_device(device)
    validate_domain_xml(domain.to_xml())
    # Tenants see the mount tag, never the host path.
    metadata_xml = domain.instance_metadata.to_xml() if domain.instance_metadata else ""
    assert TAG in metadata_xml and str(world_readable_tmp) not in metadata_xml

    state = driver.define(domain)
    try:
        with GrowingCounterFile(share.data_dir / "energy_uj", step=1_000_000) as counter:
            driver.start(state.uuid)
            wait_for_marker(console, "WV-DONE", BOOT_TIMEOUT_S)
        markers = _markers(console)
        [fs] = driver.domain(state.uuid).devices.of_type(Filesystem)
        assert fs.source_dir == str(share.source_dir) != str(share.data_dir)
    finally:
        driver.undefine(state.uuid)

    assert "WV-MOUNTED" in markers, markers
    first, second = int(markers["WV-READ#1"]["value"]), int(markers["WV-READ#2"]["value"])
    assert 0 < first < second <= counter.value
    for attempt in ("WV-WRITE-NEW", "WV-WRITE-EXISTING", "WV-WRITE-MKDIR"):
        assert markers[attempt]["rc"] != "0", markers[attempt]
        assert "Read-only file system" in markers[attempt]["error"], markers[attempt]
    # Undefine took the read-only view down and removed the per-domain data.
    assert not share.data_dir.exists()
    assert not any(e.mount_point == share.source_dir for e in mount_table())


def test_host_folder_is_unchanged_by_the_guest(
    driver: HostDriver, guest_image: GuestImage, world_readable_tmp: Path
) -> None:
    name = unique_domain_name()
    console = world_readable_tmp / "console.log"
    [share] = driver.prepare_shares(name)
    (share.data_dir / "energy_uj").write_text("42")
    domain = Domain(
        name=name,
        memory_mib=256,
        vcpus=1,
        virt_type="qemu",
        machine="pc",
        kernel=str(guest_image.kernel),
        initrd=str(guest_image.initrd),
        cmdline=guest_image.cmdline("share", tag=TAG, file="energy_uj", pause=1),
        memory_backing=MemoryBacking(),
    )
    domain.add_device(Serial(type="file", source_path=str(console)))
    for device in driver.share_devices([share]):
        domain.add_device(device)
    state = driver.define(domain)
    try:
        driver.start(state.uuid)
        wait_for_marker(console, "WV-DONE", BOOT_TIMEOUT_S)
        listing = sorted(p.name for p in share.data_dir.iterdir())
        content = (share.data_dir / "energy_uj").read_text()
    finally:
        driver.undefine(state.uuid)
    assert listing == ["energy_uj"]
    assert content == "42"
