"""Placement service behaviour on SQLite and PostgreSQL: providers, inventories, traits,
allocations, usages, and the generation checks that make concurrent writers safe."""

from __future__ import annotations

import uuid

import pytest

from wattvisor.placement import (
    BadRequest,
    CapacityExceeded,
    ConcurrentUpdate,
    DuplicateName,
    Inventory,
    InventoryInUse,
    NotFound,
    Placement,
    ProviderInUse,
)

HOST_INVENTORY = {
    "VCPU": Inventory(total=8, allocation_ratio=2.0),
    "MEMORY_MB": Inventory(total=16384, reserved=512),
    "DISK_GB": Inventory(total=100),
}


def _host(placement: Placement, name: str = "host-1") -> str:
    provider = placement.create_provider(name)
    placement.set_inventories(provider.uuid, provider.generation, HOST_INVENTORY)
    return provider.uuid


def _claim(placement: Placement, rp: str, **resources: int) -> str:
    consumer = str(uuid.uuid4())
    placement.set_allocations(
        consumer, {rp: resources}, project_id="p", user_id="u", consumer_generation=None
    )
    return consumer


def test_created_provider_starts_at_generation_zero(placement: Placement) -> None:
    provider = placement.create_provider("host-a")
    assert provider.generation == 0
    assert placement.get_provider(provider.uuid) == provider
    assert placement.list_providers(name="host-a") == [provider]


def test_provider_name_and_uuid_are_unique(placement: Placement) -> None:
    provider = placement.create_provider("host-a")
    with pytest.raises(DuplicateName):
        placement.create_provider("host-a")
    with pytest.raises(DuplicateName):
        placement.create_provider("host-b", provider.uuid)
    assert [p.name for p in placement.list_providers()] == ["host-a"]


def test_unknown_provider_is_not_found(placement: Placement) -> None:
    with pytest.raises(NotFound):
        placement.get_provider(str(uuid.uuid4()))


def test_inventory_write_bumps_generation_and_stale_write_changes_nothing(
    placement: Placement,
) -> None:
    provider = placement.create_provider("host-a")
    result = placement.set_inventories(provider.uuid, 0, HOST_INVENTORY)
    assert result.generation == 1
    with pytest.raises(ConcurrentUpdate):
        placement.set_inventories(provider.uuid, 0, {"VCPU": Inventory(total=1)})
    current = placement.get_inventories(provider.uuid)
    assert current.generation == 1
    assert current.inventories == HOST_INVENTORY


def test_invalid_inventory_is_rejected_and_changes_nothing(placement: Placement) -> None:
    rp = _host(placement)
    with pytest.raises(BadRequest, match="reserved 9 must not exceed total 8"):
        placement.set_inventories(rp, 1, {"VCPU": Inventory(total=8, reserved=9)})
    with pytest.raises(BadRequest, match="CUSTOM_FPGA"):
        placement.set_inventories(rp, 1, {"CUSTOM_FPGA": Inventory(total=1)})
    assert placement.get_inventories(rp).generation == 1


def test_custom_resource_class_usable_once_created(placement: Placement) -> None:
    rp = _host(placement)
    assert placement.ensure_custom_resource_class("CUSTOM_FPGA") is True
    assert placement.ensure_custom_resource_class("CUSTOM_FPGA") is False
    placement.set_inventories(rp, 1, {"CUSTOM_FPGA": Inventory(total=2)})
    assert "CUSTOM_FPGA" in placement.list_resource_classes()


def test_removing_inventory_in_use_is_refused(placement: Placement) -> None:
    rp = _host(placement)
    _claim(placement, rp, DISK_GB=10)
    generation = placement.get_provider(rp).generation
    with pytest.raises(InventoryInUse):
        placement.set_inventories(rp, generation, {"VCPU": Inventory(total=8)})
    assert set(placement.get_inventories(rp).inventories) == set(HOST_INVENTORY)


def test_traits_replace_with_generation_check(placement: Placement) -> None:
    rp = placement.create_provider("host-a").uuid
    result = placement.set_provider_traits(rp, 0, ["HW_ARCH_X86_64", "COMPUTE_SHARE_LOCAL_FS"])
    assert result.generation == 1
    with pytest.raises(ConcurrentUpdate):
        placement.set_provider_traits(rp, 0, [])
    assert placement.get_provider_traits(rp).traits == {"HW_ARCH_X86_64", "COMPUTE_SHARE_LOCAL_FS"}


