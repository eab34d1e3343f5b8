"""Building, parsing and changing domains through the declarative model."""

from __future__ import annotations

import pytest
from guest_samples import INSTANCE_UUID, PORT_ID, VOLUME_ID, build_guest, c14n
from lxml import etree

from wattvisor.guest import (
    Console,
    Device,
    Disk,
    Domain,
    DuplicateAliasError,
    Filesystem,
    GuestXMLError,
    InstanceMetadata,
    Interface,
    InvalidAliasError,
    MalformedXMLError,
    MemoryBacking,
    NotADomainError,
    Serial,
    Video,
    make_alias,
    parse_device,
    validate_domain_xml,
)

PRETTY = """<domain type='kvm'>
  <name>old</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <!-- operator note -->
  <memory unit='GiB'>2</memory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <x:extra xmlns:x='urn:example:extra' x:flag='1'>kept</x:extra>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/a.img'/>
      <target dev='vda' bus='virtio'/>
      <unknown-child answer='42'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:AA:BB:CC'/>
      <source bridge='br0'/>
      <alias name='net0'/>
    </interface>
  </devices>
</domain>
"""


def test_typical_guest_is_a_few_lines_and_valid(metadata: InstanceMetadata) -> None:
    domain = build_guest(metadata)
    xml = domain.to_xml()
    validate_domain_xml(xml)
    root = etree.fromstring(xml)
    assert root.get("type") == "qemu"
    assert root.findtext("os/kernel") == "/var/lib/wattvisor/kernel/vmlinuz"
    assert root.find("memoryBacking/source").get("type") == "memfd"
    assert root.find("memoryBacking/access").get("mode") == "shared"
    fs = root.find("devices/filesystem")
    assert fs.find("driver").get("type") == "virtiofs"
    assert fs.find("source").get("dir") == "/run/wattvisor/shares/1.ro"
    assert fs.find("target").get("dir") == "scaphandre"
    assert root.find("devices/serial/source").get("path") == "/var/log/wattvisor/1-console.log"


@pytest.mark.parametrize(
    "variant",
    [
        {"kernel": None, "initrd": None, "cmdline": None, "boot_devs": ("hd",)},
        {"virt_type": "kvm", "cpu_mode": "host-passthrough", "machine": "pc"},
        {"memory_backing": MemoryBacking(source_type="file", access_mode="shared")},
        {"memory_backing": MemoryBacking(source_type=None, hugepages=True)},
        {"features": (), "clock_offset": None, "title": "Web", "description": "front end"},
        {"emulator": "/usr/bin/qemu-system-x86_64", "current_memory_mib": 256, "vcpus": 4},
    ],
)
def test_every_builder_variant_validates_against_libvirt_schema(
    metadata: InstanceMetadata, variant: dict[str, object]
) -> None:
    domain = build_guest(metadata, **variant)
    domain.add_device(Disk(source_dev="/dev/vg0/data", target_dev="vdb", driver_type="raw"))
    domain.add_device(
        Disk(
            source_protocol="rbd",
            source_name="pool/image",
            source_host_name="mon1",
            source_host_port=6789,
            target_dev="vdc",
        )
    )
    domain.add_device(Disk(device="cdrom", bus="sata", target_dev="sda", readonly=True))
    domain.add_device(Interface(source_bridge="br0", model="e1000", mtu=1400))
    domain.add_device(Interface(target_dev="tap7", mac="52:54:00:00:00:07"))
    domain.add_device(Console(type="file", source_path="/var/log/c.log", target_type="serial"))
    validate_domain_xml(domain.to_xml())
    assert Domain.parse(domain.to_xml()).to_xml() == domain.to_xml().rstrip("\n")


