"""Requests racing for one server: exactly one wins each change of status and task.

Run once on SQLite and once on PostgreSQL. The server's lock is held while the
requests race, so no worker runs and what the requests wrote can be checked
before any task starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from compute.principals import ALICE
from wattvisor.auth import Principal
from wattvisor.compute import Compute, Conflict, ImageRecord, ServerRecord
from wattvisor.compute.servers import ServerService

ROUNDS = 8


def _active(compute: Compute, image: ImageRecord, settle: Callable[[str], None]) -> str:
    server = compute.servers.create(ALICE, "racer", "tiny", image.id)
    settle(server.uuid)
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"
    return server.uuid


def _race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once from their own threads; each result or the exception raised."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_deletes_racing_end_deleted_with_no_task_left(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    for _round in range(ROUNDS):
        uuid = _active(compute, kernel_image, settle)
        first, second = _race(
            partial(compute.servers.delete, ALICE, uuid),
            partial(compute.servers.delete, ALICE, uuid),
        )
        for outcome in (first, second):
            if isinstance(outcome, Exception):
                assert isinstance(outcome, Conflict) and "deleted already" in outcome.message
            else:
                assert isinstance(outcome, ServerRecord) and outcome.task == "deleting"
        settle(uuid)
        final = compute.servers.get(ALICE, uuid)
        assert (final.status, final.task) == ("DELETED", None)


def test_stop_racing_delete_never_replaces_the_delete(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    for _round in range(ROUNDS):
        uuid = _active(compute, kernel_image, settle)
        with compute.servers.lock_for(uuid):  # no worker runs until both requests answered
            stopped, deleted = _race(
                partial(compute.servers.stop, ALICE, uuid),
                partial(compute.servers.delete, ALICE, uuid),
            )
            assert isinstance(deleted, ServerRecord), deleted
            if isinstance(stopped, Exception):
                assert isinstance(stopped, Conflict), stopped
            assert compute.servers.get(ALICE, uuid).task == "deleting"
        settle(uuid)
        final = compute.servers.get(ALICE, uuid)
        assert (final.status, final.task) == ("DELETED", None)


def test_a_second_delete_while_one_is_under_way_is_accepted_once(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    uuid = _active(compute, kernel_image, settle)
    with compute.servers.lock_for(uuid):
        first = compute.servers.delete(ALICE, uuid)
        second = compute.servers.delete(ALICE, uuid)
        assert first.task == second.task == "deleting"
    settle(uuid)
    assert compute.servers.get(ALICE, uuid).status == "DELETED"
    with pytest.raises(Conflict, match="deleted already"):
        compute.servers.delete(ALICE, uuid)


class _LateReader(ServerService):
    """A server service whose next read of a server is followed by another request."""

    meanwhile: Callable[[], None] | None = None

    def get(self, principal: Principal, server_id: str) -> ServerRecord:
        record = super().get(principal, server_id)
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return record


@pytest.fixture
def late(compute: Compute) -> _LateReader:
    """The compute's server service, able to slip a request in after a read."""
    compute.servers.__class__ = _LateReader
    return compute.servers  # type: ignore[return-value]


def test_stop_that_read_before_a_delete_landed_is_refused(
    compute: Compute,
    late: _LateReader,
    kernel_image: ImageRecord,
    settle: Callable[[str], None],
) -> None:
    uuid = _active(compute, kernel_image, settle)
    with late.lock_for(uuid):

        def delete() -> None:
            late.delete(ALICE, uuid)

        late.meanwhile = delete
        with pytest.raises(Conflict, match="deleting"):
            late.stop(ALICE, uuid)
        # What a restart would find now: the delete, to be run again.
        assert late.get(ALICE, uuid).task == "deleting"
    settle(uuid)
    assert late.get(ALICE, uuid).status == "DELETED"


def test_delete_that_read_before_another_delete_finished_leaves_no_task(
    compute: Compute,
    late: _LateReader,
    kernel_image: ImageRecord,
    settle: Callable[[str], None],
) -> None:
    uuid = _active(compute, kernel_image, settle)

    def delete_to_the_end() -> None:
        late.delete(ALICE, uuid)
        settle(uuid)

    late.meanwhile = delete_to_the_end
    with pytest.raises(Conflict, match="deleted already"):
        late.delete(ALICE, uuid)
    final = late.get(ALICE, uuid)
    assert (final.status, final.task) == ("DELETED", None)


def test_server_locks_and_tasks_are_dropped_after_delete(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    """A long-running service must not keep a lock (or a task) per server ever created."""
    for _round in range(5):
        uuid = _active(compute, kernel_image, settle)
        compute.servers.stop(ALICE, uuid)
        settle(uuid)
        compute.servers.delete(ALICE, uuid)
        settle(uuid)
    assert compute.servers.locks_in_use == 0
    assert compute.servers.pending_tasks == 0