def test_unknown_trait_is_rejected_until_created(placement: Placement) -> None:
    rp = placement.create_provider("host-a").uuid
    with pytest.raises(BadRequest, match="No such trait"):
        placement.set_provider_traits(rp, 0, ["CUSTOM_GOLD"])
    assert placement.ensure_custom_trait("CUSTOM_GOLD") is True
    assert placement.ensure_custom_trait("CUSTOM_GOLD") is False
    placement.set_provider_traits(rp, 0, ["CUSTOM_GOLD"])
    assert "CUSTOM_GOLD" in placement.list_traits(starts_with="CUSTOM_")
    assert placement.list_traits(associated=True) == ["CUSTOM_GOLD"]


def test_custom_trait_needs_custom_prefix(placement: Placement) -> None:
    with pytest.raises(BadRequest, match="CUSTOM_"):
        placement.ensure_custom_trait("GOLD")


def test_custom_names_longer_than_255_characters_are_refused_and_not_stored(
    placement: Placement,
) -> None:
    longest = "CUSTOM_" + "A" * 248
    assert placement.ensure_custom_trait(longest)
    assert placement.ensure_custom_resource_class(longest)
    too_long = "CUSTOM_" + "A" * 300
    with pytest.raises(BadRequest, match=r"307 characters.*at most 255 characters"):
        placement.ensure_custom_trait(too_long)
    with pytest.raises(BadRequest, match=r"307 characters.*at most 255 characters"):
        placement.ensure_custom_resource_class(too_long)
    rp = str(uuid.uuid4())
    with pytest.raises(BadRequest, match="at most 255 characters"):
        placement.ensure_provider(rp, "long", {"VCPU": Inventory(total=1)}, [too_long])
    assert too_long not in placement.list_traits(starts_with="CUSTOM_")
    assert too_long not in placement.list_resource_classes()
    assert placement.list_providers(uuid=rp) == []


def test_allocation_shows_in_usages_and_consumer(placement: Placement) -> None:
    rp = _host(placement)
    consumer = _claim(placement, rp, VCPU=2, MEMORY_MB=1024)
    usages = placement.get_usages(rp)
    assert usages.usages == {"VCPU": 2, "MEMORY_MB": 1024, "DISK_GB": 0}
    held = placement.get_allocations(consumer)
    assert held.generation == 1
    assert held.project_id == "p"
    assert [(a.provider_uuid, a.resources) for a in held.allocations] == [
        (rp, {"MEMORY_MB": 1024, "VCPU": 2})
    ]


def test_consumer_generation_guards_allocation_replacement(placement: Placement) -> None:
    rp = _host(placement)
    consumer = _claim(placement, rp, VCPU=2)
    with pytest.raises(ConcurrentUpdate):
        placement.set_allocations(
            consumer, {rp: {"VCPU": 4}}, project_id="p", user_id="u", consumer_generation=None
        )
    with pytest.raises(ConcurrentUpdate):
        placement.set_allocations(
            consumer, {rp: {"VCPU": 4}}, project_id="p", user_id="u", consumer_generation=7
        )
    assert placement.get_usages(rp).usages["VCPU"] == 2
    assert (
        placement.set_allocations(
            consumer, {rp: {"VCPU": 4}}, project_id="p", user_id="u", consumer_generation=1
        )
        == 2
    )
    assert placement.get_usages(rp).usages["VCPU"] == 4


def test_capacity_counts_reserved_and_allocation_ratio(placement: Placement) -> None:
    rp = _host(placement)
    # VCPU: (8 - 0) * 2.0 = 16; MEMORY_MB: (16384 - 512) * 1.0 = 15872
    _claim(placement, rp, VCPU=16, MEMORY_MB=15872)
    with pytest.raises(CapacityExceeded):
        _claim(placement, rp, VCPU=1)
    with pytest.raises(CapacityExceeded):
        _claim(placement, rp, MEMORY_MB=1)
    assert placement.get_usages(rp).usages == {"VCPU": 16, "MEMORY_MB": 15872, "DISK_GB": 0}


@pytest.mark.parametrize(
    ("amount", "fits"),
    [(1, False), (2, True), (3, False), (8, True), (10, False), (12, False)],
)
def test_allocation_respects_min_max_and_step(
    placement: Placement, amount: int, fits: bool
) -> None:
    rp = placement.create_provider("host-a").uuid
    placement.set_inventories(
        rp, 0, {"VCPU": Inventory(total=64, min_unit=2, max_unit=8, step_size=2)}
    )
    if fits:
        _claim(placement, rp, VCPU=amount)
        assert placement.get_usages(rp).usages["VCPU"] == amount
    else:
        with pytest.raises(CapacityExceeded):
            _claim(placement, rp, VCPU=amount)
        assert placement.get_usages(rp).usages["VCPU"] == 0


