"""Attach and detach are tasks of their server in the store (real SQLite and PostgreSQL,
libvirt's test driver, which has no device hot-plug): a request that outlasts its wait
leaves the change to the task, a controller that dies mid-change leaves the task to
another one, and a server's device changes run in order with its other tasks."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from compute.conftest import WAIT_S
from compute.principals import ALICE
from wattvisor.compute import Compute, Conflict, HostOperationFailed, ImageRecord, ServerRecord
from wattvisor.compute.devices import (
    ATTACH_VOLUME,
    DETACH,
    DEVICE_TASK_ATTEMPTS,
    _decoded_error,
    _encoded_error,
)
from wattvisor.compute.tasks import TaskQueue
from wattvisor.config import Settings, load_settings
from wattvisor.store import write_transaction
from wattvisor.store.compute_tables import VolumeRow
from wattvisor.store.task_tables import TaskRow

DEAD_LEASE_S = 2.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Requests do not wait for their device tasks (they answer as the API's 202 does);
    a dead controller's claim runs out after 2 s."""
    return load_settings(
        data_dir=tmp_path / "data",
        host={
            "libvirt_uri": "test:///default",
            "virt_type": "qemu",
            "instance_name_template": f"wvd-{secrets.token_hex(4)}-%04x",
        },
        energy={"source": "model"},
        compute={"workers": 2, "device_wait_s": 0, "task_lease_s": DEAD_LEASE_S},
    )


def _queue_only(compute: Compute) -> None:
    """This controller queues tasks but runs none (as an API process without a worker)."""
    compute.servers.shutdown()
    compute.servers.runs_tasks = False


def _active(compute: Compute, image: ImageRecord, settle: Callable[[str], None]) -> ServerRecord:
    server = compute.servers.create(ALICE, "s", "tiny", image.id)
    settle(server.uuid)
    record = compute.servers.get(ALICE, server.uuid)
    assert record.status == "ACTIVE"
    return record


def _pretend_attached(compute: Compute, volume_id: str, server_uuid: str) -> None:
    """The volume as an attach that worked on a real host leaves it (the test driver
    cannot hot-plug, and its domain does not have the device: a detach finds it gone)."""
    with write_transaction(compute.devices.engine) as conn:
        conn.execute(
            update(VolumeRow)
            .where(VolumeRow.id == volume_id)
            .values(status="in-use", server_uuid=server_uuid)
        )


