"""Upgrading existing domains: missing ``ua-`` aliases added, nothing else touched."""

from __future__ import annotations

import re

import pytest
from guest_samples import LEGACY_XML, VOLUME_ID, c14n
from lxml import etree

from wattvisor.guest import ATTACHABLE_KINDS, Domain, upgrade_domain_xml, validate_domain_xml


def _aliases(xml: str) -> dict[str, str | None]:
    root = etree.fromstring(xml.encode())
    return {
        f"{dev.tag}{i}": (dev.find("alias").get("name") if dev.find("alias") is not None else None)
        for i, dev in enumerate(root.find("devices"))
        if isinstance(dev.tag, str)
    }


def test_attachable_devices_get_aliases_and_others_are_left_alone() -> None:
    result = upgrade_domain_xml(LEGACY_XML)
    aliases = _aliases(result.xml)
    assert aliases["disk1"] == f"ua-{VOLUME_ID}"  # serial is a volume id: used as is
    assert aliases["disk3"] == "ua-keep-me"  # an existing user alias is never replaced
    for key in ("disk2", "filesystem5", "interface6", "hostdev7"):
        assert re.fullmatch(r"ua-[0-9a-f-]{36}", aliases[key] or ""), key
    assert aliases["controller4"] is None and aliases["video8"] is None
    assert aliases["memballoon9"] is None and aliases["emulator0"] is None
    assert {c.device for c in result.changes} == {"disk", "filesystem", "interface", "hostdev"}
    assert set(ATTACHABLE_KINDS) >= {"disk", "interface", "filesystem", "hostdev"}


def test_changes_say_which_device_got_which_alias_and_what_it_replaced() -> None:
    result = upgrade_domain_xml(LEGACY_XML)
    assert result.changed and len(result.changes) == 5
    by_key = {c.key: c for c in result.changes}
    assert by_key[f"serial={VOLUME_ID}"].alias == f"ua-{VOLUME_ID}"
    replaced = by_key["target=vdb"]
    assert replaced.previous == "virtio-disk1"
    assert "virtio-disk1" in replaced.describe() and replaced.alias in replaced.describe()
    assert by_key["mac=52:54:00:ab:cd:ef"].device == "interface"
    assert by_key["target=scaphandre"].device == "filesystem"


def test_upgrade_is_deterministic_and_idempotent() -> None:
    first = upgrade_domain_xml(LEGACY_XML)
    assert upgrade_domain_xml(LEGACY_XML).xml == first.xml
    second = upgrade_domain_xml(first.xml)
    assert not second.changed and second.changes == []
    assert second.xml == first.xml


def test_aliases_depend_on_the_domain_and_the_device_not_on_chance() -> None:
    other = upgrade_domain_xml(LEGACY_XML.replace("4dea22b3-1d52", "00000000-1d52"))
    mine = upgrade_domain_xml(LEGACY_XML)
    assert _aliases(other.xml)["disk2"] != _aliases(mine.xml)["disk2"]
    assert _aliases(other.xml)["disk1"] == _aliases(mine.xml)["disk1"]  # the volume id


def test_upgrade_touches_nothing_but_the_aliases() -> None:
    result = upgrade_domain_xml(LEGACY_XML)
    upgraded = etree.fromstring(result.xml.encode())
    original = etree.fromstring(LEGACY_XML.encode())
    for tree in (upgraded, original):
        for alias in tree.iter("alias"):
            alias.getparent().remove(alias)

    # Whitespace differs only around the removed aliases; compare without it.
    def strip(tree: etree._Element) -> bytes:
        for node in tree.iter():
            node.tail = node.tail.strip() if node.tail else None
            if len(node):
                node.text = node.text.strip() if node.text else None
        return etree.tostring(tree, method="c14n")

    assert strip(upgraded) == strip(original)
    assert '\n      <alias name="ua-' in result.xml  # indented like its siblings
    validate_domain_xml(result.xml)


def test_an_up_to_date_document_comes_back_byte_for_byte() -> None:
    text = upgrade_domain_xml(LEGACY_XML).xml.replace('"', "'") + "\n<!-- trailing -->\n"
    result = upgrade_domain_xml(text)
    assert result.xml == text and not result.changed


def test_clashing_derived_alias_takes_the_next_value() -> None:
    first = upgrade_domain_xml(LEGACY_XML)
    taken = next(c.alias for c in first.changes if c.key == "target=vdb")
    clash = LEGACY_XML.replace("<alias name='ua-keep-me'/>", f"<alias name='{taken}'/>")
    result = upgrade_domain_xml(clash)
    vdb = next(c for c in result.changes if c.key == "target=vdb")
    assert vdb.alias != taken
    names = [a.get("name") for a in etree.fromstring(result.xml.encode()).iter("alias")]
    assert len(names) == 6 and len(set(names)) == 6 == len(Domain.parse(result.xml).aliases())
    assert c14n(upgrade_domain_xml(result.xml).xml) == c14n(result.xml)


