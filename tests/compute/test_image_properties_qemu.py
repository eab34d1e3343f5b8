"""Image properties on a real libvirtd (QEMU TCG): a booted tiny guest sees the disk bus,
NIC model and video model its image asked for, and a property the host cannot honour
is refused before anything is defined, naming the property and value."""

from __future__ import annotations

import contextlib
import re
import secrets
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import libvirt
import pytest

from compute.principals import ADMIN, ALICE
from support.guest_domains import (
    destroy_and_undefine,
    read_console,
    unique_domain_name,
    wait_for_marker,
)
from wattvisor.compute import Compute, LocalHostClient
from wattvisor.compute.guest_build import GuestFiles, build_domain
from wattvisor.compute.hostclient import SpawnFlavor, SpawnImage, SpawnRequest
from wattvisor.compute.image_properties import vif_model_for
from wattvisor.config import HostSettings, load_settings
from wattvisor.guest import Domain, Interface, Video, make_alias
from wattvisor.host.configdrive import CONFIG_DRIVE_ALIAS
from wattvisor.host.driver import HostDriver, HostError
from wattvisor.images import GuestImage
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

# PCI ids (vendor:device) and classes QEMU gives these devices.
AHCI_CLASS = "010601"
VIRTIO_SCSI_IDS = ("1af4:1004", "1af4:1048")
E1000_ID = "8086:100e"
RTL8139_ID = "10ec:8139"
VIRTIO_NET_IDS = ("1af4:1000", "1af4:1041")
VIDEO_IDS = {"qxl": "1b36:0100", "cirrus": "1013:00b8", "vga": "1234:1111"}


@pytest.fixture
def client(
    libvirt_system: libvirt.virConnect, world_readable_tmp: Path
) -> Iterator[LocalHostClient]:
    driver = HostDriver(
        HostSettings(virt_type="qemu"), world_readable_tmp / "data", uri="qemu:///system"
    )
    host = LocalHostClient(driver)
    try:
        yield host
    finally:
        host.close()


def _request(
    image: GuestImage, root: Path, properties: Mapping[str, str], block: str = ""
) -> SpawnRequest:
    cmdline = image.cmdline("devices", **({"wv.block": block} if block else {}))
    return SpawnRequest(
        server_uuid=str(uuid.uuid4()), display_name="devices",
        domain_name=unique_domain_name("wvprops"), project="p", user="u",
        flavor=SpawnFlavor(id="f", name="tiny", vcpus=1, ram_mb=192, disk_gb=1, swap_mb=0,
                           ephemeral_gb=0),
        image=SpawnImage(id="i", name="tiny", properties=dict(properties),
                         kernel_path=str(image.kernel), initrd_path=str(image.initrd),
                         cmdline=cmdline, disk_path=str(root), disk_format="raw"),
        power_metrics=False, created_at=datetime.now(UTC),
        user_uuid=str(uuid.uuid4()), project_uuid=str(uuid.uuid4()),
    )  # fmt: skip


@pytest.fixture
def root_image(world_readable_tmp: Path) -> Path:
    path = world_readable_tmp / "root.raw"
    with path.open("wb") as handle:
        handle.truncate(8 * 1024 * 1024)
    path.chmod(0o644)
    return path


def _boot_and_list(client: LocalHostClient, request: SpawnRequest) -> tuple[list[str], str]:
    """Spawn, wait for the device listing, delete; the PCI ids and WV-BLOCK line."""
    console = client.instances_dir / request.server_uuid / "console.log"
    try:
        client.spawn(request)
        wait_for_marker(console, "WV-DONE scenario=devices", timeout_s=120)
        text = read_console(console)
    finally:
        client.delete(request.server_uuid, request.domain_name)
    pci = re.findall(r"WV-PCI slot=\S+ id=(\S+) class=(\S+)", text)
    block = re.search(r"WV-BLOCK \[(.*)\]", text)
    assert block is not None, text
    return [f"{i} {c}" for i, c in pci], block.group(1)


