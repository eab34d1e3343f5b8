"""Volumes are found by id or by a name unique among those the caller may see."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from compute.principals import ADMIN, ALICE, BOB
from wattvisor.compute import Compute, Conflict, HostOperationFailed, ImageRecord, NotFound


def test_a_volume_is_found_by_its_unique_name_and_deleted_by_it(compute: Compute) -> None:
    volume = compute.devices.create_volume(ALICE, "data1", 1)
    assert compute.devices.volume(ALICE, "data1").id == volume.id
    assert compute.devices.volume(ADMIN, "data1").id == volume.id
    with pytest.raises(NotFound, match="volume 'data1' does not exist"):
        compute.devices.volume(BOB, "data1")
    with pytest.raises(NotFound):
        compute.devices.delete_volume(BOB, "data1")
    compute.devices.delete_volume(ALICE, "data1")
    assert compute.devices.volumes(ALICE) == []


def test_an_ambiguous_name_is_refused_with_the_matching_ids(compute: Compute) -> None:
    first = compute.devices.create_volume(ALICE, "dup", 1)
    second = compute.devices.create_volume(ALICE, "dup", 1)
    with pytest.raises(Conflict, match="2 volumes are named 'dup'") as refused:
        compute.devices.volume(ALICE, "dup")
    assert refused.value.details["ids"] == [first.id, second.id]
    assert first.id in refused.value.message and second.id in refused.value.message
    with pytest.raises(Conflict):
        compute.devices.delete_volume(ALICE, "dup")
    assert len(compute.devices.volumes(ALICE)) == 2
    # Bob's own "dup" is the only one he sees, so for him the name is unique.
    bobs = compute.devices.create_volume(BOB, "dup", 1)
    assert compute.devices.volume(BOB, "dup").id == bobs.id


def test_attach_by_name_looks_in_the_servers_project(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "s", "tiny", kernel_image.id)
    settle(server.uuid)
    mine = compute.devices.create_volume(ALICE, "data", 1)
    compute.devices.create_volume(BOB, "data", 1)
    # An admin sees both "data" volumes, but only Alice's can go on Alice's server: the
    # name is resolved, and the test driver's missing hot-plug is what refuses.
    with pytest.raises(HostOperationFailed, match="cannot attach"):
        compute.devices.attach_volume(ADMIN, server.uuid, "data")
    with pytest.raises(Conflict, match="2 volumes are named 'data'"):
        compute.devices.volume(ADMIN, "data")
    assert compute.devices.volume(ALICE, "data") == mine
