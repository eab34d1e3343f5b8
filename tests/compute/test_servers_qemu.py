"""Servers on a real libvirtd (QEMU, TCG): spawn failures leave nothing behind; volumes and
interfaces attach by alias and detach by alias."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.principals import ALICE
from wattvisor.compute import Compute, LocalHostClient, ServerRecord
from wattvisor.compute.hostclient import InterfaceAttachment, VolumeAttachment
from wattvisor.guest import Disk, Domain, Interface

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]
WAIT_S = 120.0


def _boot(compute: Compute) -> ServerRecord:
    server = compute.servers.create(ALICE, "disks", "tiny", "idle")
    compute.servers.wait(server.uuid, WAIT_S)
    active = compute.servers.get(ALICE, server.uuid)
    assert active.status == "ACTIVE", active.fault
    return active


def _domain(compute: Compute, server: ServerRecord, *, inactive: bool) -> Domain:
    client = compute.hosts.client(server.host_uuid or "")
    assert isinstance(client, LocalHostClient)
    return client.driver.domain(server.domain_name or "", inactive=inactive)


def test_volume_attaches_live_with_serial_and_alias_and_detaches_by_alias(
    qemu_compute: Compute,
) -> None:
    compute = qemu_compute
    server = _boot(compute)
    volume = compute.devices.create_volume(ALICE, "data", 1, "qcow2")
    assert Path(volume.path).is_file()
    attached = compute.devices.attach_volume(ALICE, server.uuid, volume.id)
    assert attached.status == "in-use" and attached.server_uuid == server.uuid
    for inactive in (False, True):
        disk = _domain(compute, server, inactive=inactive).find_device(alias=volume.alias)
        assert isinstance(disk, Disk), inactive
        assert disk.serial == volume.id and disk.bus == "virtio" and disk.target_dev == "vdb"
        assert disk.driver_type == "qcow2"
    # An attach task run again (its controller died after the host's part) attaches nothing.
    client = compute.hosts.client(server.host_uuid or "")
    attachment = VolumeAttachment(volume.id, volume.path, volume.format)
    client.attach_volume(server.domain_name or "", attachment)
    for inactive in (False, True):
        aliases = [d.alias for d in _domain(compute, server, inactive=inactive).devices]
        assert aliases.count(volume.alias) == 1, (inactive, aliases)

    compute.servers.stop(ALICE, server.uuid)
    compute.servers.wait(server.uuid, WAIT_S)
    assert compute.servers.get(ALICE, server.uuid).status == "SHUTOFF"
    assert compute.devices.detach(ALICE, server.uuid, volume.alias) is True
    assert _domain(compute, server, inactive=True).find_device(alias=volume.alias) is None
    # A detach task run again finds the device gone: done, as asked.
    client.detach_by_alias(server.domain_name or "", volume.alias)
    assert compute.devices.volume(ALICE, volume.id).status == "available"
    compute.devices.delete_volume(ALICE, volume.id)
    assert not Path(volume.path).exists()


def test_interface_attaches_with_generated_mac_and_detaches_by_alias(
    qemu_compute: Compute,
) -> None:
    compute = qemu_compute
    server = _boot(compute)
    port = compute.devices.attach_interface(ALICE, server.uuid)
    assert port.kind == "user" and port.mac.startswith("52:54:00:")
    nic = _domain(compute, server, inactive=False).find_device(alias=port.alias)
    assert isinstance(nic, Interface) and nic.mac == port.mac and nic.type == "user"
    assert nic.model == "virtio"
    client = compute.hosts.client(server.host_uuid or "")
    client.attach_interface(
        server.domain_name or "",
        InterfaceAttachment(port.id, port.mac, port.kind, port.source, port.model),
    )
    live = [d.alias for d in _domain(compute, server, inactive=False).devices]
    assert live.count(port.alias) == 1, live
    assert [i.id for i in compute.devices.interfaces(ALICE, server.uuid)] == [port.id]

    compute.servers.stop(ALICE, server.uuid)
    compute.servers.wait(server.uuid, WAIT_S)
    compute.devices.detach(ALICE, server.uuid, port.alias)
    assert _domain(compute, server, inactive=True).find_device(alias=port.alias) is None
    assert compute.devices.interfaces(ALICE, server.uuid) == []


def test_a_guest_qemu_cannot_start_leaves_nothing_behind(
    qemu_compute: Compute, world_readable_tmp: Path
) -> None:
    compute = qemu_compute
    garbage = world_readable_tmp / "not-a-kernel"
    garbage.write_bytes(b"this is no kernel" * 64)
    garbage.chmod(0o644)
    compute.catalog.create_image("broken", kernel_path=str(garbage))
    server = compute.servers.create(ALICE, "broken", "tiny", "broken")
    compute.servers.wait(server.uuid, WAIT_S)
    failed = compute.servers.get(ALICE, server.uuid)
    assert failed.status == "ERROR"
    detail = failed.fault_detail
    assert detail is not None and "failed to start" in detail, detail
    # What members read names no host path (the admin's detail does).
    assert failed.fault is not None and str(garbage) not in failed.fault, failed.fault
    assert failed.host_uuid is None and failed.domain_name is None
    template = compute.hosts.settings.host.instance_name_template
    [host] = compute.hosts.list_all()
    client = compute.hosts.client(host.provider_uuid)
    assert not client.domain_exists(template % 1)
    assert not (compute.hosts.settings.data_dir / "instances" / server.uuid).exists()
    assert host.usage.get("VCPU", 0) == 0


def test_an_attach_the_store_cannot_record_is_detached_again(qemu_compute: Compute) -> None:
    from sqlalchemy.exc import DBAPIError

    from compute.store_faults import MESSAGE, refused_writes

    compute = qemu_compute
    server = _boot(compute)
    # Stopped, so that the undo needs no cooperation from a guest (a live unplug finishes
    # whenever the guest lets go of the disk).
    compute.servers.stop(ALICE, server.uuid)
    compute.servers.wait(server.uuid, WAIT_S)
    volume = compute.devices.create_volume(ALICE, "data", 1, "raw")
    with (
        refused_writes(compute.devices.engine, "volumes", "UPDATE", "NEW.status = 'in-use'"),
        pytest.raises(DBAPIError, match=MESSAGE),
    ):
        compute.devices.attach_volume(ALICE, server.uuid, volume.id)
    assert _domain(compute, server, inactive=True).find_device(alias=volume.alias) is None
    assert compute.devices.volume(ALICE, volume.id).status == "available"
    # And the volume is whole again: it attaches once the store records it.
    attached = compute.devices.attach_volume(ALICE, server.uuid, volume.id)
    assert attached.status == "in-use"