def test_sata_disk_bus_gives_the_guest_an_ahci_controller(
    client: LocalHostClient, guest_image: GuestImage, root_image: Path
) -> None:
    pci, _ = _boot_and_list(client, _request(guest_image, root_image, {"hw_disk_bus": "sata"}))
    assert any(entry.endswith(AHCI_CLASS) for entry in pci), pci
    # The cloud kernel has no AHCI driver (CONFIG_SATA_AHCI unset): the controller is
    # what the guest can show; without the property there is none.
    plain, block = _boot_and_list(client, _request(guest_image, root_image, {}))
    assert not any(entry.endswith(AHCI_CLASS) for entry in plain), plain
    assert "vda" in block.split("|")


def test_scsi_disk_bus_gives_the_guest_sda_on_virtio_scsi(
    client: LocalHostClient, guest_image: GuestImage, root_image: Path
) -> None:
    properties = {"hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi"}
    pci, block = _boot_and_list(client, _request(guest_image, root_image, properties, "sda"))
    assert any(entry.split()[0] in VIRTIO_SCSI_IDS for entry in pci), pci
    assert "sda" in block.split("|")
    assert "vda" not in block.split("|")


@pytest.mark.parametrize("model", ["qxl", "cirrus", "vga"])
def test_video_model_is_the_video_card_the_guest_sees(
    client: LocalHostClient, guest_image: GuestImage, root_image: Path, model: str
) -> None:
    pci, _ = _boot_and_list(client, _request(guest_image, root_image, {"hw_video_model": model}))
    ids = [entry.split()[0] for entry in pci]
    assert VIDEO_IDS[model] in ids, pci
    assert not (set(VIDEO_IDS.values()) - {VIDEO_IDS[model]}) & set(ids)


@pytest.fixture
def isolated_network(libvirt_system: libvirt.virConnect) -> Iterator[str]:
    """A libvirt network without <forward> (no traffic leaves the machine)."""
    name = unique_domain_name("wvnet")
    network = libvirt_system.networkCreateXML(f"<network><name>{name}</name></network>")
    try:
        yield name
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            network.destroy()


@pytest.mark.parametrize(
    ("properties", "expected", "absent"),
    [
        ({"hw_vif_model": "e1000"}, (E1000_ID,), VIRTIO_NET_IDS),
        ({"hw_vif_model": "rtl8139"}, (RTL8139_ID,), VIRTIO_NET_IDS),
        ({}, VIRTIO_NET_IDS, (E1000_ID,)),
    ],
)
def test_vif_model_is_the_nic_the_guest_sees(
    libvirt_system: libvirt.virConnect,
    guest_image: GuestImage,
    world_readable_tmp: Path,
    isolated_network: str,
    properties: dict[str, str],
    expected: tuple[str, ...],
    absent: tuple[str, ...],
) -> None:
    request = _request(guest_image, world_readable_tmp / "unused", properties)
    request = SpawnRequest(**{**_fields(request), "image": _without_disk(request.image)})
    files = GuestFiles(
        console_log=world_readable_tmp / "console.log",
        config_drive=world_readable_tmp / "no-config-drive.iso",
    )
    domain = build_domain(request, files, [], virt_type="qemu", machine=None)
    cdrom = domain.find_device(alias=CONFIG_DRIVE_ALIAS)
    assert cdrom is not None
    domain.remove_device(cdrom)
    # What a server's own interface is built with: the model from its image.
    domain.add_device(
        Interface(
            source_network=isolated_network, model=vif_model_for(properties),
            alias=make_alias("port-1"),
        )
    )  # fmt: skip
    dom = libvirt_system.createXML(domain.to_xml(), 0)
    try:
        wait_for_marker(files.console_log, "WV-DONE scenario=devices", timeout_s=120)
        text = read_console(files.console_log)
    finally:
        destroy_and_undefine(dom)
    ids = re.findall(r"WV-PCI slot=\S+ id=(\S+)", text)
    assert set(expected) & set(ids), ids
    assert not set(absent) & set(ids), ids


def _fields(request: SpawnRequest) -> dict[str, object]:
    return {name: getattr(request, name) for name in request.__slots__}


