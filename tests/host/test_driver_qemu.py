"""The host driver against a real libvirtd with the QEMU driver (TCG guests)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import libvirt
import os_traits
import pytest

from support.guest_domains import GuestShare, unique_domain_name, wait_for_marker
from wattvisor.config import HostSettings
from wattvisor.guest import Disk, Domain, InstanceMetadata, MemoryBacking, Serial, make_alias
from wattvisor.host.driver import HostDriver
from wattvisor.images import GuestImage

pytestmark = pytest.mark.libvirtd

SYSTEM_URI = "qemu:///system"
BOOT_TIMEOUT_S = 120.0


@pytest.fixture
def driver(libvirt_system: libvirt.virConnect, world_readable_tmp: Path) -> Iterator[HostDriver]:
    share_dir = world_readable_tmp / "scaphandre"
    share_dir.mkdir()
    host = HostDriver(
        HostSettings(virt_type="qemu", share_local_fs={str(share_dir): "wvpower"}),
        world_readable_tmp / "data",
        uri=SYSTEM_URI,
    )
    names: list[str] = []
    host.created = names  # type: ignore[attr-defined]
    yield host
    for name in names:
        with contextlib.suppress(Exception):
            host.undefine(name)
    host.close()


def _tiny_guest(host: HostDriver, image: GuestImage, tmp: Path, cmdline: str) -> Domain:
    name = unique_domain_name()
    host.created.append(name)  # type: ignore[attr-defined]
    domain = Domain(
        name=name,
        memory_mib=256,
        vcpus=1,
        virt_type="qemu",
        machine="pc",
        kernel=str(image.kernel),
        initrd=str(image.initrd),
        cmdline=cmdline,
        memory_backing=MemoryBacking(),
        instance_metadata=InstanceMetadata(  # a domain of wattvisor's
            package_version="0", display_name=name, creation_time=datetime.now(UTC)
        ),
    )
    domain.add_device(Serial(type="file", source_path=str(tmp / f"{name}.log")))
    return domain


def test_real_host_reports_only_known_traits_including_share(driver: HostDriver) -> None:
    traits = driver.traits()
    known = set(os_traits.get_traits())
    custom = {t for t in traits if t.startswith("CUSTOM_")}
    assert traits - custom <= known
    assert custom == {"CUSTOM_HYPERVISOR_QEMU", "CUSTOM_VM_MODE_HVM"}
    for trait in (
        "COMPUTE_STORAGE_BUS_VIRTIO",
        "COMPUTE_STORAGE_BUS_SATA",
        "COMPUTE_GRAPHICS_MODEL_VGA",
        "COMPUTE_NET_VIF_MODEL_VIRTIO",
        "COMPUTE_STORAGE_VIRTIO_FS",
        "COMPUTE_MEM_BACKING_FILE",
        "COMPUTE_SHARE_LOCAL_FS",
        "HW_ARCH_X86_64",
    ):
        assert trait in traits, trait
    assert driver.capabilities().domain_caps_available


def test_host_without_share_setting_does_not_report_share_trait(
    libvirt_system: libvirt.virConnect, tmp_path: Path
) -> None:
    host = HostDriver(HostSettings(virt_type="qemu"), tmp_path, uri=SYSTEM_URI)
    try:
        traits = host.traits()
    finally:
        host.close()
    assert "COMPUTE_STORAGE_VIRTIO_FS" in traits
    assert "COMPUTE_SHARE_LOCAL_FS" not in traits


@pytest.mark.guest
def test_detach_disk_by_alias_from_running_guest(
    driver: HostDriver, guest_image: GuestImage, world_readable_tmp: Path
) -> None:
    domain = _tiny_guest(driver, guest_image, world_readable_tmp, guest_image.cmdline("idle"))
    volume_id = str(uuid.uuid4())
    disk_file = world_readable_tmp / "volume.img"
    disk_file.write_bytes(b"\0" * (1 << 20))
    domain.add_device(
        Disk(
            source_file=str(disk_file),
            target_dev="vdb",
            driver_type="raw",
            serial=volume_id,
            alias=make_alias(volume_id),
        )
    )
    state = driver.define(domain)
    driver.start(state.uuid)
    wait_for_marker(world_readable_tmp / f"{domain.name}.log", "WV-IDLE", BOOT_TIMEOUT_S)
    live = driver.domain(state.uuid)
    disk = live.find_device(alias=make_alias(volume_id))
    assert disk is not None, "libvirt kept our user alias on the running guest"

    result = driver.detach_device(state.uuid, make_alias(volume_id), wait_s=60)

    assert result.method == "alias"  # virDomainDetachDeviceAlias on the QEMU driver
    assert result.live and result.config
    assert driver.domain(state.uuid).find_device(serial=volume_id) is None
    assert driver.domain(state.uuid, inactive=True).find_device(serial=volume_id) is None
    assert driver.domain_state(state.uuid).active


def test_detach_by_alias_from_stopped_guest_edits_its_config(
    driver: HostDriver, guest_image: GuestImage, world_readable_tmp: Path
) -> None:
    domain = _tiny_guest(driver, guest_image, world_readable_tmp, guest_image.cmdline("idle"))
    volume_id = str(uuid.uuid4())
    domain.add_device(
        Disk(
            source_file=str(world_readable_tmp / "v.img"),
            target_dev="vdb",
            serial=volume_id,
            alias=make_alias(volume_id),
        )
    )
    state = driver.define(domain)
    result = driver.detach_device(state.uuid, make_alias(volume_id))
    assert (result.method, result.live, result.config) == ("alias", False, True)
    assert driver.domain(state.uuid, inactive=True).find_device(serial=volume_id) is None


def _client_ids() -> set[str]:
    listing = subprocess.run(
        ["virt-admin", "srv-clients-list", "libvirtd"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(re.findall(r"^\s*(\d+)\s+unix", listing, re.MULTILINE))


def test_driver_reconnects_after_libvirtd_drops_the_connection(
    libvirt_system: libvirt.virConnect, tmp_path: Path
) -> None:
    before = _client_ids()
    host = HostDriver(HostSettings(virt_type="qemu"), tmp_path, uri=SYSTEM_URI)
    try:
        host.list_domains()
        ours = _client_ids() - before
        assert len(ours) == 1, (before, ours)
        # What the client sees when libvirtd restarts: the daemon closes the socket.
        subprocess.run(
            ["virt-admin", "client-disconnect", "libvirtd", ours.pop()],
            check=True,
            capture_output=True,
        )
        names = {d.name for d in host.list_domains()}
    finally:
        host.close()
    assert names == {d.name() for d in libvirt_system.listAllDomains(0)}


@pytest.mark.guest
def test_startup_reestablishes_share_mounts_of_defined_domains(
    driver: HostDriver, guest_image: GuestImage, world_readable_tmp: Path
) -> None:
    domain = _tiny_guest(driver, guest_image, world_readable_tmp, guest_image.cmdline("idle"))
    shares = driver.prepare_shares(domain.name)
    for device in driver.share_devices(shares):
        domain.add_device(device)
    driver.define(domain)
    view = shares[0].source_dir
    # A host reboot loses every mount; start-up must bring the read-only view back.
    driver.shares.release(domain.name)
    assert not view.exists()

    report = driver.startup()

    assert domain.name in report.shares_reestablished
    from wattvisor.host.shares import is_readonly_mounted

    assert is_readonly_mounted(view)


@pytest.mark.guest
def test_attach_disk_to_running_guest_keeps_alias_live_and_in_config(
    driver: HostDriver, guest_image: GuestImage, world_readable_tmp: Path
) -> None:
    domain = _tiny_guest(driver, guest_image, world_readable_tmp, guest_image.cmdline("idle"))
    state = driver.define(domain)
    driver.start(state.uuid)
    wait_for_marker(world_readable_tmp / f"{domain.name}.log", "WV-IDLE", BOOT_TIMEOUT_S)
    volume_id = str(uuid.uuid4())
    disk_file = world_readable_tmp / "hot.img"
    disk_file.write_bytes(b"\0" * (1 << 20))
    disk = Disk(
        source_file=str(disk_file),
        target_dev="vdb",
        driver_type="raw",
        serial=volume_id,
        alias=make_alias(volume_id),
    )

    driver.attach_device(state.uuid, disk.to_xml())

    for inactive in (False, True):
        found = driver.domain(state.uuid, inactive=inactive).find_device(serial=volume_id)
        assert found is not None and found.alias == make_alias(volume_id), inactive
    driver.detach_device(state.uuid, make_alias(volume_id), wait_s=60)
    assert driver.domain(state.uuid).find_device(serial=volume_id) is None


@pytest.mark.guest
def test_guest_powers_off_by_itself_when_asked(
    driver: HostDriver, guest_image: GuestImage, world_readable_tmp: Path
) -> None:
    """A graceful stop presses the ACPI power button; the tiny guest answers it."""
    domain = _tiny_guest(driver, guest_image, world_readable_tmp, guest_image.cmdline("idle"))
    assert domain.features is not None and domain.features.acpi
    state = driver.define(domain)
    driver.start(state.uuid)
    console = world_readable_tmp / f"{domain.name}.log"
    wait_for_marker(console, "WV-ACPI button=", BOOT_TIMEOUT_S)
    wait_for_marker(console, "WV-IDLE", BOOT_TIMEOUT_S)

    stopped = driver.shutdown(state.uuid, timeout_s=BOOT_TIMEOUT_S)

    # "shutdown", not "destroyed": the guest ended by itself, wattvisor did not pull the plug.
    assert (stopped.state, stopped.reason) == ("shutoff", "shutdown")
    wait_for_marker(console, "WV-POWER-BUTTON", 1)


@pytest.mark.guest
def test_a_stop_asked_while_the_guest_still_boots_ends_by_itself(
    driver: HostDriver, guest_image: GuestImage, world_readable_tmp: Path
) -> None:
    """The first press lands before the guest's ACPI handler runs and is lost; the
    button is pressed again, so the guest powers off by itself instead of being
    destroyed at the timeout."""
    domain = _tiny_guest(driver, guest_image, world_readable_tmp, guest_image.cmdline("idle"))
    state = driver.define(domain)
    driver.start(state.uuid)  # no wait: the guest is in its firmware or kernel

    stopped = driver.shutdown(state.uuid, timeout_s=BOOT_TIMEOUT_S)

    assert (stopped.state, stopped.reason) == ("shutoff", "shutdown")
    wait_for_marker(world_readable_tmp / f"{domain.name}.log", "WV-POWER-BUTTON", 1)


@pytest.mark.guest
def test_delete_racing_a_guest_that_powers_itself_off_always_succeeds(
    driver: HostDriver, guest_image: GuestImage, world_readable_tmp: Path
) -> None:
    """The guest powers off right after booting while its host deletes it (bounded tries,
    each deleting a little later, to land before, inside and after the power-off)."""
    from wattvisor.host.shares import mount_table

    for attempt in range(4):
        domain = _tiny_guest(driver, guest_image, world_readable_tmp,
                             guest_image.cmdline("poweroff"))  # fmt: skip
        shares = driver.prepare_shares(domain.name)
        for device in driver.share_devices(shares):
            domain.add_device(device)
        state = driver.define(domain)
        driver.start(state.uuid)
        wait_for_marker(world_readable_tmp / f"{domain.name}.log", "WV-READY", BOOT_TIMEOUT_S)
        time.sleep(0.05 * attempt)

        driver.undefine(state.uuid)

        assert domain.name not in {d.name for d in driver.list_domains()}
        mounted = {str(e.mount_point) for e in mount_table()}
        for share in shares:
            assert not share.data_dir.exists(), attempt
            assert str(share.source_dir) not in mounted and str(share.data_dir) not in mounted


def test_startup_leaves_a_foreign_persistent_domain_byte_identical(
    driver: HostDriver,
    libvirt_system: libvirt.virConnect,
    guest_image: GuestImage,
    world_readable_tmp: Path,
) -> None:
    """Another tool's domain on the same libvirtd: not upgraded, re-mounted or reported."""
    from support.guest_domains import GuestDomainSpec, destroy_and_undefine

    name = unique_domain_name("wvforeign")
    xml = GuestDomainSpec(
        name=name, image=guest_image, cmdline=guest_image.cmdline("idle"),
        serial_log=world_readable_tmp / f"{name}.log",
        shares=(GuestShare(source_dir=world_readable_tmp / "scaphandre", mount_tag="wvpower"),),
    ).xml().replace(
        "<memballoon",
        f"<disk type='file' device='disk'><source file='{world_readable_tmp}/f.img'/>"
        "<target dev='vdb' bus='virtio'/><serial>not-ours</serial></disk>\n    <memballoon",
    )  # fmt: skip
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    dom = libvirt_system.defineXML(xml)
    try:
        before = dom.XMLDesc(flags)
        report = driver.startup()
        assert dom.XMLDesc(flags) == before
        assert name not in report.shares_reestablished
        assert name not in {r.domain for r in report.upgraded}
        assert not any(name in problem for problem in report.problems)
    finally:
        destroy_and_undefine(dom)
