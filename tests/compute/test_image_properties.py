"""Image properties shape the guest's domain XML with Nova's meanings: each non-default
value shows in the built domain, and the domain still matches libvirt's schema."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wattvisor.compute.guest_build import ROOT_DISK_ALIAS, GuestFiles, build_domain
from wattvisor.compute.hostclient import SpawnFlavor, SpawnImage, SpawnRequest
from wattvisor.compute.image_properties import (
    apply_guest_shape,
    disk_target,
    guest_shape,
    vif_model_for,
)
from wattvisor.guest import (
    Channel,
    Controller,
    Disk,
    Domain,
    Input,
    Interface,
    Rng,
    Video,
    make_alias,
    validate_domain_xml,
)
from wattvisor.host.configdrive import CONFIG_DRIVE_ALIAS


def _request(
    properties: Mapping[str, str], extra_specs: Mapping[str, str] | None = None
) -> SpawnRequest:
    return SpawnRequest(
        server_uuid=str(uuid.uuid4()), display_name="shaped",
        domain_name=f"wvprops-{uuid.uuid4().hex[:8]}", project="p", user="u",
        flavor=SpawnFlavor(id="f", name="tiny", vcpus=1, ram_mb=64, disk_gb=1, swap_mb=0,
                           ephemeral_gb=0, extra_specs=dict(extra_specs or {})),
        image=SpawnImage(id="i", name="img", properties=dict(properties),
                         kernel_path="/boot/vmlinuz", disk_path="/images/disk.raw",
                         disk_format="raw"),
        power_metrics=False, created_at=datetime.now(UTC),
        user_uuid=str(uuid.uuid4()), project_uuid=str(uuid.uuid4()),
    )  # fmt: skip


def _build(properties: Mapping[str, str], extra_specs: Mapping[str, str] | None = None) -> Domain:
    files = GuestFiles(
        console_log=Path("/var/tmp/console.log"),
        config_drive=Path("/var/tmp/config-drive.iso"),
        root_disk=Path("/var/tmp/disk"),
    )
    domain = build_domain(
        _request(properties, extra_specs), files, [], virt_type="qemu", machine=None
    )
    validate_domain_xml(domain.to_xml())
    return domain


def _disk(domain: Domain, alias: str) -> Disk:
    found = domain.find_device(alias=alias)
    assert isinstance(found, Disk)
    return found


def _only(domain: Domain, cls: type) -> object:
    found = domain.devices.of_type(cls)
    assert len(found) == 1, found
    return found[0]


def test_without_properties_the_guest_keeps_its_defaults() -> None:
    domain = _build({})
    root = _disk(domain, ROOT_DISK_ALIAS)
    assert (root.bus, root.target_dev) == ("virtio", "vda")
    cdrom = _disk(domain, CONFIG_DRIVE_ALIAS)
    assert cdrom.bus == "ide"
    assert domain.machine == "pc"
    assert domain.element.find("os").get("firmware") is None
    for cls in (Video, Rng, Channel, Input, Controller):
        assert domain.devices.of_type(cls) == []


@pytest.mark.parametrize(
    ("bus", "target"),
    [("sata", "sda"), ("scsi", "sda"), ("ide", "hda"), ("usb", "sda"), ("virtio", "vda")],
)
def test_disk_bus_puts_the_root_disk_on_that_bus_with_its_name(bus: str, target: str) -> None:
    root = _disk(_build({"hw_disk_bus": bus}), ROOT_DISK_ALIAS)
    assert (root.bus, root.target_dev, root.device) == (bus, target, "disk")


def test_fdc_disk_bus_makes_the_root_disk_a_floppy() -> None:
    root = _disk(_build({"hw_disk_bus": "fdc"}), ROOT_DISK_ALIAS)
    assert (root.bus, root.target_dev, root.device) == ("fdc", "fda", "floppy")


@pytest.mark.parametrize("bus", ["sata", "scsi", "usb", "ide"])
def test_cdrom_bus_puts_the_config_drive_on_that_bus(bus: str) -> None:
    cdrom = _disk(_build({"hw_cdrom_bus": bus}), CONFIG_DRIVE_ALIAS)
    assert (cdrom.bus, cdrom.target_dev) == (bus, disk_target(bus, 2))


def test_root_and_cdrom_on_one_bus_get_different_names() -> None:
    domain = _build({"hw_disk_bus": "sata", "hw_cdrom_bus": "sata"})
    assert _disk(domain, ROOT_DISK_ALIAS).target_dev == "sda"
    assert _disk(domain, CONFIG_DRIVE_ALIAS).target_dev == "sdc"


@pytest.mark.parametrize(("written", "model"), [("e1000", "e1000"), ("RTL8139", "rtl8139")])
def test_vif_model_is_the_model_of_the_servers_interfaces(written: str, model: str) -> None:
    properties = {"hw_vif_model": written}
    assert vif_model_for(properties) == model
    domain = _build(properties)
    domain.add_device(Interface(source_network="isolated", alias=make_alias("port-1")))
    apply_guest_shape(domain, guest_shape(properties), root_disk_alias=ROOT_DISK_ALIAS)
    nic = _only(domain, Interface)
    assert isinstance(nic, Interface) and nic.model == model
    validate_domain_xml(domain.to_xml())


def test_vif_model_defaults_to_virtio() -> None:
    assert vif_model_for({}) == "virtio"
    assert vif_model_for({"os_distro": "debian"}) == "virtio"


@pytest.mark.parametrize("model", ["qxl", "vga", "cirrus", "bochs", "virtio"])
def test_video_model_adds_that_video_device_with_a_user_alias(model: str) -> None:
    video = _only(_build({"hw_video_model": model}), Video)
    assert isinstance(video, Video)
    assert video.model == model
    assert video.alias == "ua-video"


def test_video_model_none_is_libvirts_no_video() -> None:
    video = _only(_build({"hw_video_model": "none"}), Video)
    assert isinstance(video, Video) and video.model == "none"


def test_machine_type_is_the_guests_machine_and_q35_moves_the_cdrom_off_ide() -> None:
    domain = _build({"hw_machine_type": "q35"})
    assert domain.machine == "q35"
    assert _disk(domain, CONFIG_DRIVE_ALIAS).bus == "sata"


def test_uefi_firmware_asks_libvirt_for_efi_firmware() -> None:
    domain = _build({"hw_firmware_type": "uefi"})
    assert domain.firmware == "efi"
    assert domain.loader_secure is None  # without a policy libvirt chooses


def test_bios_firmware_is_the_default() -> None:
    assert _build({"hw_firmware_type": "bios"}).firmware is None


def test_required_secure_boot_asks_for_a_secure_loader_and_smm() -> None:
    domain = _build(
        {"hw_firmware_type": "uefi", "os_secure_boot": "required", "hw_machine_type": "q35"}
    )
    assert domain.firmware == "efi"
    assert domain.loader_secure is True
    assert domain.features is not None and domain.features.smm


def test_disabled_secure_boot_asks_for_a_loader_without_it() -> None:
    domain = _build({"hw_firmware_type": "uefi", "os_secure_boot": "disabled"})
    assert domain.loader_secure is False


def test_flavor_secure_boot_counts_like_the_image_property() -> None:
    domain = _build({"hw_firmware_type": "uefi"}, {"os:secure_boot": "required"})
    assert domain.loader_secure is True


def test_rng_model_adds_a_virtio_rng_fed_by_urandom_at_the_flavors_rate() -> None:
    rng = _only(
        _build(
            {"hw_rng_model": "virtio"}, {"hw_rng:rate_bytes": "2048", "hw_rng:rate_period": "1000"}
        ),
        Rng,
    )
    assert isinstance(rng, Rng)
    assert (rng.model, rng.backend_model, rng.backend_path) == ("virtio", "random", "/dev/urandom")
    assert (rng.rate_bytes, rng.rate_period) == (2048, 1000)
    assert rng.alias == "ua-rng"


def test_rng_is_left_out_only_when_the_flavor_forbids_it() -> None:
    # Refused at server create (request_problems); the builder itself follows the flavor.
    assert (
        _build({"hw_rng_model": "virtio"}, {"hw_rng:allowed": "false"}).devices.of_type(Rng) == []
    )


def test_scsi_model_adds_that_scsi_controller() -> None:
    domain = _build({"hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi"})
    controller = _only(domain, Controller)
    assert isinstance(controller, Controller)
    assert (controller.type, controller.model, controller.index) == ("scsi", "virtio-scsi", 0)


@pytest.mark.parametrize("spelling", ["yes", "true", "1"])
def test_guest_agent_adds_the_qemu_guest_agent_channel(spelling: str) -> None:
    channel = _only(_build({"hw_qemu_guest_agent": spelling}), Channel)
    assert isinstance(channel, Channel)
    assert (channel.type, channel.target_type, channel.target_name) == (
        "unix", "virtio", "org.qemu.guest_agent.0",
    )  # fmt: skip
    assert channel.alias == "ua-guest-agent"


def test_guest_agent_no_adds_nothing() -> None:
    assert _build({"hw_qemu_guest_agent": "no"}).devices.of_type(Channel) == []


def test_usbtablet_pointer_adds_a_usb_tablet() -> None:
    tablet = _only(_build({"hw_pointer_model": "usbtablet"}), Input)
    assert isinstance(tablet, Input) and (tablet.type, tablet.bus) == ("tablet", "usb")


def test_windows_os_type_keeps_the_clock_in_local_time_with_hyperv_enlightenments() -> None:
    windows = _build({"os_type": "windows"})
    assert windows.clock_offset == "localtime"
    features = windows.features
    assert features is not None
    assert (features.hyperv_relaxed, features.hyperv_vapic, features.hyperv_spinlocks) == (
        True, True, True,
    )  # fmt: skip
    assert features.hyperv_spinlock_retries == 8191
    linux = _build({"os_type": "linux"})
    assert linux.clock_offset == "utc"
    assert linux.element.find("features/hyperv") is None


@pytest.mark.parametrize(
    ("written", "arch"), [("x86_64", "x86_64"), ("i686", "i686"), ("amd64", "x86_64")]
)
def test_architecture_is_the_arch_of_the_guest(written: str, arch: str) -> None:
    assert _build({"hw_architecture": written}).arch == arch


def test_every_property_at_once_still_matches_libvirts_schema() -> None:
    every: dict[str, str] = {
        "hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi", "hw_cdrom_bus": "sata",
        "hw_vif_model": "e1000", "hw_video_model": "qxl", "hw_machine_type": "q35",
        "hw_firmware_type": "uefi", "os_secure_boot": "required", "hw_rng_model": "virtio",
        "hw_qemu_guest_agent": "yes", "hw_pointer_model": "usbtablet", "os_type": "windows",
        "hw_architecture": "x86_64",
    }  # fmt: skip
    domain = _build(every)
    aliases = [d.alias for d in domain.devices if d.alias is not None]
    assert len(aliases) == len(set(aliases))
    check: Callable[[str], None] = validate_domain_xml
    check(domain.to_xml())
