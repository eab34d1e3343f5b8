"""Allocation candidates: resources, required / forbidden / any-of traits, capacity rules,
and an index that follows every committed write."""

from __future__ import annotations

import uuid

import pytest

from wattvisor.placement import (
    BadRequest,
    CandidateRequest,
    Inventory,
    Placement,
    TraitQuery,
    parse_required,
    parse_resources,
)


def _provider(
    placement: Placement, name: str, traits: list[str], vcpu: Inventory | None = None
) -> str:
    rp = str(uuid.uuid4())
    placement.ensure_provider(
        rp,
        name,
        {"VCPU": vcpu or Inventory(total=4), "MEMORY_MB": Inventory(total=4096)},
        traits,
    )
    return rp


def _names(placement: Placement, resources: str, *required: str) -> set[str]:
    request = CandidateRequest(parse_resources(resources), parse_required(list(required)))
    result = placement.allocation_candidates(request)
    by_uuid = {p.uuid: p.name for p in placement.list_providers()}
    return {by_uuid[c.provider_uuid] for c in result.candidates}


@pytest.fixture
def fleet(placement: Placement) -> Placement:
    _provider(placement, "virtio-x86", ["HW_ARCH_X86_64", "COMPUTE_NET_VIF_MODEL_VIRTIO"])
    _provider(placement, "e1000-x86", ["HW_ARCH_X86_64", "COMPUTE_NET_VIF_MODEL_E1000"])
    _provider(placement, "virtio-arm", ["HW_ARCH_AARCH64", "COMPUTE_NET_VIF_MODEL_VIRTIO"])
    _provider(placement, "bare", [])
    return placement


def test_required_traits_must_all_be_present(fleet: Placement) -> None:
    assert _names(fleet, "VCPU:1", "HW_ARCH_X86_64,COMPUTE_NET_VIF_MODEL_VIRTIO") == {"virtio-x86"}


def test_forbidden_trait_excludes_providers_that_have_it(fleet: Placement) -> None:
    assert _names(fleet, "VCPU:1", "!HW_ARCH_X86_64") == {"virtio-arm", "bare"}
    assert _names(fleet, "VCPU:1", "COMPUTE_NET_VIF_MODEL_VIRTIO,!HW_ARCH_AARCH64") == {
        "virtio-x86"
    }


def test_any_of_traits_needs_one_of_them(fleet: Placement) -> None:
    assert _names(fleet, "VCPU:1", "in:COMPUTE_NET_VIF_MODEL_E1000,HW_ARCH_AARCH64") == {
        "e1000-x86",
        "virtio-arm",
    }


def test_repeated_required_parameters_are_all_applied(fleet: Placement) -> None:
    assert _names(
        fleet,
        "VCPU:1",
        "in:COMPUTE_NET_VIF_MODEL_E1000,COMPUTE_NET_VIF_MODEL_VIRTIO",
        "!HW_ARCH_AARCH64",
    ) == {"e1000-x86", "virtio-x86"}


def test_no_trait_constraint_returns_every_provider_with_room(fleet: Placement) -> None:
    assert _names(fleet, "VCPU:4,MEMORY_MB:4096") == {
        "virtio-x86",
        "e1000-x86",
        "virtio-arm",
        "bare",
    }
    assert _names(fleet, "VCPU:5") == set()


def test_unknown_trait_or_resource_class_is_a_bad_request(fleet: Placement) -> None:
    with pytest.raises(BadRequest, match="No such trait"):
        _names(fleet, "VCPU:1", "CUSTOM_NOT_THERE")
    with pytest.raises(BadRequest, match="CUSTOM_NOPE"):
        _names(fleet, "CUSTOM_NOPE:1")


def test_malformed_query_strings_are_rejected() -> None:
    with pytest.raises(BadRequest, match="Badly formed resources"):
        parse_resources("VCPU")
    with pytest.raises(BadRequest, match="at least 1"):
        parse_resources("VCPU:0")
    with pytest.raises(BadRequest):
        parse_required(["in:A,!B"])
    with pytest.raises(BadRequest, match="Conflicting"):
        parse_required(["A,!A"])