def test_built_guest_reads_back_every_value(metadata: InstanceMetadata) -> None:
    domain = Domain.parse(build_guest(metadata).to_xml())
    assert (domain.name, domain.uuid, domain.virt_type) == (
        "instance-00000001",
        INSTANCE_UUID,
        "qemu",
    )
    assert (domain.memory_mib, domain.memory_kib, domain.current_memory_kib) == (
        512,
        524288,
        524288,
    )
    assert (domain.vcpus, domain.os_type, domain.arch) == (1, "hvm", "x86_64")
    assert domain.cmdline == "console=ttyS0 quiet"
    assert domain.features is not None and domain.features.names == ["acpi", "apic"]
    assert (domain.on_poweroff, domain.on_reboot, domain.on_crash) == (
        "destroy",
        "restart",
        "destroy",
    )
    assert domain.instance_metadata == metadata
    kinds = [type(d) for d in domain.devices]
    assert kinds == [Disk, Filesystem, Interface, Serial, Console, Video]
    disk = domain.devices.of_type(Disk)[0]
    assert (disk.target_dev, disk.bus, disk.driver_type, disk.serial, disk.alias) == (
        "vda",
        "virtio",
        "qcow2",
        VOLUME_ID,
        f"ua-{VOLUME_ID}",
    )
    fs = domain.devices.of_type(Filesystem)[0]
    assert (fs.mount_tag, fs.binary_path, fs.accessmode, fs.readonly) == (
        "scaphandre",
        "/usr/lib/qemu/virtiofsd",
        "passthrough",
        False,
    )
    serial = domain.devices.of_type(Serial)[0]
    assert (serial.type, serial.target_port) == ("file", 0)
    backing = domain.memory_backing
    assert backing is not None and (backing.source_type, backing.access_mode) == ("memfd", "shared")


def test_building_same_guest_twice_gives_identical_xml(metadata: InstanceMetadata) -> None:
    assert build_guest(metadata).to_xml() == build_guest(metadata).to_xml()


def test_memory_in_other_units_reads_as_kib() -> None:
    domain = Domain.parse(PRETTY)
    assert domain.memory_kib == 2 * 1024 * 1024
    domain2 = Domain.parse(PRETTY.replace("unit='GiB'>2", "unit='MB'>1"))
    assert domain2.memory_kib == 977  # 10^6 bytes, rounded up to whole KiB as libvirt does


def test_changing_one_property_changes_only_that_value() -> None:
    domain = Domain.parse(PRETTY)
    domain.vcpus = 4
    domain.devices.of_type(Disk)[0].target_dev = "vdb"
    expected = etree.fromstring(PRETTY.encode())
    expected.find("vcpu").text = "4"
    expected.find("devices/disk/target").set("dev", "vdb")
    assert c14n(domain.to_xml()) == c14n(etree.tostring(expected))


def test_new_elements_go_where_libvirt_puts_them_and_keep_the_indentation() -> None:
    domain = Domain.parse(PRETTY)
    domain.title = "Web"
    disk = domain.devices.of_type(Disk)[0]
    disk.serial = "abc"
    disk.alias = "ua-abc"
    root = etree.fromstring(domain.to_xml().encode())
    assert [c.tag for c in root if isinstance(c.tag, str)][:3] == ["name", "uuid", "title"]
    disk_children = [c.tag for c in root.find("devices/disk") if isinstance(c.tag, str)]
    # Right after the last sibling libvirt writes before them; unknown children stay put.
    # An alias also goes after a child the model does not know: libvirt writes every
    # element of a device before the device info (boot, alias, ..., address).
    assert disk_children == ["driver", "source", "target", "serial", "unknown-child", "alias",
                             "address"]  # fmt: skip
    assert "\n      <serial>abc</serial>\n      <unknown-child" in domain.to_xml()
    assert '<unknown-child answer="42"/>\n      <alias name="ua-abc"/>\n' in domain.to_xml()
    # Removing what was added gives back the original document, byte for byte.
    domain.title = None
    disk.serial = None
    disk.alias = None
    assert domain.to_xml() == Domain.parse(PRETTY).to_xml()


