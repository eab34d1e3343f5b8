"""Instance metadata through libvirt itself (the built-in ``test:///default`` driver)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import libvirt
import pytest
from guest_samples import INSTANCE_UUID, build_guest

from wattvisor.guest import METADATA_KEY, METADATA_NS, Domain, InstanceMetadata


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    connection = libvirt.open("test:///default")
    try:
        yield connection
    finally:
        connection.close()


def test_set_metadata_on_running_domain_reads_back_equal(
    conn: libvirt.virConnect, metadata: InstanceMetadata
) -> None:
    # The test driver runs guests of its own virt type; everything else is our builder's.
    guest = build_guest(None, virt_type="test", kernel=None, initrd=None, cmdline=None)
    dom = conn.defineXML(guest.to_xml())
    dom.create()
    try:
        assert dom.isActive()
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
        dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata.to_xml(), METADATA_KEY, METADATA_NS, flags
        )
        live = dom.metadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE
        )
        assert InstanceMetadata.from_xml(live) == metadata

        renamed = dataclasses.replace(metadata, display_name="web-1-renamed")
        dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, renamed.to_xml(), METADATA_KEY, METADATA_NS, flags
        )
        described = Domain.parse(dom.XMLDesc(0))
        assert described.uuid == INSTANCE_UUID
        assert described.instance_metadata == renamed
        inactive = Domain.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert inactive.instance_metadata == renamed
    finally:
        dom.destroy()
        dom.undefine()


def test_metadata_written_in_the_domain_xml_is_what_libvirt_returns(
    conn: libvirt.virConnect, metadata: InstanceMetadata
) -> None:
    guest = build_guest(metadata, virt_type="test", kernel=None, initrd=None, cmdline=None)
    dom = conn.defineXML(guest.to_xml())
    try:
        returned = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        assert InstanceMetadata.from_xml(returned) == metadata
    finally:
        dom.undefine()