@pytest.mark.parametrize(
    ("inventory", "used", "amount", "expected"),
    [
        (Inventory(total=8, reserved=2), 0, 6, True),
        (Inventory(total=8, reserved=2), 0, 7, False),
        (Inventory(total=8, reserved=2), 6, 1, False),
        (Inventory(total=4, allocation_ratio=1.5), 0, 6, True),
        (Inventory(total=4, allocation_ratio=1.5), 2, 5, False),
        (Inventory(total=4, reserved=1, allocation_ratio=2.0), 4, 2, True),
        (Inventory(total=4, reserved=1, allocation_ratio=2.0), 4, 3, False),
        (Inventory(total=64, step_size=4), 0, 6, False),
        (Inventory(total=64, step_size=4), 0, 8, True),
        (Inventory(total=64, max_unit=8), 0, 9, False),
        (Inventory(total=64, max_unit=8), 56, 8, True),
        (Inventory(total=64, min_unit=2), 0, 1, False),
    ],
)
def test_candidate_capacity_follows_placement_rules(
    placement: Placement, inventory: Inventory, used: int, amount: int, expected: bool
) -> None:
    rp = str(uuid.uuid4())
    placement.ensure_provider(rp, "edge", {"VCPU": inventory}, [])
    while used:
        chunk = min(used, inventory.max_unit)
        placement.set_allocations(
            str(uuid.uuid4()),
            {rp: {"VCPU": chunk}},
            project_id="p",
            user_id="u",
            consumer_generation=None,
        )
        used -= chunk
    result = placement.allocation_candidates(CandidateRequest({"VCPU": amount}))
    assert (len(result.candidates) == 1) is expected


def test_index_follows_writes_made_through_another_service(store_url: str) -> None:
    from wattvisor.store import make_engine

    engine_a, engine_b = make_engine(store_url), make_engine(store_url)
    try:
        writer, reader = Placement(engine_a), Placement(engine_b)
        request = CandidateRequest({"VCPU": 2}, TraitQuery(required=frozenset({"HW_ARCH_X86_64"})))
        assert reader.allocation_candidates(request).candidates == []
        rp = _provider(writer, "late", ["HW_ARCH_X86_64"], Inventory(total=2))
        assert [c.provider_uuid for c in reader.allocation_candidates(request).candidates] == [rp]
        writer.set_allocations(
            str(uuid.uuid4()),
            {rp: {"VCPU": 1}},
            project_id="p",
            user_id="u",
            consumer_generation=None,
        )
        assert reader.allocation_candidates(request).candidates == []
        generation = writer.get_provider(rp).generation
        writer.set_provider_traits(rp, generation, [])
        assert reader.allocation_candidates(CandidateRequest({"VCPU": 1})).candidates != []
        assert (
            reader.allocation_candidates(
                CandidateRequest({"VCPU": 1}, parse_required(["HW_ARCH_X86_64"]))
            ).candidates
            == []
        )
    finally:
        engine_a.dispose()
        engine_b.dispose()


def test_deleted_provider_leaves_the_candidates(fleet: Placement) -> None:
    assert "bare" in _names(fleet, "VCPU:1")
    bare = fleet.list_providers(name="bare")[0]
    fleet.delete_provider(bare.uuid)
    assert "bare" not in _names(fleet, "VCPU:1")


def test_limit_caps_candidates_and_summaries(fleet: Placement) -> None:
    result = fleet.allocation_candidates(CandidateRequest({"VCPU": 1}), limit=2)
    assert len(result.candidates) == 2
    assert set(result.summaries) == {c.provider_uuid for c in result.candidates}


def test_summary_reports_capacity_and_usage_of_every_class(fleet: Placement) -> None:
    rp = fleet.list_providers(name="bare")[0].uuid
    fleet.set_allocations(
        str(uuid.uuid4()),
        {rp: {"VCPU": 3}},
        project_id="p",
        user_id="u",
        consumer_generation=None,
    )
    summary = fleet.allocation_candidates(CandidateRequest({"VCPU": 1})).summaries[rp]
    assert summary.resources["VCPU"].capacity == 4
    assert summary.resources["VCPU"].used == 3
    assert summary.resources["MEMORY_MB"].used == 0