def _without_disk(image: SpawnImage) -> SpawnImage:
    return SpawnImage(
        id=image.id, name=image.name, properties=image.properties,
        kernel_path=image.kernel_path, initrd_path=image.initrd_path, cmdline=image.cmdline,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("properties", "named"),
    [
        ({"hw_video_model": "xen"}, "image property hw_video_model=xen is not supported"),
        ({"hw_machine_type": "virt"}, "image property hw_machine_type=virt is not supported"),
        ({"hw_architecture": "s390x"}, "image property hw_architecture=s390x is not supported"),
        ({"hw_vif_model": "netfront"}, "image property hw_vif_model=netfront is not supported"),
        ({"hw_scsi_model": "buslogic"}, "image property hw_scsi_model=buslogic is not supported"),
        (
            {"hw_firmware_type": "uefi", "os_secure_boot": "required", "hw_machine_type": "pc"},
            "image property os_secure_boot=required is not supported",
        ),
    ],
)
def test_property_the_host_lacks_is_refused_and_nothing_is_left(
    client: LocalHostClient,
    libvirt_system: libvirt.virConnect,
    guest_image: GuestImage,
    root_image: Path,
    properties: dict[str, str],
    named: str,
) -> None:
    request = _request(guest_image, root_image, properties)
    with pytest.raises(HostError) as caught:
        client.spawn(request)
    message = str(caught.value)
    assert named in message
    assert "(supported: " in message
    with pytest.raises(libvirt.libvirtError):
        libvirt_system.lookupByName(request.domain_name)
    assert not (client.instances_dir / request.server_uuid).exists()


def test_uefi_guest_boots_with_ovmf_and_its_nvram_goes_with_it(
    client: LocalHostClient,
    libvirt_system: libvirt.virConnect,
    guest_image: GuestImage,
    root_image: Path,
) -> None:
    request = _request(guest_image, root_image, {"hw_firmware_type": "uefi"})
    console = client.instances_dir / request.server_uuid / "console.log"
    try:
        client.spawn(request)
        xml = libvirt_system.lookupByName(request.domain_name).XMLDesc(0)
        wait_for_marker(console, "WV-DONE scenario=devices", timeout_s=240)
    finally:
        client.delete(request.server_uuid, request.domain_name)
    assert re.search(r"<loader [^>]*type='pflash'[^>]*>/usr/share/OVMF/", xml), xml
    assert "secure='yes'" not in xml
    nvram = re.search(r"<nvram[^>]*>([^<]+)</nvram>", xml)
    assert nvram is not None, xml
    assert not Path(nvram.group(1)).exists()


def test_required_secure_boot_gets_a_secure_boot_ovmf_with_smm(
    client: LocalHostClient,
    libvirt_system: libvirt.virConnect,
    guest_image: GuestImage,
    root_image: Path,
) -> None:
    # Defined and started, not booted: under TCG, OVMF 2022.11's secure-boot build stops
    # with a #GP exception before the kernel with direct kernel boot.
    properties = {
        "hw_firmware_type": "uefi",
        "os_secure_boot": "required",
        "hw_machine_type": "q35",
    }
    request = _request(guest_image, root_image, properties)
    try:
        client.spawn(request)
        xml = libvirt_system.lookupByName(request.domain_name).XMLDesc(0)
    finally:
        client.delete(request.server_uuid, request.domain_name)
    loader = re.search(r"<loader ([^>]*)>([^<]+)</loader>", xml)
    assert loader is not None, xml
    assert "secure='yes'" in loader.group(1)
    assert re.search(r"OVMF_CODE[^/]*\.(ms|secboot)\.fd$", loader.group(2)), loader.group(2)
    assert "<smm state='on'/>" in xml


