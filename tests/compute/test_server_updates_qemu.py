"""Rename and resize on a real libvirtd (QEMU, TCG): the running domain and its persistent
definition both show the change, and the metadata stays valid for libvirt's schema."""

from __future__ import annotations

import libvirt
import pytest
from lxml import etree

from compute.conftest import QEMU_WAIT_S as WAIT_S
from compute.principals import ADMIN, ALICE
from wattvisor.compute import Compute, Conflict, ServerRecord
from wattvisor.guest import METADATA_NS, InstanceMetadata, validate_domain_xml

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]


def _boot(compute: Compute) -> ServerRecord:
    server = compute.servers.create(ALICE, "live", "tiny", "idle")
    compute.servers.wait(server.uuid, WAIT_S)
    active = compute.servers.get(ADMIN, server.uuid)
    assert active.status == "ACTIVE", active.fault
    return active


def _xml(conn: libvirt.virConnect, server: ServerRecord, *, inactive: bool) -> str:
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return str(conn.lookupByName(server.domain_name).XMLDesc(flags))


def _metadata(xml: str) -> InstanceMetadata:
    element = etree.fromstring(xml.encode()).find(f"metadata/{{{METADATA_NS}}}instance")
    assert element is not None
    return InstanceMetadata.from_element(element)


def test_rename_shows_in_the_running_domain_and_its_definition(
    qemu_compute: Compute,
    libvirt_system: libvirt.virConnect,
) -> None:
    compute = qemu_compute
    server = _boot(compute)
    compute.updates.rename(ALICE, server.uuid, "renamed <&> ünï")
    dom = libvirt_system.lookupByName(server.domain_name)
    assert dom.isActive() and dom.name() == server.domain_name
    for inactive in (False, True):
        xml = _xml(libvirt_system, server, inactive=inactive)
        validate_domain_xml(xml)
        assert _metadata(xml).display_name == "renamed <&> ünï", inactive
    # The persistent definition keeps it across a stop and start.
    compute.servers.stop(ALICE, server.uuid)
    compute.servers.wait(server.uuid, WAIT_S)
    compute.servers.start(ALICE, server.uuid)
    compute.servers.wait(server.uuid, WAIT_S)
    assert _metadata(_xml(libvirt_system, server, inactive=False)).display_name.startswith("ren")


def test_resize_restarts_the_guest_with_the_new_flavor_and_moves_its_claim(
    qemu_compute: Compute,
    libvirt_system: libvirt.virConnect,
) -> None:
    compute = qemu_compute
    wide = compute.catalog.create_flavor("wide", 2, 384, 1)
    server = _boot(compute)
    placement = compute.scheduler.placement
    host = server.host_uuid or ""
    used_before = placement.get_usages(host).usages
    compute.updates.resize(ALICE, server.uuid, "wide")
    compute.servers.wait(server.uuid, WAIT_S)
    done = compute.servers.get(ADMIN, server.uuid)
    assert (done.status, done.task, done.fault, done.flavor_id) == ("ACTIVE", None, None, wide.id)
    dom = libvirt_system.lookupByName(server.domain_name)
    state, max_kib, _mem, vcpus, _cpu_time = dom.info()
    assert state == libvirt.VIR_DOMAIN_RUNNING and (vcpus, max_kib) == (2, 384 * 1024)
    for inactive in (False, True):
        xml = _xml(libvirt_system, server, inactive=inactive)
        validate_domain_xml(xml)
        meta = _metadata(xml)
        assert meta.flavor is not None and (meta.flavor.name, meta.flavor.vcpus) == ("wide", 2)
        assert meta.flavor.memory_mib == 384 and meta.display_name == "live"
    used = placement.get_usages(host).usages
    assert (used["VCPU"], used["MEMORY_MB"]) == (
        used_before["VCPU"] + 1,
        used_before["MEMORY_MB"] + 128,
    )


def test_a_resize_the_host_cannot_take_leaves_the_running_guest_alone(
    qemu_compute: Compute,
    libvirt_system: libvirt.virConnect,
) -> None:
    compute = qemu_compute
    compute.catalog.create_flavor("vast", 1, 1 << 30, 1)
    server = _boot(compute)
    placement = compute.scheduler.placement

    def snapshot() -> tuple[object, ...]:
        record = compute.servers.get(ADMIN, server.uuid)
        return (
            record.status, record.task, record.flavor_id,
            placement.get_allocations(server.uuid),
            _xml(libvirt_system, server, inactive=False),
            _xml(libvirt_system, server, inactive=True),
        )  # fmt: skip

    before = snapshot()
    with pytest.raises(Conflict, match=r"'vast'.*MEMORY_MB"):
        compute.updates.resize(ALICE, server.uuid, "vast")
    compute.servers.wait(server.uuid, WAIT_S)
    assert snapshot() == before