def test_allocation_on_missing_provider_or_class_changes_nothing(placement: Placement) -> None:
    rp = _host(placement)
    ghost = str(uuid.uuid4())
    consumer = str(uuid.uuid4())
    with pytest.raises(BadRequest, match=ghost):
        placement.set_allocations(
            consumer,
            {rp: {"VCPU": 1}, ghost: {"VCPU": 1}},
            project_id="p",
            user_id="u",
            consumer_generation=None,
        )
    with pytest.raises(CapacityExceeded, match="VGPU"):
        placement.set_allocations(
            consumer,
            {rp: {"VCPU": 1, "VGPU": 1}},
            project_id="p",
            user_id="u",
            consumer_generation=None,
        )
    assert placement.get_allocations(consumer).allocations == ()
    assert placement.get_usages(rp).usages["VCPU"] == 0


def test_deleting_allocations_frees_capacity(placement: Placement) -> None:
    rp = _host(placement)
    consumer = _claim(placement, rp, VCPU=16)
    placement.delete_allocations(consumer)
    assert placement.get_usages(rp).usages["VCPU"] == 0
    assert placement.get_allocations(consumer).generation is None
    with pytest.raises(NotFound):
        placement.delete_allocations(consumer)
    _claim(placement, rp, VCPU=16)


def test_empty_allocations_release_everything(placement: Placement) -> None:
    rp = _host(placement)
    consumer = _claim(placement, rp, VCPU=3)
    placement.set_allocations(consumer, {}, project_id="p", user_id="u", consumer_generation=1)
    assert placement.get_usages(rp).usages["VCPU"] == 0


def test_provider_with_allocations_cannot_be_deleted(placement: Placement) -> None:
    rp = _host(placement)
    consumer = _claim(placement, rp, VCPU=1)
    with pytest.raises(ProviderInUse):
        placement.delete_provider(rp)
    placement.delete_allocations(consumer)
    placement.delete_provider(rp)
    with pytest.raises(NotFound):
        placement.get_provider(rp)


def test_ensure_provider_is_idempotent(placement: Placement) -> None:
    rp = str(uuid.uuid4())
    first = placement.ensure_provider(
        rp, "host-a", HOST_INVENTORY, ["HW_ARCH_X86_64", "CUSTOM_HYPERVISOR_QEMU"]
    )
    again = placement.ensure_provider(
        rp, "host-a", HOST_INVENTORY, ["HW_ARCH_X86_64", "CUSTOM_HYPERVISOR_QEMU"]
    )
    assert again.generation == first.generation
    changed = placement.ensure_provider(rp, "host-a", HOST_INVENTORY, ["HW_ARCH_X86_64"])
    assert changed.generation == first.generation + 1
    assert placement.get_provider_traits(rp).traits == {"HW_ARCH_X86_64"}


def test_moving_a_claim_between_consumers_releases_before_checking(
    placement: Placement,
) -> None:
    from wattvisor.placement import ConsumerAllocationUpdate

    rp = placement.create_provider("full").uuid
    placement.set_inventories(rp, 0, {"VCPU": Inventory(total=4)})
    instance = _claim(placement, rp, VCPU=4)
    migration = str(uuid.uuid4())
    generations = placement.set_allocations_many(
        [
            ConsumerAllocationUpdate(
                instance, {}, project_id="p", user_id="u", consumer_generation=1
            ),
            ConsumerAllocationUpdate(
                migration,
                {rp: {"VCPU": 4}},
                project_id="p",
                user_id="u",
                consumer_generation=None,
            ),
        ]
    )
    assert generations == {instance: None, migration: 1}
    assert placement.get_allocations(instance).allocations == ()
    assert placement.get_usages(rp).usages == {"VCPU": 4}


def test_many_consumer_update_is_all_or_nothing(placement: Placement) -> None:
    from wattvisor.placement import ConsumerAllocationUpdate

    rp = placement.create_provider("small").uuid
    placement.set_inventories(rp, 0, {"VCPU": Inventory(total=4)})
    kept = _claim(placement, rp, VCPU=1)
    with pytest.raises(CapacityExceeded):
        placement.set_allocations_many(
            [
                ConsumerAllocationUpdate(
                    kept, {rp: {"VCPU": 2}}, project_id="p", user_id="u", consumer_generation=1
                ),
                ConsumerAllocationUpdate(
                    str(uuid.uuid4()),
                    {rp: {"VCPU": 3}},
                    project_id="p",
                    user_id="u",
                    consumer_generation=None,
                ),
            ]
        )
    assert placement.get_allocations(kept).generation == 1
    assert placement.get_usages(rp).usages == {"VCPU": 1}