def test_unknown_elements_attributes_comments_and_namespaces_survive_a_change() -> None:
    domain = Domain.parse(PRETTY)
    domain.name = "new"
    out = domain.to_xml()
    assert "<!-- operator note -->" in out
    assert '<x:extra xmlns:x="urn:example:extra" x:flag="1">kept</x:extra>' in out
    assert '<unknown-child answer="42"/>' in out


def test_libvirt_own_alias_reads_but_is_not_a_user_alias() -> None:
    nic = Domain.parse(PRETTY).devices.of_type(Interface)[0]
    assert (nic.alias, nic.user_alias) == ("net0", None)


def test_find_device_prefers_alias_then_falls_back_for_old_xml(metadata: InstanceMetadata) -> None:
    domain = build_guest(metadata)
    disk = domain.find_device(alias=f"ua-{VOLUME_ID}")
    assert isinstance(disk, Disk) and disk.target_dev == "vda"
    assert domain.find_device(alias="ua-missing", serial=VOLUME_ID) == disk
    assert domain.find_device(alias="ua-missing", target_dev="vda") == disk
    nic = domain.find_device(alias="ua-missing", mac="52:54:00:12:34:56".upper())
    assert isinstance(nic, Interface) and nic.alias == make_alias(PORT_ID)
    assert domain.find_device(alias="ua-missing", serial="nope", mac="00:00:00:00:00:00") is None
    old = Domain.parse(PRETTY)
    assert old.find_device(alias="ua-x", mac="52:54:00:aa:bb:cc") == old.devices[1]


def test_remove_device_by_alias_detaches_it_and_keeps_its_xml(metadata: InstanceMetadata) -> None:
    domain = build_guest(metadata)
    removed = domain.remove_device(f"ua-{VOLUME_ID}")
    assert domain.find_device(alias=f"ua-{VOLUME_ID}") is None
    assert "<disk" not in domain.to_xml()
    again = parse_device(removed.to_xml())
    assert isinstance(again, Disk) and again.serial == VOLUME_ID
    domain.add_device(again)
    assert domain.find_device(serial=VOLUME_ID) is not None
    validate_domain_xml(domain.to_xml())


def test_device_to_xml_is_standalone_device_xml(metadata: InstanceMetadata) -> None:
    fs = build_guest(metadata).devices.of_type(Filesystem)[0]
    root = etree.fromstring(fs.to_xml().encode())
    assert root.tag == "filesystem" and root.find("alias").get("name") == "ua-scaphandre-share"
    assert root.tail is None


def test_adding_a_duplicate_alias_raises_and_changes_nothing(metadata: InstanceMetadata) -> None:
    domain = build_guest(metadata)
    before = domain.to_xml()
    with pytest.raises(DuplicateAliasError, match=f"ua-{VOLUME_ID}"):
        domain.add_device(Disk(source_file="/b.img", target_dev="vdb", alias=f"ua-{VOLUME_ID}"))
    nic = domain.devices.of_type(Interface)[0]
    with pytest.raises(DuplicateAliasError):
        nic.alias = f"ua-{VOLUME_ID}"
    assert domain.to_xml() == before


def test_an_alias_outside_libvirt_rule_names_alias_and_pattern() -> None:
    disk = Disk(source_file="/a.img", target_dev="vda")
    with pytest.raises(InvalidAliasError) as info:
        disk.alias = "virtio-disk0"
    assert "virtio-disk0" in str(info.value) and "^ua-[A-Za-z0-9_-]+$" in str(info.value)
    assert disk.alias is None
    with pytest.raises(InvalidAliasError):
        Disk(source_file="/a.img", target_dev="vda", alias="ua-bad.dot")


def test_adding_a_device_twice_is_refused(metadata: InstanceMetadata) -> None:
    domain = build_guest(metadata)
    video = domain.devices.of_type(Video)[0]
    with pytest.raises(GuestXMLError, match="already belongs"):
        domain.add_device(video)


