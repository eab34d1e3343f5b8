"""Volumes and interfaces: the pool, visibility, and refusals that change nothing (test driver)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from compute.conftest import add_test_driver_host
from compute.principals import ALICE, BOB
from wattvisor.compute import (
    Compute,
    Conflict,
    HostOperationFailed,
    ImageRecord,
    InvalidRequest,
    NotFound,
)


def test_volume_is_created_in_the_pool_and_deleted(compute: Compute) -> None:
    volume = compute.devices.create_volume(ALICE, "data", 2, "qcow2")
    assert volume.status == "available" and volume.size_gb == 2 and volume.format == "qcow2"
    assert volume.alias == f"ua-{volume.id}"
    assert volume.path.startswith(str(compute.hosts.settings.data_dir / "volumes"))
    assert [v.id for v in compute.devices.volumes(ALICE)] == [volume.id]
    assert compute.devices.volumes(BOB) == []
    with pytest.raises(NotFound):
        compute.devices.delete_volume(BOB, volume.id)
    compute.devices.delete_volume(ALICE, volume.id)
    assert compute.devices.volumes(ALICE) == []


def test_bad_volume_requests_change_nothing(compute: Compute) -> None:
    with pytest.raises(InvalidRequest, match=r"format 'vmdk'.*raw, qcow2"):
        compute.devices.create_volume(ALICE, "x", 1, "vmdk")
    with pytest.raises(InvalidRequest, match="size 0 GiB"):
        compute.devices.create_volume(ALICE, "x", 0)
    assert compute.devices.volumes(ALICE) == []


def test_failed_attach_leaves_the_volume_available(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    # libvirt's test driver has no device hot-plug: the host refuses, nothing is recorded.
    server = compute.servers.create(ALICE, "s", "tiny", kernel_image.id)
    settle(server.uuid)
    volume = compute.devices.create_volume(ALICE, "data", 1)
    with pytest.raises(HostOperationFailed, match="cannot attach"):
        compute.devices.attach_volume(ALICE, server.uuid, volume.id)
    assert compute.devices.volume(ALICE, volume.id).status == "available"
    assert compute.devices.server_volumes(ALICE, server.uuid) == []
    with pytest.raises(NotFound, match="no volume or interface with alias 'ua-nothing'"):
        compute.devices.detach(ALICE, server.uuid, "ua-nothing")
    with pytest.raises(HostOperationFailed):
        compute.devices.attach_interface(ALICE, server.uuid)
    assert compute.devices.interfaces(ALICE, server.uuid) == []
    with pytest.raises(InvalidRequest, match="model 'ne2000'"):
        compute.devices.attach_interface(ALICE, server.uuid, "ne2000")


def test_volume_of_another_project_cannot_be_attached(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "s", "tiny", kernel_image.id)
    settle(server.uuid)
    theirs = compute.devices.create_volume(BOB, "theirs", 1)
    with pytest.raises(NotFound):
        compute.devices.attach_volume(ALICE, server.uuid, theirs.id)


def test_devices_change_only_on_servers_on_a_host(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    compute.catalog.create_flavor("metered", 1, 256, 1, extra_specs={"hw:power_metrics": "on"})
    server = compute.servers.create(ALICE, "nohost", "metered", kernel_image.id)
    settle(server.uuid)  # ERROR: no host shares power metrics
    volume = compute.devices.create_volume(ALICE, "data", 1)
    with pytest.raises(Conflict, match="is ERROR"):
        compute.devices.attach_volume(ALICE, server.uuid, volume.id)


def test_volume_goes_to_the_host_of_the_server_it_is_for(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None], tmp_path: Path
) -> None:
    other = add_test_driver_host(compute, tmp_path, "rack-2")
    [local] = [h for h in compute.hosts.list_all() if h.local]
    compute.hosts.set_enabled(local.provider_uuid, False)
    server = compute.servers.create(ALICE, "far", "tiny", kernel_image.id)
    settle(server.uuid)
    assert compute.servers.get(ALICE, server.uuid).host_uuid == other.provider_uuid

    # Without a server the volume lands on the local host and cannot follow the server.
    stray = compute.devices.create_volume(ALICE, "stray", 1)
    assert stray.host_uuid == local.provider_uuid
    with pytest.raises(Conflict, match="lives on another host"):
        compute.devices.attach_volume(ALICE, server.uuid, stray.id)

    near = compute.devices.create_volume(ALICE, "near", 1, server_id=server.uuid)
    assert near.host_uuid == other.provider_uuid
    # The attach now reaches the server's host (whose test driver has no hot-plug).
    with pytest.raises(HostOperationFailed, match="cannot attach"):
        compute.devices.attach_volume(ALICE, server.uuid, near.id)


def test_volume_for_an_unusable_server_is_refused_and_changes_nothing(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "s", "tiny", kernel_image.id)
    settle(server.uuid)
    with pytest.raises(NotFound, match=f"server '{server.uuid}' does not exist"):
        compute.devices.create_volume(BOB, "x", 1, server_id=server.uuid)
    with pytest.raises(NotFound, match="server 'nope' does not exist"):
        compute.devices.create_volume(ALICE, "x", 1, server_id="nope")
    compute.servers.delete(ALICE, server.uuid)
    settle(server.uuid)
    with pytest.raises(Conflict, match="is DELETED and on no host"):
        compute.devices.create_volume(ALICE, "x", 1, server_id=server.uuid)
    assert compute.devices.volumes(ALICE) == [] and compute.devices.volumes(BOB) == []