def _in_domain(devices: str) -> str:
    return f"""<domain type='qemu'>
  <name>order</name>
  <uuid>6f0ab0f4-0c0d-4cdd-9a6e-1e0b0e8b0a11</uuid>
  <memory unit='KiB'>131072</memory>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    {devices}
  </devices>
</domain>"""


def test_hostdev_alias_goes_after_teaming_and_the_document_stays_valid() -> None:
    text = _in_domain(
        """<hostdev mode='subsystem' type='pci' managed='yes'>
      <driver name='vfio'/>
      <source>
        <address domain='0x0000' bus='0x06' slot='0x12' function='0x5'/>
      </source>
      <teaming type='transient' persistent='ua-backup0'/>
    </hostdev>
    <interface type='network'>
      <mac address='00:11:22:33:44:55'/>
      <source network='default'/>
      <model type='virtio'/>
      <teaming type='persistent'/>
      <alias name='ua-backup0'/>
    </interface>"""
    )
    validate_domain_xml(text)
    result = upgrade_domain_xml(text)
    hostdev = etree.fromstring(result.xml.encode()).find("devices/hostdev")
    assert [c.tag for c in hostdev] == ["driver", "source", "teaming", "alias"]
    validate_domain_xml(result.xml)


# Each device as libvirt's formatter writes it (src/conf/domain_conf.c: the device's own
# elements, then virDomainDeviceInfoFormat's boot, alias, master, rom, acpi, address, then
# anything written after the device info); ALIAS marks where the new alias must land.
ALIAS = "<alias/>"
_FORMATTED_DEVICES = {
    "hostdev-teaming-rom": """<hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x06' slot='0x12' function='0x5'/></source>
      <teaming type='transient' persistent='ua-backup0'/>
      <boot order='2'/>
      <alias/>
      <rom bar='off'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
    </hostdev>""",
    "interface-teaming-rom-acpi": """<interface type='network'>
      <mac address='52:54:00:00:00:02'/>
      <source network='default'/>
      <model type='virtio'/>
      <teaming type='persistent'/>
      <link state='up'/>
      <mtu size='1500'/>
      <alias/>
      <rom bar='on'/>
      <acpi index='3'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface>""",
    "filesystem-space-limits": """<filesystem type='mount' accessmode='passthrough'>
      <driver type='path'/>
      <source dir='/srv/share'/>
      <target dir='share'/>
      <readonly/>
      <alias/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
      <space_hard_limit unit='bytes'>1048576</space_hard_limit>
      <space_soft_limit unit='bytes'>524288</space_soft_limit>
    </filesystem>""",
    "disk-boot": """<disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/a.img'/>
      <target dev='vda' bus='virtio'/>
      <iotune><total_bytes_sec>1000000</total_bytes_sec></iotune>
      <serial>abc</serial>
      <boot order='1'/>
      <alias/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </disk>""",
    "rng-rate-driver": """<rng model='virtio'>
      <rate bytes='1234' period='2000'/>
      <backend model='random'>/dev/urandom</backend>
      <driver iommu='on'/>
      <alias/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>
    </rng>""",
    "shmem-msi": """<shmem name='shmem0'>
      <model type='ivshmem-doorbell'/>
      <size unit='M'>4</size>
      <server path='/tmp/socket-shmem0'/>
      <msi vectors='32' ioeventfd='on'/>
      <alias/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x08' function='0x0'/>
    </shmem>""",
    "redirdev-boot": """<redirdev bus='usb' type='spicevmc'>
      <boot order='3'/>
      <alias/>
      <address type='usb' bus='0' port='2'/>
    </redirdev>""",
}


def _tags(element: etree._Element) -> list[str]:
    return [str(c.tag) for c in element if isinstance(c.tag, str)]


@pytest.mark.parametrize("case", sorted(_FORMATTED_DEVICES))
def test_a_new_alias_lands_where_libvirts_formatter_writes_it(case: str) -> None:
    expected = _FORMATTED_DEVICES[case].replace(ALIAS, "<alias name='ua-given'/>")
    given = _FORMATTED_DEVICES[case].replace("\n      " + ALIAS, "")
    validate_domain_xml(_in_domain(expected))
    validate_domain_xml(_in_domain(given))
    result = upgrade_domain_xml(_in_domain(given))
    device = etree.fromstring(result.xml.encode()).find("devices")[0]
    assert _tags(device) == _tags(etree.fromstring(expected.encode()))
    validate_domain_xml(result.xml)