def test_unmodelled_device_kinds_are_generic_devices_with_alias() -> None:
    xml = PRETTY.replace("</devices>", "<watchdog model='i6300esb' action='reset'/></devices>")
    domain = Domain.parse(xml)
    watchdog = domain.devices[-1]
    assert type(watchdog) is Device and watchdog.kind == "watchdog"
    watchdog.alias = "ua-watchdog"
    assert (
        etree.fromstring(domain.to_xml().encode()).find("devices/watchdog/alias").get("name")
        == "ua-watchdog"
    )


@pytest.mark.parametrize(
    ("text", "error", "needle"),
    [
        ("<domain><name>x</name>\n<memory>1</domain>", MalformedXMLError, "line 2"),
        ("<domain><foo:bar/></domain>", MalformedXMLError, "Namespace prefix foo"),
        ("<network><name>x</name></network>", NotADomainError, "<network>"),
        ("", MalformedXMLError, "empty"),
    ],
)
def test_bad_input_gets_a_clear_error(text: str, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        Domain.parse(text)
    assert issubclass(error, GuestXMLError) and issubclass(error, ValueError)


def test_malformed_xml_error_carries_the_line() -> None:
    with pytest.raises(MalformedXMLError) as info:
        Domain.parse("<domain>\n  <name>x</name>\n  <vcpu>1</vcpus>\n</domain>")
    assert info.value.line == 3


def test_entities_are_not_expanded_and_nothing_is_fetched() -> None:
    xml = (
        '<!DOCTYPE domain [<!ENTITY secret SYSTEM "file:///etc/hostname">'
        '<!ENTITY big "xxxxxxxxxx">]>'
        "<domain type='qemu'><name>&secret;&big;</name></domain>"
    )
    domain = Domain.parse(xml)
    assert domain.name == ""
    assert "&secret;&big;" in domain.to_xml()


def test_a_value_xml_cannot_carry_is_refused_without_change(metadata: InstanceMetadata) -> None:
    domain = build_guest(metadata)
    before = domain.to_xml()
    with pytest.raises(GuestXMLError, match="cannot carry"):
        domain.description = "bell\x07"
    with pytest.raises(GuestXMLError, match="boot_devs value 'usb'"):
        domain.boot_devs = ["hd", "usb"]
    with pytest.raises(GuestXMLError, match="integer"):
        domain.vcpus = "2"  # type: ignore[assignment]
    assert domain.to_xml() == before


def test_a_non_numeric_value_in_parsed_xml_is_reported_with_its_value() -> None:
    domain = Domain.parse(PRETTY.replace(">2</vcpu>", ">two</vcpu>"))
    with pytest.raises(GuestXMLError, match="'two'"):
        _ = domain.vcpus


def test_boot_devices_replace_in_place() -> None:
    domain = Domain.parse(PRETTY)
    domain.boot_devs = ["network", "hd"]
    assert domain.boot_devs == ["network", "hd"]
    os_children = [c.tag for c in etree.fromstring(domain.to_xml().encode()).find("os")]
    assert os_children == ["type", "boot", "boot"]


def test_built_parts_added_to_an_indented_document_are_indented_like_it(
    metadata: InstanceMetadata,
) -> None:
    domain = Domain.parse(PRETTY)
    domain.instance_metadata = metadata
    domain.add_device(Filesystem(source_dir="/srv/a", target_dir="tag", alias="ua-tag"))
    out = domain.to_xml()
    assert "\n  <metadata>\n    <wattvisor:instance xmlns:wattvisor=" in out
    assert '\n      <wattvisor:package version="0.1.0"/>\n' in out
    assert (
        '\n    <filesystem type="mount" accessmode="passthrough">\n'
        '      <driver type="virtiofs"/>\n'
    ) in out
    assert '\n      <alias name="ua-tag"/>\n    </filesystem>\n    <interface' in out


def test_device_xml_from_an_indented_document_starts_at_column_zero() -> None:
    disk = Domain.parse(PRETTY).devices.of_type(Disk)[0]
    assert disk.to_xml().splitlines()[1] == '  <driver name="qemu" type="raw"/>'
    assert disk.to_xml(pretty=False).splitlines()[1] == '      <driver name="qemu" type="raw"/>'
