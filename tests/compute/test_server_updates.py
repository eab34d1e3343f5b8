"""Rename and resize of existing servers (libvirt's test driver; SQLite and PostgreSQL).

The live parts on a real QEMU guest are in test_server_updates_qemu.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from compute.principals import ADMIN, ALICE, BOB
from wattvisor.compute import Compute, Conflict, ImageRecord, InvalidRequest, NotFound
from wattvisor.compute.server_updates import RESIZE_TASK
from wattvisor.guest import Domain


def _boot(compute: Compute, image: ImageRecord, settle: Callable[[str], None]) -> str:
    server = compute.servers.create(ALICE, "web", "tiny", image.name)
    settle(server.uuid)
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"
    return server.uuid


def _client(compute: Compute, server_id: str) -> Any:
    record = compute.servers.get(ADMIN, server_id)
    return compute.hosts.client(record.host_uuid or "")


def _domain(compute: Compute, server_id: str, *, inactive: bool = False) -> Domain:
    record = compute.servers.get(ADMIN, server_id)
    driver = _client(compute, server_id).driver
    return driver.domain(record.domain_name or "", inactive=inactive)  # type: ignore[no-any-return]


def _snapshot(compute: Compute, server_id: str) -> tuple[Any, ...]:
    """Everything a refused resize must leave alone."""
    record = compute.servers.get(ADMIN, server_id)
    driver = _client(compute, server_id).driver
    allocations = compute.scheduler.placement.get_allocations(server_id)
    return (
        record.status, record.task, record.flavor_id, record.fault,
        tuple((a.provider_uuid, tuple(sorted(a.resources.items())))
              for a in allocations.allocations),
        allocations.generation,
        driver.domain_xml(record.domain_name or ""),
        driver.domain_xml(record.domain_name or "", inactive=True),
    )  # fmt: skip


# -- rename --------------------------------------------------------------------------------


def test_rename_changes_the_record_and_the_domain_metadata_but_not_the_domain_name(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server_id = _boot(compute, kernel_image, settle)
    before = compute.servers.get(ADMIN, server_id)
    renamed = compute.updates.rename(ALICE, server_id, "web ünïcode 2")
    assert renamed.name == "web ünïcode 2"
    assert compute.servers.get(ALICE, server_id).name == "web ünïcode 2"
    for inactive in (False, True):
        domain = _domain(compute, server_id, inactive=inactive)
        assert domain.name == before.domain_name
        meta = domain.instance_metadata
        assert meta is not None and meta.display_name == "web ünïcode 2", inactive
        assert meta.flavor is not None and meta.flavor.name == "tiny"
    assert compute.servers.metadata_document(ALICE, server_id)["name"] == "web ünïcode 2"


@pytest.mark.parametrize("name", ["", "   ", "x" * 256, "bad\u202ename", "nul\x00"])
def test_rename_to_a_bad_name_is_refused_naming_it_and_changes_nothing(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None], name: str
) -> None:
    server_id = _boot(compute, kernel_image, settle)
    with pytest.raises(InvalidRequest, match="server name"):
        compute.updates.rename(ALICE, server_id, name)
    assert compute.servers.get(ALICE, server_id).name == "web"
    meta = _domain(compute, server_id).instance_metadata
    assert meta is not None and meta.display_name == "web"


def test_members_cannot_rename_or_resize_another_projects_server(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server_id = _boot(compute, kernel_image, settle)
    before = _snapshot(compute, server_id)
    with pytest.raises(NotFound, match=server_id):
        compute.updates.rename(BOB, server_id, "mine now")
    with pytest.raises(NotFound, match=server_id):
        compute.updates.resize(BOB, server_id, "small")
    assert compute.servers.get(ALICE, server_id).name == "web"
    assert _snapshot(compute, server_id) == before
    # An admin may do both.
    assert compute.updates.rename(ADMIN, server_id, "by admin").name == "by admin"


def test_a_server_renamed_before_its_build_ran_is_built_with_the_new_name(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "first", "tiny", kernel_image.name)
    compute.updates.rename(ALICE, server.uuid, "second")
    settle(server.uuid)
    meta = _domain(compute, server.uuid).instance_metadata
    assert meta is not None and meta.display_name == "second"


# -- resize --------------------------------------------------------------------------------


def test_resize_moves_domain_metadata_and_placement_to_the_new_flavor(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    big = compute.catalog.create_flavor("big", 2, 768, 1)
    server_id = _boot(compute, kernel_image, settle)
    host = compute.servers.get(ADMIN, server_id).host_uuid or ""
    placement = compute.scheduler.placement
    used_before = placement.get_usages(host).usages
    accepted = compute.updates.resize(ALICE, server_id, "big")
    assert accepted.task == RESIZE_TASK and accepted.flavor_id == big.id
    # The claim moved with the request, before the host's part.
    assert placement.get_allocations(server_id).allocations[0].resources["VCPU"] == 2
    settle(server_id)
    done = compute.servers.get(ALICE, server_id)
    assert (done.status, done.task, done.fault, done.flavor_id) == ("ACTIVE", None, None, big.id)
    for inactive in (False, True):
        domain = _domain(compute, server_id, inactive=inactive)
        assert (domain.vcpus, domain.memory_mib) == (2, 768), inactive
        meta = domain.instance_metadata
        assert meta is not None and meta.flavor is not None
        assert (meta.flavor.name, meta.flavor.id, meta.flavor.vcpus) == ("big", big.id, 2)
        assert meta.display_name == "web"
    used = placement.get_usages(host).usages
    assert used["VCPU"] == used_before["VCPU"] + 1
    assert used["MEMORY_MB"] == used_before["MEMORY_MB"] + 512
    [part] = placement.get_allocations(server_id).allocations
    assert part.provider_uuid == host and part.resources["MEMORY_MB"] == 768


def test_resize_of_a_shutoff_server_leaves_it_off(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    compute.catalog.create_flavor("big", 2, 768, 1)
    server_id = _boot(compute, kernel_image, settle)
    compute.servers.stop(ALICE, server_id)
    settle(server_id)
    compute.updates.resize(ALICE, server_id, "big")
    settle(server_id)
    done = compute.servers.get(ALICE, server_id)
    assert (done.status, done.task) == ("SHUTOFF", None)
    assert _domain(compute, server_id, inactive=True).vcpus == 2


def test_resize_the_host_has_no_room_for_changes_nothing_and_names_flavor_and_class(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    compute.catalog.create_flavor("huge", 4096, 256, 1)
    server_id = _boot(compute, kernel_image, settle)
    before = _snapshot(compute, server_id)
    with pytest.raises(Conflict) as refused:
        compute.updates.resize(ALICE, server_id, "huge")
    message = refused.value.message
    assert "'huge'" in message and "VCPU:4096" in message and "nothing was changed" in message
    assert _snapshot(compute, server_id) == before
    settle(server_id)
    assert _snapshot(compute, server_id) == before


def test_resize_to_a_flavor_needing_a_trait_the_host_lacks_changes_nothing(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    compute.catalog.create_flavor(
        "avx512", 1, 256, 1, extra_specs={"trait:HW_CPU_X86_AVX512VNNI": "required"}
    )
    server_id = _boot(compute, kernel_image, settle)
    before = _snapshot(compute, server_id)
    with pytest.raises(Conflict, match=r"'avx512'.*lacks HW_CPU_X86_AVX512VNNI"):
        compute.updates.resize(ALICE, server_id, "avx512")
    assert _snapshot(compute, server_id) == before


def test_resize_to_an_unknown_or_the_same_flavor_is_refused_naming_it(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server_id = _boot(compute, kernel_image, settle)
    before = _snapshot(compute, server_id)
    with pytest.raises(NotFound, match="'no-such-flavor'"):
        compute.updates.resize(ALICE, server_id, "no-such-flavor")
    with pytest.raises(InvalidRequest, match="'tiny' already"):
        compute.updates.resize(ALICE, server_id, "tiny")
    assert _snapshot(compute, server_id) == before


def test_resize_while_another_task_runs_is_a_conflict(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    compute.catalog.create_flavor("big", 2, 768, 1)
    server_id = _boot(compute, kernel_image, settle)
    with compute.servers.lock_for(server_id):  # holds the stop's worker back
        compute.servers.stop(ALICE, server_id)
        with pytest.raises(Conflict, match="stopping"):
            compute.updates.resize(ALICE, server_id, "big")
    settle(server_id)
    record = compute.servers.get(ALICE, server_id)
    assert record.status == "SHUTOFF" and record.flavor_id != "big"


def test_stop_and_a_second_resize_are_refused_while_a_resize_runs(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    compute.catalog.create_flavor("big", 2, 768, 1)
    compute.catalog.create_flavor("bigger", 2, 1024, 1)
    server_id = _boot(compute, kernel_image, settle)
    with compute.servers.lock_for(server_id):  # holds the resize's worker back
        compute.updates.resize(ALICE, server_id, "big")
        with pytest.raises(Conflict, match=RESIZE_TASK):
            compute.servers.stop(ALICE, server_id)
        with pytest.raises(Conflict, match=RESIZE_TASK):
            compute.updates.resize(ALICE, server_id, "bigger")
        deleting = compute.servers.delete(ALICE, server_id)  # a delete takes over
        assert deleting.task == "deleting"
    settle(server_id)
    assert compute.servers.get(ADMIN, server_id).status == "DELETED"
    assert compute.scheduler.placement.get_allocations(server_id).allocations == ()


def test_a_resize_the_host_fails_puts_back_flavor_claim_and_domain(
    compute: Compute,
    kernel_image: ImageRecord,
    settle: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compute.catalog.create_flavor("big", 2, 768, 1)
    server_id = _boot(compute, kernel_image, settle)
    before = _snapshot(compute, server_id)
    client = _client(compute, server_id)

    def refuse(*_args: object) -> str:
        raise RuntimeError("the host said no")

    monkeypatch.setattr(client, "resize", refuse)
    compute.updates.resize(ALICE, server_id, "big")
    settle(server_id)
    record = compute.servers.get(ALICE, server_id)
    assert record.fault is not None and "'big' failed" in record.fault
    assert "the host said no" not in record.fault  # the host's words are the admin's
    assert "the host said no" in (compute.servers.get(ADMIN, server_id).fault_detail or "")
    after = _snapshot(compute, server_id)
    assert after[0:3] == before[0:3] and after[4] == before[4]  # status, task, flavor, claim
    assert after[6:] == before[6:]  # both domain XMLs


def test_an_interrupted_resize_is_carried_on_after_a_restart(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    big = compute.catalog.create_flavor("big", 2, 768, 1)
    server_id = _boot(compute, kernel_image, settle)
    record = compute.servers.get(ADMIN, server_id)
    # What a controller that stopped after accepting the resize leaves behind: the task,
    # the new flavor and its claim recorded, the host's part not done.
    assert compute.servers._claim_task(server_id, RESIZE_TASK, statuses=("ACTIVE",))
    compute.updates._set_flavor(server_id, big.id)
    compute.updates._move_claim(
        record, {record.host_uuid or "": {"VCPU": 2, "MEMORY_MB": 768, "DISK_GB": 1}}
    )
    notes = compute.servers.recover()
    assert f"server {server_id}: resizing again after a restart" in notes
    settle(server_id)
    done = compute.servers.get(ADMIN, server_id)
    assert (done.status, done.task, done.flavor_id) == ("ACTIVE", None, big.id)
    assert _domain(compute, server_id, inactive=True).vcpus == 2
    assert _domain(compute, server_id).memory_mib == 768


def test_resize_to_a_smaller_root_disk_is_refused_naming_both_sizes(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    compute.catalog.create_flavor("roomy", 1, 256, 5)
    compute.catalog.create_flavor("cramped", 2, 512, 1)
    server = compute.servers.create(ALICE, "disk", "roomy", kernel_image.name)
    settle(server.uuid)
    before = _snapshot(compute, server.uuid)
    with pytest.raises(InvalidRequest, match=r"'cramped' has a 1 GiB root disk.*5 GiB"):
        compute.updates.resize(ALICE, server.uuid, "cramped")
    assert _snapshot(compute, server.uuid) == before


def test_rename_of_a_server_whose_domain_vanished_changes_the_record(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server_id = _boot(compute, kernel_image, settle)
    _client(compute, server_id).driver.undefine(server_id)
    assert compute.updates.rename(ALICE, server_id, "orphan").name == "orphan"


def test_a_claim_lost_after_the_check_refuses_the_resize_and_changes_nothing(
    compute: Compute,
    kernel_image: ImageRecord,
    settle: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compute.catalog.create_flavor("huge", 4096, 256, 1)
    server_id = _boot(compute, kernel_image, settle)
    before = _snapshot(compute, server_id)
    checks = iter([[]])  # the first check passes, as if another claim came in after it
    real = compute.updates._misfits
    monkeypatch.setattr(
        compute.updates, "_misfits", lambda *args: next(checks, None) or real(*args)
    )
    with pytest.raises(Conflict, match=r"'huge'.*VCPU:4096"):
        compute.updates.resize(ALICE, server_id, "huge")
    assert _snapshot(compute, server_id) == before


def test_two_racing_resizes_one_wins_and_the_claim_matches_its_flavor(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    flavors = {
        "big": compute.catalog.create_flavor("big", 2, 768, 1),
        "bigger": compute.catalog.create_flavor("bigger", 3, 1024, 1),
    }
    server_id = _boot(compute, kernel_image, settle)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def resize(name: str) -> None:
        barrier.wait(10)
        try:
            compute.updates.resize(ALICE, server_id, name)
            outcomes[name] = "accepted"
        except Conflict:
            outcomes[name] = "conflict"

    threads = [threading.Thread(target=resize, args=(n,)) for n in flavors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes.values()) == ["accepted", "conflict"]
    [winner] = [n for n, o in outcomes.items() if o == "accepted"]
    settle(server_id)
    record = compute.servers.get(ALICE, server_id)
    assert (record.status, record.task, record.flavor_id) == ("ACTIVE", None, flavors[winner].id)
    [part] = compute.scheduler.placement.get_allocations(server_id).allocations
    assert part.resources["VCPU"] == flavors[winner].vcpus
    assert _domain(compute, server_id).vcpus == flavors[winner].vcpus
