"""Server lifecycle on libvirt's test driver: create → BUILD → ACTIVE, stop, start, delete."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update

from compute.principals import ADMIN, ALICE, BOB
from wattvisor.compute import Compute, Conflict, ImageRecord, InvalidRequest, NotFound
from wattvisor.compute.guest_build import ROOT_DISK_ALIAS
from wattvisor.compute.hostclient import HostOutcomeUnknown, SpawnRequest, SpawnResult
from wattvisor.guest import Disk, Domain, Serial
from wattvisor.host.configdrive import CONFIG_DRIVE_ALIAS
from wattvisor.store import make_engine, write_transaction
from wattvisor.store.compute_tables import ServerRow
from wattvisor.store.duties import single_duty


def _domain(compute: Compute, server_id: str) -> Domain:
    record = compute.servers.get(ADMIN, server_id)
    assert record.host_uuid is not None and record.domain_name is not None
    client = compute.hosts.client(record.host_uuid)
    return client.driver.domain(record.domain_name)  # type: ignore[attr-defined,no-any-return]


def test_create_returns_build_and_the_worker_makes_it_active(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "web 1", "tiny", kernel_image.name)
    assert server.status == "BUILD" and server.project == "proj-a" and server.user == "alice"
    settle(server.uuid)
    active = compute.servers.get(ALICE, server.uuid)
    assert active.status == "ACTIVE", active.fault
    assert active.task is None and active.fault is None
    domain = _domain(compute, server.uuid)
    assert domain.uuid == server.uuid
    meta = domain.instance_metadata
    assert meta is not None and meta.owner is not None and meta.flavor is not None
    assert (meta.owner.project_name, meta.owner.user_name) == ("proj-a", "alice")
    assert meta.owner.project_uuid == compute.identities.project("proj-a").uuid
    assert meta.flavor.name == "tiny" and meta.display_name == "web 1"
    assert meta.root is not None and meta.root.uuid == kernel_image.id
    [cdrom] = [d for d in domain.devices.of_type(Disk) if d.device == "cdrom"]
    assert cdrom.alias == CONFIG_DRIVE_ALIAS and cdrom.readonly
    [serial] = domain.devices.of_type(Serial)
    assert serial.source_path is not None and server.uuid in serial.source_path
    usage = compute.hosts.placement.get_usages(active.host_uuid or "").usages
    assert usage["VCPU"] == 1 and usage["MEMORY_MB"] == 256
    # ACPI: a graceful stop presses the power button; PCI hot-unplug needs it too.
    assert domain.features is not None and domain.features.acpi


def test_a_build_logs_the_schedulers_own_time_beside_the_whole_builds(
    compute: Compute,
    kernel_image: ImageRecord,
    settle: Callable[[str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import re

    caplog.set_level(logging.INFO, logger="wattvisor.compute.servers")
    server = compute.servers.create(ALICE, "web 1", "tiny", kernel_image.name)
    settle(server.uuid)
    host = compute.hosts.names()[compute.servers.get(ALICE, server.uuid).host_uuid or ""]
    [line] = [r.getMessage() for r in caplog.records if server.uuid in r.getMessage()]
    found = re.fullmatch(
        rf"server {server.uuid} ACTIVE on {re.escape(host)}: scheduled in ([0-9.]+) ms, "
        r"built in ([0-9]+) ms",
        line,
    )
    assert found is not None, line
    assert 0 < float(found[1]) <= float(found[2]) + 1


def test_domain_names_come_from_the_template_with_a_per_host_sequence(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    template = compute.hosts.settings.host.instance_name_template
    first = compute.servers.create(ALICE, "a", "tiny", kernel_image.id)
    second = compute.servers.create(ALICE, "b", "tiny", kernel_image.id)
    settle(first.uuid)
    settle(second.uuid)
    names = {compute.servers.get(ALICE, s.uuid).domain_name for s in (first, second)}
    assert names == {template % 1, template % 2}


def test_unknown_flavor_or_image_is_refused_and_nothing_is_recorded(
    compute: Compute, kernel_image: ImageRecord
) -> None:
    with pytest.raises(NotFound, match=r"flavor 'huge'.*small, tiny"):
        compute.servers.create(ALICE, "x", "huge", kernel_image.id)
    with pytest.raises(NotFound, match="image 'nope'"):
        compute.servers.create(ALICE, "x", "tiny", "nope")
    with pytest.raises(InvalidRequest, match="server name"):
        compute.servers.create(ALICE, " ", "tiny", kernel_image.id)
    assert compute.servers.list_all(ADMIN, include_deleted=True) == []


def test_another_project_sees_not_found_and_admin_sees_all(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "mine", "tiny", kernel_image.id)
    settle(server.uuid)
    with pytest.raises(NotFound):
        compute.servers.get(BOB, server.uuid)
    with pytest.raises(NotFound):
        compute.servers.delete(BOB, server.uuid)
    with pytest.raises(NotFound):
        compute.servers.metadata_document(BOB, server.uuid)
    assert compute.servers.list_all(BOB) == []
    assert [s.uuid for s in compute.servers.list_all(ALICE)] == [server.uuid]
    assert [s.uuid for s in compute.servers.list_all(ADMIN)] == [server.uuid]
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"


def test_stop_start_and_delete_release_everything(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "cycle", "small", kernel_image.id)
    settle(server.uuid)
    active = compute.servers.get(ALICE, server.uuid)
    host = active.host_uuid or ""
    instance_dir = compute.hosts.settings.data_dir / "instances" / server.uuid
    assert instance_dir.is_dir()
    with pytest.raises(Conflict, match="start needs status SHUTOFF"):
        compute.servers.start(ALICE, server.uuid)

    assert compute.servers.stop(ALICE, server.uuid).task == "stopping"
    settle(server.uuid)
    assert compute.servers.get(ALICE, server.uuid).status == "SHUTOFF"
    assert _domain(compute, server.uuid) is not None
    compute.servers.start(ALICE, server.uuid)
    settle(server.uuid)
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"

    compute.servers.delete(ALICE, server.uuid)
    settle(server.uuid)
    deleted = compute.servers.get(ALICE, server.uuid)
    assert deleted.status == "DELETED"
    assert compute.servers.list_all(ALICE) == []
    assert not instance_dir.exists()
    assert not compute.hosts.client(host).domain_exists(active.domain_name or "")
    usage = compute.hosts.placement.get_usages(host).usages
    assert usage.get("VCPU", 0) == 0 and usage.get("MEMORY_MB", 0) == 0
    with pytest.raises(Conflict, match="deleted already"):
        compute.servers.delete(ALICE, server.uuid)


def test_power_metrics_on_a_host_without_shares_ends_in_error_with_the_reason(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    compute.catalog.create_flavor("metered", 1, 256, 1, extra_specs={"hw:power_metrics": "true"})
    server = compute.servers.create(ALICE, "m", "metered", kernel_image.id)
    assert server.power_metrics
    settle(server.uuid)
    failed = compute.servers.get(ALICE, server.uuid)
    assert failed.status == "ERROR"
    assert failed.fault is not None and "COMPUTE_SHARE_LOCAL_FS" in failed.fault
    assert "hw:power_metrics" in (failed.fault or "")
    assert failed.host_uuid is None
    # The request flag asks for the same without a special flavor.
    flagged = compute.servers.create(ALICE, "f", "tiny", kernel_image.id, power_metrics=True)
    assert flagged.power_metrics


def test_contradicting_flavor_and_image_are_refused_at_create(
    compute: Compute, kernel_image: ImageRecord
) -> None:
    compute.catalog.create_flavor("nometrics", 1, 256, 1, extra_specs={"hw:power_metrics": "false"})
    image = compute.catalog.create_image(
        "wants-metrics",
        kernel_path=kernel_image.kernel_path,
        properties={"hw_power_metrics": "true"},
    )
    with pytest.raises(InvalidRequest, match="disagree"):
        compute.servers.create(ALICE, "x", "nometrics", image.id)
    assert compute.servers.list_all(ADMIN, include_deleted=True) == []


def test_metadata_document_has_identity_and_no_host_paths(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "Web Server", "tiny", kernel_image.id)
    settle(server.uuid)
    document = compute.servers.metadata_document(ALICE, server.uuid)
    assert document["uuid"] == server.uuid and document["project_id"] == "proj-a"
    assert document["hostname"] == "web-server" and document["devices"] == []
    assert str(compute.hosts.settings.data_dir) not in repr(document)


def test_a_build_interrupted_by_a_restart_finishes_on_the_domain_it_defined(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "interrupted", "tiny", kernel_image.id)
    settle(server.uuid)
    built = compute.servers.get(ALICE, server.uuid)
    host = built.host_uuid or ""
    usage = compute.hosts.placement.get_usages(host).usages.get("VCPU", 0)
    # What the store holds when the controller dies while spawning, with no build task
    # left (a store written before tasks were durable).
    with write_transaction(compute.servers.engine) as conn:
        conn.execute(
            update(ServerRow.__table__)
            .where(ServerRow.__table__.c.uuid == server.uuid)
            .values(status="BUILD", task="spawning")
        )
    notes = compute.servers.recover()
    assert notes == [f"server {server.uuid}: build queued again after a restart"]
    settle(server.uuid)
    finished = compute.servers.get(ALICE, server.uuid)
    assert (finished.status, finished.task, finished.fault) == ("ACTIVE", None, None)
    assert finished.domain_name == built.domain_name and finished.host_uuid == host
    states = compute.hosts.client(host).domain_states()
    assert server.uuid.lower() in states
    assert compute.hosts.placement.get_usages(host).usages.get("VCPU", 0) == usage
    assert compute.servers.recover() == []  # settled: nothing left in flight


def test_a_spawn_repeated_for_a_server_adopts_its_domain_and_never_defines_a_second(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "once", "tiny", kernel_image.id)
    settle(server.uuid)
    built = compute.servers.get(ALICE, server.uuid)
    assert built.host_uuid is not None and built.domain_name is not None
    client = compute.hosts.client(built.host_uuid)
    flavor, image = compute.catalog.flavor("tiny"), compute.catalog.image(kernel_image.id)
    request = compute.servers._spawn_request(
        built, built.domain_name, flavor, image, None, built.host_uuid
    )
    before = client.domain_states()
    again = client.spawn(request)
    assert again.domain_name == built.domain_name
    assert client.domain_states() == before
    other = dataclasses.replace(request, domain_name=built.domain_name + "-2")
    with pytest.raises(Exception, match="already has domain"):
        client.spawn(other)
    assert client.domain_states() == before
    assert not client.domain_exists(other.domain_name)
    assert client.domain_exists(built.domain_name)


def test_a_spawn_its_host_never_answered_is_finished_on_that_host_not_moved_elsewhere(
    compute: Compute,
    kernel_image: ImageRecord,
    settle: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [host] = compute.hosts.names()
    client = compute.hosts.client(host)
    real_spawn = client.spawn
    answers: list[str] = []

    def spawn_then_lose_the_answer(request: SpawnRequest) -> SpawnResult:
        result = real_spawn(request)  # the host did it all ...
        if not answers:
            answers.append("lost")
            raise HostOutcomeUnknown("host agent gave no answer to spawn")  # ... unheard
        answers.append("given")
        return result

    monkeypatch.setattr(client, "spawn", spawn_then_lose_the_answer)
    server = compute.servers.create(ALICE, "unheard", "tiny", kernel_image.id)
    settle(server.uuid)
    built = compute.servers.get(ALICE, server.uuid)
    assert (built.status, built.fault, built.host_uuid) == ("ACTIVE", None, host)
    assert answers == ["lost", "given"]
    assert [u for u in client.domain_states() if u == server.uuid.lower()] == [server.uuid.lower()]
    usage = compute.hosts.placement.get_usages(host).usages
    assert usage["VCPU"] == 1 and usage["MEMORY_MB"] == 256


def test_status_follows_the_guest_when_it_changes_behind_our_back(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "wanderer", "tiny", kernel_image.id)
    settle(server.uuid)
    record = compute.servers.get(ALICE, server.uuid)
    driver = compute.hosts.client(record.host_uuid or "").driver  # type: ignore[attr-defined]
    assert compute.servers.sync_power_states() == []  # in step: nothing to do

    driver.destroy(server.uuid)  # the guest powered itself off
    [change] = compute.servers.sync_power_states()
    assert "ACTIVE -> SHUTOFF" in change
    assert compute.servers.get(ALICE, server.uuid).status == "SHUTOFF"

    driver.start(server.uuid)
    compute.servers.sync_power_states()
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"

    driver.undefine(server.uuid)  # someone removed the domain with virsh
    compute.servers.sync_power_states()
    gone = compute.servers.get(ALICE, server.uuid)
    assert gone.status == "ERROR" and "the host lost the server" in (gone.fault or "")


def test_a_build_task_that_fails_for_good_leaves_the_server_error_with_its_last_error(
    compute: Compute, kernel_image: ImageRecord
) -> None:
    compute.servers.runs_tasks = False  # the task is settled by hand below
    server = compute.servers.create(ALICE, "doomed", "tiny", kernel_image.id)
    [lease] = compute.servers.tasks.claim("by-hand", ["build"])
    assert lease.task.target == server.uuid
    failed = compute.servers.tasks.fail(lease, "the store went away", retry=False)
    compute.servers._task_failed(failed)
    record = compute.servers.get(ADMIN, server.uuid)
    assert (record.status, record.task) == ("ERROR", None)
    assert record.fault is not None and "build failed after 1 attempt" in record.fault
    assert "the store went away" in (record.fault_detail or "")
    assert "the store went away" not in record.fault  # the detail is the admin's
    assert compute.hosts.placement.get_allocations(server.uuid).allocations == ()


def test_power_sync_is_skipped_while_another_controller_holds_its_duty(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "dutiful", "tiny", kernel_image.id)
    settle(server.uuid)
    record = compute.servers.get(ALICE, server.uuid)
    driver = compute.hosts.client(record.host_uuid or "").driver  # type: ignore[attr-defined]
    driver.destroy(server.uuid)  # the guest powered itself off
    # Another controller's engine on the same store holds the duty (on SQLite, one
    # process: the same in-process lock).
    other = make_engine(compute.servers.engine.url.render_as_string(hide_password=False))
    try:
        with single_duty(other, "power-sync") as duty:
            assert duty
            assert compute.servers.sync_power_states() == []
            assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"
    finally:
        other.dispose()
    [change] = compute.servers.sync_power_states()
    assert "ACTIVE -> SHUTOFF" in change


def test_disk_image_boots_from_a_per_server_overlay_of_the_disk(
    compute: Compute, settle: Callable[[str], None], tmp_path: Path
) -> None:
    disk = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    image = compute.catalog.create_image("disk-image", disk_path=str(disk), disk_format="qcow2")
    server = compute.servers.create(ALICE, "from-disk", "tiny", image.id)
    settle(server.uuid)
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"
    domain = _domain(compute, server.uuid)
    root = domain.find_device(alias=ROOT_DISK_ALIAS)
    assert isinstance(root, Disk) and root.driver_type == "qcow2" and root.target_dev == "vda"
    overlay = Path(root.source_file or "")
    assert overlay != disk and server.uuid in str(overlay)
    argv = ["qemu-img", "info", "--output=json", str(overlay)]
    info = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert info["backing-filename-format"] == "qcow2"
    assert Path(info["backing-filename"]).read_bytes() == disk.read_bytes()
    assert domain.kernel is None
