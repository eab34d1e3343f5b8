"""End to end: a real TCG guest reads its share live and cannot write into it.

This is the security promise of ``COMPUTE_SHARE_LOCAL_FS``: the guest sees the
counters the host keeps updating, and nothing it does reaches the host folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from support.growing_file import GrowingCounterFile
from support.guest_domains import (
    GuestDomainSpec,
    GuestShare,
    marker_fields,
    unique_domain_name,
    wait_for_marker,
)
from wattvisor.host.shares import LIBVIRT_READONLY_VIRTIOFS, ShareManager
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

TAG = "wvshare"
BOOT_TIMEOUT_S = 120.0


@pytest.fixture
def share_manager(world_readable_tmp: Path, libvirt_system: libvirt.virConnect) -> ShareManager:
    share_dir = world_readable_tmp / "scaphandre"
    share_dir.mkdir()
    return ShareManager(
        {str(share_dir): TAG},
        data_dir=world_readable_tmp / "data",
        libvirt_version=libvirt_system.getLibVersion(),
    )


@pytest.fixture
def domain_name(share_manager: ShareManager) -> Iterator[str]:
    name = unique_domain_name()
    yield name
    share_manager.release(name)
    share_manager.discard_data(name)
    assert share_manager.mounted_views() == []


def _boot_share_scenario(
    start: Callable[[str], libvirt.virDomain],
    image: GuestImage,
    name: str,
    share: GuestShare,
    console: Path,
) -> dict[str, dict[str, str]]:
    """Boot the ``share`` scenario and return the fields of each WV- marker it printed."""
    domain = GuestDomainSpec(
        name=name,
        image=image,
        cmdline=image.cmdline("share", tag=TAG, file="value", pause=3),
        serial_log=console,
        shares=(share,),
    )
    dom = start(domain.xml())
    wait_for_marker(console, "WV-DONE", BOOT_TIMEOUT_S)
    with_fields: dict[str, dict[str, str]] = {}
    for line in console.read_text(errors="replace").splitlines():
        if line.startswith("WV-"):
            marker, _, rest = line.rstrip("\r").partition(" ")
            key = marker + (f"#{marker_fields(rest).get('n')}" if marker == "WV-READ" else "")
            with_fields[key] = marker_fields(rest)
    with contextlib.suppress(libvirt.libvirtError):
        dom.destroy()  # normally gone already: the guest powers itself off
    return with_fields


def test_guest_reads_live_values_but_cannot_write_into_share(
    start_domain: Callable[[str], libvirt.virDomain],
    guest_image: GuestImage,
    share_manager: ShareManager,
    domain_name: str,
    world_readable_tmp: Path,
) -> None:
    assert share_manager.readonly_mode() in ("flag", "bind"), share_manager.unavailable_reason
    [prepared] = share_manager.prepare(domain_name)
    with GrowingCounterFile(prepared.data_dir / "value", newline=True) as counter:
        markers = _boot_share_scenario(
            start_domain,
            guest_image,
            domain_name,
            GuestShare(prepared.source_dir, prepared.mount_tag, readonly=prepared.readonly_flag),
            world_readable_tmp / "console.log",
        )
    assert "WV-MOUNTED" in markers, markers
    first, second = int(markers["WV-READ#1"]["value"]), int(markers["WV-READ#2"]["value"])
    assert 0 < first < second <= counter.value
    for attempt in ("WV-WRITE-NEW", "WV-WRITE-EXISTING", "WV-WRITE-MKDIR"):
        assert markers[attempt]["rc"] != "0", (attempt, markers[attempt])
        assert "Read-only file system" in markers[attempt]["error"], (attempt, markers[attempt])
    assert sorted(p.name for p in prepared.data_dir.iterdir()) == ["value"]
    assert prepared.data_dir.joinpath("value").read_text() == f"{counter.value}\n"


def test_guest_can_write_when_the_share_source_is_the_data_dir_itself(
    start_domain: Callable[[str], libvirt.virDomain],
    guest_image: GuestImage,
    share_manager: ShareManager,
    domain_name: str,
    world_readable_tmp: Path,
) -> None:
    """The control experiment: without the read-only view the guest does reach the host."""
    [prepared] = share_manager.prepare(domain_name)
    (prepared.data_dir / "value").write_text("7\n")
    markers = _boot_share_scenario(
        start_domain,
        guest_image,
        domain_name,
        GuestShare(prepared.data_dir, prepared.mount_tag),
        world_readable_tmp / "console.log",
    )
    assert markers["WV-WRITE-NEW"]["rc"] == "0", markers["WV-WRITE-NEW"]
    assert (prepared.data_dir / "wv-guest-wrote-this").exists()
    assert (prepared.data_dir / "value").read_text() == "guest-was-here\n"


@pytest.mark.skip_by_design("only libvirt before 11 refuses <readonly/> on virtiofs")
@pytest.mark.skipif(
    libvirt.getVersion() >= LIBVIRT_READONLY_VIRTIOFS,
    reason="libvirt >= 11 accepts <readonly/> on virtiofs",
)
def test_libvirt_before_11_rejects_the_readonly_flag_on_virtiofs(
    start_domain: Callable[[str], libvirt.virDomain],
    guest_image: GuestImage,
    share_manager: ShareManager,
    domain_name: str,
    world_readable_tmp: Path,
) -> None:
    """Why ShareManager falls back to bind mounts: the flag is refused outright."""
    [prepared] = share_manager.prepare(domain_name)
    assert prepared.readonly_flag is False
    domain = GuestDomainSpec(
        name=domain_name,
        image=guest_image,
        cmdline=guest_image.cmdline("idle"),
        serial_log=world_readable_tmp / "console.log",
        shares=(GuestShare(prepared.data_dir, TAG, readonly=True),),
    )
    with pytest.raises(libvirt.libvirtError, match="read-only"):
        start_domain(domain.xml())
