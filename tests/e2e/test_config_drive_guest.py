"""End to end: a guest built by wattvisor.guest finds its share's mount tag on its config drive.

The drive is written by ``wattvisor.host.configdrive``, attached as a read-only IDE
cdrom with a ``ua-`` alias by the product's own XML model, and read from inside
a TCG guest by the tiny image's ``cdrom`` scenario, which mounts the first
ISO 9660 cdrom and prints a file from it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt
import pytest

from support.guest_domains import read_console, unique_domain_name, wait_for_marker
from wattvisor import __version__
from wattvisor.guest import (
    Disk,
    Domain,
    InstanceMetadata,
    Serial,
    ShareMeta,
    validate_domain_xml,
)
from wattvisor.host.configdrive import (
    CONFIG_DRIVE_ALIAS,
    ConfigDriveMetadata,
    build_config_drive,
    config_drive_device,
    config_drive_metadata_document,
)
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

TAG = "wvpower"
BOOT_TIMEOUT_S = 120.0
META_FILE = "openstack/latest/meta_data.json"


def _file_on_console(console: Path) -> dict[str, Any]:
    """The JSON the guest printed: ``WV-CDROM-FILE file=... value=[<lines joined by |>]``."""
    line = wait_for_marker(console, "WV-CDROM-FILE ", 1)
    head, sep, rest = line.partition("value=[")
    assert sep and rest.endswith("]"), line
    assert f"file={META_FILE}" in head, line
    document: dict[str, Any] = json.loads(rest[:-1].replace("|", "\n"))
    return document


def test_guest_reads_its_mount_tag_from_the_config_drive(
    start_domain: Callable[[str], libvirt.virDomain],
    guest_image: GuestImage,
    world_readable_tmp: Path,
) -> None:
    instance = str(uuid.uuid4())
    shares = (ShareMeta(tag=TAG, purpose="power_metrics"),)
    meta = ConfigDriveMetadata(uuid=instance, name="power-demo", project_id="proj-a", shares=shares)
    drive = build_config_drive(world_readable_tmp / "drives" / f"{instance}.iso", meta)
    console = world_readable_tmp / "console.log"

    domain = Domain(
        name=unique_domain_name(),
        uuid=instance,
        memory_mib=256,
        vcpus=1,
        virt_type="qemu",
        machine="pc",
        kernel=str(guest_image.kernel),
        initrd=str(guest_image.initrd),
        cmdline=guest_image.cmdline("cdrom", file=META_FILE),
        on_reboot="destroy",
        instance_metadata=InstanceMetadata(
            package_version=__version__,
            display_name="power-demo",
            creation_time=datetime.now(UTC),
            shares=shares,
        ),
    )
    domain.add_device(Serial(type="file", source_path=str(console)))
    domain.add_device(config_drive_device(drive, bus="ide"))
    validate_domain_xml(domain.to_xml())

    running = start_domain(domain.to_xml())
    live = Domain.parse(running.XMLDesc(0))
    cdrom = live.find_device(alias=CONFIG_DRIVE_ALIAS)
    assert isinstance(cdrom, Disk), live.to_xml()
    assert CONFIG_DRIVE_ALIAS.startswith("ua-")
    assert (cdrom.device, cdrom.bus, cdrom.readonly) == ("cdrom", "ide", True)
    assert cdrom.source_file == str(drive)

    wait_for_marker(console, "WV-DONE", BOOT_TIMEOUT_S)
    text = read_console(console)
    assert "WV-CDROM-MOUNTED" in text, text
    seen = _file_on_console(console)

    assert seen["uuid"] == instance
    assert seen["project_id"] == "proj-a"
    assert [d["tag"] for d in seen["devices"] if d["type"] == "share"] == [TAG]
    assert seen["devices"][0]["purpose"] == "power_metrics"
    # The owner's GET /v1/servers/{id}/metadata serves this very document.
    assert seen == config_drive_metadata_document(meta)
    # The guest sees the tag and never a host path.
    assert str(world_readable_tmp) not in json.dumps(seen)