def test_a_detach_outlasting_its_wait_goes_on_and_a_dead_controllers_detach_is_finished(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = _active(compute, kernel_image, settle)
    volume = compute.devices.create_volume(ALICE, "data", 1)
    _pretend_attached(compute, volume.id, server.uuid)
    _queue_only(compute)

    assert compute.devices.detach(ALICE, server.uuid, volume.alias) is False
    assert compute.devices.volume(ALICE, volume.id).status == "detaching"
    # The same detach again is the same task, not a second one.
    assert compute.devices.detach(ALICE, server.uuid, volume.alias) is False
    [task] = compute.servers.tasks.in_flight(server.uuid)
    assert task.kind == DETACH and task.key == volume.alias

    # A controller claims it and dies (it never renews its claim).
    dead = TaskQueue(compute.servers.tasks.engine, lease_s=DEAD_LEASE_S)
    [lease] = dead.claim("dead-controller", [DETACH])
    assert lease.task.id == task.id

    compute.servers.start_worker()  # another controller, sharing the store
    compute.servers.wait(server.uuid, WAIT_S)
    finished = compute.servers.tasks.get(task.id)
    assert finished is not None and finished.state == "done" and finished.attempts == 2
    detached = compute.devices.volume(ALICE, volume.id)
    assert detached.status == "available" and detached.server_uuid is None
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"  # untouched


def test_an_attach_outlasting_its_wait_claims_the_volume_and_its_failure_frees_it(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = _active(compute, kernel_image, settle)
    volume = compute.devices.create_volume(ALICE, "data", 1)
    _queue_only(compute)

    pending = compute.devices.attach_volume(ALICE, server.uuid, volume.id)
    assert pending.status == "attaching" and pending.server_uuid == server.uuid
    again = compute.devices.attach_volume(ALICE, server.uuid, "data")  # by name, same task
    assert again.status == "attaching"
    [task] = compute.servers.tasks.in_flight(server.uuid)
    assert task.kind == ATTACH_VOLUME
    # Claimed durably: no other request can take or delete it meanwhile.
    with pytest.raises(Conflict, match="attached to server"):
        compute.devices.delete_volume(ALICE, volume.id)
    with pytest.raises(Conflict, match="still being attached"):
        compute.devices.detach(ALICE, server.uuid, volume.alias)

    compute.servers.start_worker()
    compute.servers.wait(server.uuid, WAIT_S)
    failed = compute.servers.tasks.get(task.id)
    assert failed is not None and failed.state == "failed"
    assert "cannot attach" in (failed.last_error or "")
    assert failed.attempts == 1  # a host's refusal is not retried behind the caller's back
    freed = compute.devices.volume(ALICE, volume.id)
    assert freed.status == "available" and freed.server_uuid is None
    # The server is as it was: a failed attach is no server failure.
    record = compute.servers.get(ALICE, server.uuid)
    assert record.status == "ACTIVE" and record.fault is None


def test_device_changes_run_in_order_with_the_servers_other_tasks(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = _active(compute, kernel_image, settle)
    volume = compute.devices.create_volume(ALICE, "data", 1)
    _queue_only(compute)

    compute.servers.stop(ALICE, server.uuid)
    assert compute.devices.attach_volume(ALICE, server.uuid, volume.id).status == "attaching"
    compute.servers.delete(ALICE, server.uuid)
    kinds = [t.kind for t in compute.servers.tasks.in_flight(server.uuid)]
    assert kinds == ["stop", ATTACH_VOLUME, "delete"]

    compute.servers.start_worker()
    compute.servers.wait(server.uuid, WAIT_S)
    [delete, attach, stop] = compute.servers.tasks.list_tasks(target=server.uuid, limit=3)
    assert (stop.kind, stop.state) == ("stop", "done")
    # The attach ran after the stop and found the server being deleted: refused, undone.
    assert (attach.kind, attach.state) == (ATTACH_VOLUME, "failed")
    assert "can no longer be attached" in (attach.last_error or "")
    assert (delete.kind, delete.state) == ("delete", "done")
    assert compute.servers.get(ALICE, server.uuid).status == "DELETED"
    freed = compute.devices.volume(ALICE, volume.id)
    assert freed.status == "available" and freed.server_uuid is None


def test_an_attach_whose_controller_died_on_its_last_attempt_is_undone(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = _active(compute, kernel_image, settle)
    volume = compute.devices.create_volume(ALICE, "data", 1)
    _queue_only(compute)
    compute.devices.attach_volume(ALICE, server.uuid, volume.id)
    engine = compute.servers.tasks.engine
    dead = TaskQueue(engine, lease_s=DEAD_LEASE_S)
    for attempt in range(1, DEVICE_TASK_ATTEMPTS + 1):  # every controller that claims it dies
        [lease] = dead.claim(f"dead-{attempt}", [ATTACH_VOLUME])
        if attempt < DEVICE_TASK_ATTEMPTS:
            with write_transaction(engine) as conn:  # its lease ran out
                conn.execute(
                    update(TaskRow).where(TaskRow.id == lease.task.id)
                    .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=60))
                )  # fmt: skip
            assert dead.expire_leases() == []  # queued again: attempts are left

    compute.servers.start_worker()  # finds the last claim's lease run out
    compute.servers.wait(server.uuid, WAIT_S)
    [task] = compute.servers.tasks.list_tasks(target=server.uuid, kind=ATTACH_VOLUME)
    assert task.state == "failed" and task.attempts == DEVICE_TASK_ATTEMPTS
    deadline = time.monotonic() + WAIT_S  # undone by the worker that failed it, just after
    while compute.devices.volume(ALICE, volume.id).status != "available":
        assert time.monotonic() < deadline, compute.devices.volume(ALICE, volume.id)
        time.sleep(0.05)
    assert compute.devices.volume(ALICE, volume.id).server_uuid is None
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"


def test_a_volume_left_attaching_without_a_task_is_carried_on_at_restart(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    """Its controller died between failing the task and undoing it: the restart queues
    the attach again (idempotent), here refused by the test driver and undone."""
    server = _active(compute, kernel_image, settle)
    volume = compute.devices.create_volume(ALICE, "data", 1)
    with write_transaction(compute.devices.engine) as conn:
        conn.execute(
            update(VolumeRow)
            .where(VolumeRow.id == volume.id)
            .values(status="attaching", server_uuid=server.uuid)
        )
    notes = compute.servers.recover()
    assert f"volume {volume.id}: attaching server {server.uuid} again after a restart" in notes
    assert compute.servers.recover() == []  # in flight now: not queued twice
    compute.servers.wait(server.uuid, WAIT_S)
    freed = compute.devices.volume(ALICE, volume.id)
    assert freed.status == "available" and freed.server_uuid is None


def test_a_task_error_read_from_the_store_answers_like_the_one_raised() -> None:
    """A request waits in one controller while another ran its task: the error comes
    from the task row, with its type, its admin message and its member message."""
    raised = HostOperationFailed(
        "cannot attach: libvirt said no", public="attaching volume 'v' failed", volume_id="v"
    )
    again = _decoded_error(_encoded_error(raised, undone=True))
    assert isinstance(again, HostOperationFailed)
    assert again.message == raised.message and again.public_message == raised.public_message
    assert again.details == {"volume_id": "v"}
    conflict = _decoded_error(_encoded_error(Conflict("server 's' is gone", x=1), undone=True))
    assert isinstance(conflict, Conflict) and conflict.details == {"x": 1}
    crashed = _decoded_error("the worker of the last allowed attempt stopped renewing its lease")
    assert isinstance(crashed, HostOperationFailed) and "stopped renewing" in crashed.message