def test_rng_guest_agent_tablet_and_windows_shape_start_and_the_guest_sees_them(
    client: LocalHostClient,
    libvirt_system: libvirt.virConnect,
    guest_image: GuestImage,
    root_image: Path,
) -> None:
    properties = {
        "hw_rng_model": "virtio", "hw_qemu_guest_agent": "yes",
        "hw_pointer_model": "usbtablet", "os_type": "windows",
    }  # fmt: skip
    request = _request(guest_image, root_image, properties)
    console = client.instances_dir / request.server_uuid / "console.log"
    try:
        client.spawn(request)
        xml = libvirt_system.lookupByName(request.domain_name).XMLDesc(0)
        wait_for_marker(console, "WV-DONE scenario=devices", timeout_s=120)
        text = read_console(console)
    finally:
        client.delete(request.server_uuid, request.domain_name)
    ids = re.findall(r"WV-PCI slot=\S+ id=(\S+)", text)
    assert {"1af4:1005", "1af4:1044"} & set(ids), ids  # virtio-rng
    assert {"1af4:1003", "1af4:1043"} & set(ids), ids  # virtio-serial of the agent channel
    assert "name='org.qemu.guest_agent.0'" in xml
    assert "<input type='tablet' bus='usb'>" in xml
    assert "<relaxed state='on'/>" in xml


@pytest.mark.parametrize(
    "properties",
    [
        {"hw_cdrom_bus": "usb"},
        {"hw_cdrom_bus": "scsi"},
        {"hw_disk_bus": "fdc"},
        {"hw_disk_bus": "usb"},
        {"hw_disk_bus": "ide", "hw_cdrom_bus": "ide"},
        {"hw_machine_type": "q35", "hw_disk_bus": "sata"},
    ],
)
def test_every_accepted_bus_starts_on_this_host(
    client: LocalHostClient, guest_image: GuestImage, root_image: Path, properties: dict[str, str]
) -> None:
    request = _request(guest_image, root_image, properties)
    try:
        assert client.spawn(request).state == "running"
    finally:
        client.delete(request.server_uuid, request.domain_name)


@pytest.fixture
def compute(
    libvirt_system: libvirt.virConnect, guest_image: GuestImage, world_readable_tmp: Path
) -> Iterator[Compute]:
    settings = load_settings(
        data_dir=world_readable_tmp / "data",
        host={"libvirt_uri": "qemu:///system", "virt_type": "qemu",
              "instance_name_template": f"wvtest-{secrets.token_hex(5)}-%04x"},
        compute={"stop_timeout_s": 1},
    )  # fmt: skip
    engine = make_engine(settings.store_url)
    migrate(engine)
    service = Compute.build(engine, Placement(engine), settings)
    driver = HostDriver(settings.host, settings.data_dir, uri="qemu:///system")
    service.hosts.add(LocalHostClient(driver), name="qemu-host", local=True)
    service.ensure_default_flavors()
    try:
        yield service
    finally:
        for server in service.servers.list_all(ADMIN):
            service.servers.delete(ADMIN, server.uuid)
            service.servers.wait(server.uuid, 60)
            if server.domain_name:
                with contextlib.suppress(libvirt.libvirtError):
                    destroy_and_undefine(libvirt_system.lookupByName(server.domain_name))
        service.close()
        engine.dispose()


def test_server_of_an_image_gets_its_video_model_and_its_nics_get_its_vif_model(
    compute: Compute, guest_image: GuestImage, libvirt_system: libvirt.virConnect
) -> None:
    compute.catalog.create_image(
        "e1000-qxl", kernel_path=str(guest_image.kernel), initrd_path=str(guest_image.initrd),
        cmdline=guest_image.cmdline("idle"),
        properties={"hw_vif_model": "e1000", "hw_video_model": "qxl"},
    )  # fmt: skip
    server = compute.servers.create(ALICE, "shaped", "tiny", "e1000-qxl")
    compute.servers.wait(server.uuid, 60)
    active = compute.servers.get(ALICE, server.uuid)
    assert active.status == "ACTIVE", active.fault
    port = compute.devices.attach_interface(ALICE, server.uuid)
    assert port.model == "e1000"
    live = Domain.parse(libvirt_system.lookupByName(active.domain_name or "").XMLDesc(0))
    nic = live.find_device(alias=port.alias)
    assert isinstance(nic, Interface) and nic.model == "e1000"
    assert [v.model for v in live.devices.of_type(Video)] == ["qxl"]
    # A model given explicitly still wins over the image's.
    other = compute.devices.attach_interface(ALICE, server.uuid, "rtl8139")
    assert other.model == "rtl8139"
