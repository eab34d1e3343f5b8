"""The XML the model builds, as libvirt's real QEMU driver sees it."""

from __future__ import annotations

import uuid

import libvirt
import pytest
from guest_samples import PORT_ID, SHARE_ID, VOLUME_ID, build_guest

from support.guest_domains import unique_domain_name
from wattvisor.guest import (
    Disk,
    Domain,
    Filesystem,
    InstanceMetadata,
    make_alias,
    upgrade_domain_xml,
)

pytestmark = pytest.mark.libvirtd
INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


def test_qemu_driver_keeps_aliases_metadata_and_share_of_a_built_guest(
    libvirt_system: libvirt.virConnect, metadata: InstanceMetadata
) -> None:
    guest = build_guest(metadata, name=unique_domain_name(), uuid=str(uuid.uuid4()))
    dom = libvirt_system.defineXML(guest.to_xml())
    try:
        defined = Domain.parse(dom.XMLDesc(INACTIVE))
        assert defined.instance_metadata == metadata
        assert {make_alias(VOLUME_ID), make_alias(PORT_ID), make_alias(SHARE_ID)} <= set(
            defined.aliases()
        )
        share = defined.find_device(alias=make_alias(SHARE_ID))
        assert isinstance(share, Filesystem)
        assert (share.driver_type, share.source_dir, share.mount_tag) == (
            "virtiofs",
            "/run/wattvisor/shares/1.ro",
            "scaphandre",
        )
        backing = defined.memory_backing
        assert backing is not None and (backing.source_type, backing.access_mode) == (
            "memfd",
            "shared",
        )
        # What libvirt adds by itself (controllers, input, balloon) is not attachable.
        assert not upgrade_domain_xml(dom.XMLDesc(INACTIVE)).changed
    finally:
        dom.undefine()


def test_disk_attaches_and_detaches_by_alias_in_the_persistent_config(
    libvirt_system: libvirt.virConnect, metadata: InstanceMetadata
) -> None:
    guest = build_guest(metadata, name=unique_domain_name(), uuid=str(uuid.uuid4()))
    dom = libvirt_system.defineXML(guest.to_xml())
    volume = str(uuid.uuid4())
    try:
        extra = Disk(
            source_file="/var/lib/wattvisor/volumes/extra.qcow2",
            target_dev="vdb",
            driver_type="qcow2",
            serial=volume,
            alias=make_alias(volume),
        )
        dom.attachDeviceFlags(extra.to_xml(), CONFIG)
        attached = Domain.parse(dom.XMLDesc(INACTIVE)).find_device(alias=make_alias(volume))
        assert isinstance(attached, Disk) and attached.target_dev == "vdb"
        dom.detachDeviceFlags(attached.to_xml(), CONFIG)
        after = Domain.parse(dom.XMLDesc(INACTIVE))
        assert after.find_device(alias=make_alias(volume), serial=volume) is None
        assert after.find_device(alias=make_alias(VOLUME_ID)) is not None
    finally:
        dom.undefine()
