"""The durable task queue on SQLite and PostgreSQL: atomic enqueue, dedupe, leases,
bounded retries, one task at a time per target, and workers that run every task once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine

from wattvisor.compute.tasks import (
    Lease,
    LeaseLost,
    PermanentFailure,
    TaskError,
    TaskQueue,
    TaskRecord,
    TaskWorker,
)
from wattvisor.store import make_engine, write_transaction

WAIT_S = 60.0


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    engine = make_engine(store_url)
    yield engine
    engine.dispose()


def _enqueue(queue: TaskQueue, kind: str, targets: list[str], **kwargs: object) -> list[int]:
    with write_transaction(queue.engine) as conn:
        return [queue.enqueue(conn, kind, t, **kwargs).task.id for t in targets]  # type: ignore[arg-type]


def _until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


def _settled(queue: TaskQueue) -> bool:
    counts = queue.counts()
    return counts["queued"] + counts["running"] == 0


def test_a_task_enqueued_in_a_rolled_back_transaction_does_not_exist(engine: Engine) -> None:
    queue = TaskQueue(engine)
    with pytest.raises(RuntimeError, match="server row failed"), write_transaction(engine) as conn:
        queue.enqueue(conn, "build", "server-1", {"flavor": "tiny"})
        raise RuntimeError("server row failed")
    assert queue.list_tasks() == []
    assert queue.claim("w", ["build"], 10) == []


def test_a_repeated_request_gets_the_task_already_in_flight(engine: Engine) -> None:
    queue = TaskQueue(engine)
    with write_transaction(engine) as conn:
        first = queue.enqueue(conn, "attach", "server-1", {"volume": "v1"}, key="v1")
    with write_transaction(engine) as conn:
        again = queue.enqueue(conn, "attach", "server-1", {"volume": "v1"}, key="v1")
        other_key = queue.enqueue(conn, "attach", "server-1", {"volume": "v2"}, key="v2")
        other_kind = queue.enqueue(conn, "detach", "server-1", key="v1")
    assert first.created and not again.created
    assert again.task.id == first.task.id
    assert other_key.created and other_kind.created
    assert len(queue.list_tasks()) == 3

    # Once the task is settled, the same request queues a new one.
    (lease,) = queue.claim("w", ["attach"], 1)
    queue.complete(lease)
    with write_transaction(engine) as conn:
        later = queue.enqueue(conn, "attach", "server-1", key="v1")
    assert later.created and later.task.id != first.task.id


def test_a_request_racing_itself_queues_one_task(engine: Engine) -> None:
    queue = TaskQueue(engine)
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def request() -> None:
        try:
            barrier.wait(10)
            with write_transaction(engine) as conn:
                results.append(queue.enqueue(conn, "delete", "server-1").task.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert errors == []
    assert len(results) == 8 and len(set(results)) == 1
    assert len(queue.list_tasks()) == 1


def test_bad_task_requests_are_refused_naming_the_value(engine: Engine) -> None:
    queue = TaskQueue(engine)
    cases: list[tuple[dict[str, object], str]] = [
        ({"kind": ""}, "kind ''"),
        ({"kind": "k" * 33}, "kind 'kkk"),
        ({"target": "t\n"}, "target 't\\\\n'"),
        ({"max_attempts": 0}, "max_attempts 0"),
        ({"delay_s": -1.0}, "delay_s -1.0"),
    ]
    for change, message in cases:
        args: dict[str, object] = {"kind": "build", "target": "s", **change}
        with pytest.raises(TaskError, match=message), write_transaction(engine) as conn:
            queue.enqueue(
                conn,
                args.pop("kind"),  # type: ignore[arg-type]
                args.pop("target"),  # type: ignore[arg-type]
                **args,  # type: ignore[arg-type]
            )
    with pytest.raises(TaskError, match="'paused'"):
        queue.list_tasks(state="paused")
    assert queue.list_tasks() == []


def test_an_expired_lease_passes_the_task_on_and_the_old_holder_cannot_settle_it(
    engine: Engine,
) -> None:
    queue = TaskQueue(engine, lease_s=0.3)
    (task_id,) = _enqueue(queue, "build", ["server-1"])
    (first,) = queue.claim("controller-a", ["build"], 1)
    assert first.attempt == 1

    taken: list[Lease] = []

    def take_over() -> bool:
        queue.expire_leases()
        taken.extend(queue.claim("controller-b", ["build"], 1))
        return bool(taken)

    _until(take_over, "controller-b to take over the expired lease")
    (second,) = taken
    assert second.task.id == task_id and second.attempt == 2

    assert queue.renew([first]) == [first] and first.lost
    with pytest.raises(LeaseLost, match="controller-a"):
        queue.complete(first)
    with pytest.raises(LeaseLost):
        queue.fail(first, "late")
    done = queue.complete(second)
    assert (done.state, done.claimed_by, done.attempts) == ("done", "controller-b", 2)


def test_a_held_lease_is_not_taken_and_renewing_extends_it(engine: Engine) -> None:
    queue = TaskQueue(engine, lease_s=60)
    _enqueue(queue, "build", ["server-1"])
    (lease,) = queue.claim("controller-a", ["build"], 1)
    assert queue.claim("controller-b", ["build"], 1) == []
    before = lease.expires_at
    assert before is not None
    time.sleep(0.01)
    assert queue.renew([lease]) == []
    stored = queue.get(lease.task.id)
    assert stored is not None and stored.lease_expires_at is not None
    assert stored.lease_expires_at > before and not lease.lost


def test_retries_stop_at_the_limit_with_the_last_error_recorded(engine: Engine) -> None:
    queue = TaskQueue(engine, backoff_s=0.0, max_backoff_s=0.0)
    calls: list[int] = []
    gave_up: list[TaskRecord] = []

    def broken(lease: Lease) -> None:
        calls.append(lease.attempt)
        raise RuntimeError(f"host refused (attempt {lease.attempt})")

    with write_transaction(engine) as conn:
        task = queue.enqueue(conn, "build", "server-1", max_attempts=3).task
    worker = TaskWorker(queue, {"build": broken}, on_failed=gave_up.append)
    assert worker.run_until_idle() == 3
    failed = queue.get(task.id)
    assert failed is not None
    assert (failed.state, failed.attempts) == ("failed", 3)
    assert failed.last_error == "RuntimeError: host refused (attempt 3)"
    assert calls == [1, 2, 3]
    assert [t.id for t in gave_up] == [task.id]


def test_a_retry_waits_for_its_backoff(engine: Engine) -> None:
    queue = TaskQueue(engine, backoff_s=3600.0, max_backoff_s=3600.0)
    _enqueue(queue, "build", ["server-1"])
    (lease,) = queue.claim("w", ["build"], 1)
    retried = queue.fail(lease, "host busy")
    assert retried.state == "queued" and retried.last_error == "host busy"
    assert retried.run_after > retried.updated_at
    assert queue.claim("w", ["build"], 1) == []


def test_a_permanent_failure_is_not_retried(engine: Engine) -> None:
    queue = TaskQueue(engine, backoff_s=0.0)

    def no_host(lease: Lease) -> None:
        raise PermanentFailure("no valid host")

    (task_id,) = _enqueue(queue, "build", ["server-1"])
    worker = TaskWorker(queue, {"build": no_host})
    assert worker.run_until_idle() == 1
    failed = queue.get(task_id)
    assert failed is not None
    assert (failed.state, failed.attempts, failed.last_error) == ("failed", 1, "no valid host")


def test_the_last_attempt_of_a_dead_worker_fails_the_task(engine: Engine) -> None:
    queue = TaskQueue(engine, lease_s=0.2)
    with write_transaction(engine) as conn:
        task = queue.enqueue(conn, "build", "server-1", max_attempts=1).task
    (_lease,) = queue.claim("dies", ["build"], 1)  # and never renews nor settles
    reaped: list[TaskRecord] = []
    _until(lambda: bool(reaped.extend(queue.expire_leases()) or reaped), "the task to be reaped")
    assert [t.id for t in reaped] == [task.id]
    assert reaped[0].state == "failed" and "stopped renewing" in (reaped[0].last_error or "")
    assert queue.claim("other", ["build"], 1) == []


def test_a_handler_may_settle_its_task_in_its_own_transaction(engine: Engine) -> None:
    queue = TaskQueue(engine)

    def build(lease: Lease) -> None:
        with write_transaction(engine) as conn:
            queue.enqueue(conn, "notify", lease.task.target)
            queue.complete(lease, conn)

    (task_id,) = _enqueue(queue, "build", ["server-1"])
    assert TaskWorker(queue, {"build": build}).run_until_idle() == 1
    done = queue.get(task_id)
    assert done is not None and done.state == "done"
    assert [t.kind for t in queue.in_flight("server-1")] == ["notify"]


def test_a_handler_whose_own_transaction_rolled_back_has_its_task_retried(
    engine: Engine,
) -> None:
    queue = TaskQueue(engine, backoff_s=0.0, max_backoff_s=0.0)

    def build(lease: Lease) -> None:
        with write_transaction(engine) as conn:
            queue.complete(lease, conn)
            if lease.attempt == 1:
                raise RuntimeError("the server row could not be written")

    (task_id,) = _enqueue(queue, "build", ["server-1"])
    assert TaskWorker(queue, {"build": build}).run_until_idle() == 2
    done = queue.get(task_id)
    assert done is not None
    assert (done.state, done.attempts) == ("done", 2)
    assert done.last_error == "RuntimeError: the server row could not be written"


def test_two_workers_run_each_of_100_tasks_exactly_once(store_url: str) -> None:
    engines = [make_engine(store_url) for _ in range(2)]
    queues = [TaskQueue(e, lease_s=30) for e in engines]
    ran: Counter[int] = Counter()
    by_worker: Counter[str] = Counter()
    guard = threading.Lock()

    def handler(name: str) -> Callable[[Lease], None]:
        def run(lease: Lease) -> None:
            with guard:
                ran[lease.task.id] += 1
                by_worker[name] += 1

        return run

    ids = _enqueue(queues[0], "build", [f"server-{n}" for n in range(100)])
    workers = [
        TaskWorker(q, {"build": handler(f"w{i}")}, concurrency=4, poll_s=0.05)
        for i, q in enumerate(queues)
    ]
    try:
        for w in workers:
            w.start()
        _until(lambda: _settled(queues[0]), "every task to settle")
    finally:
        leftovers = [w.stop(WAIT_S) for w in workers]
        for e in engines:
            e.dispose()
    assert leftovers == [[], []]
    assert sorted(ran) == sorted(ids)
    assert set(ran.values()) == {1}
    assert sum(by_worker.values()) == 100


def test_tasks_of_one_target_run_one_at_a_time_in_queue_order(engine: Engine) -> None:
    queue = TaskQueue(engine)
    running: Counter[str] = Counter()
    overlaps: list[str] = []
    order: dict[str, list[int]] = {}
    guard = threading.Lock()

    def run(lease: Lease) -> None:
        target = lease.task.target
        with guard:
            running[target] += 1
            if running[target] > 1:
                overlaps.append(target)
            order.setdefault(target, []).append(lease.task.payload["step"])
        time.sleep(0.005)
        with guard:
            running[target] -= 1

    with write_transaction(engine) as conn:
        for step in range(6):
            for n in range(4):
                queue.enqueue(conn, "power", f"server-{n}", {"step": step}, key=str(step))
    workers = [TaskWorker(queue, {"power": run}, concurrency=4, poll_s=0.02) for _ in range(2)]
    try:
        for w in workers:
            w.start()
        for n in range(4):
            queue.wait_for_target(f"server-{n}", WAIT_S)
    finally:
        for w in workers:
            w.stop(WAIT_S)
    assert _settled(queue)
    assert overlaps == []
    assert order == {f"server-{n}": list(range(6)) for n in range(4)}


def test_stop_lets_running_tasks_finish_and_claims_no_more(engine: Engine) -> None:
    queue = TaskQueue(engine)
    started = threading.Event()
    release = threading.Event()

    def slow(lease: Lease) -> None:
        started.set()
        assert release.wait(WAIT_S)

    first, second = _enqueue(queue, "build", ["server-1", "server-2"])
    with pytest.raises(TimeoutError, match=r"server-1 still has build \(queued\)"):
        queue.wait_for_target("server-1", 0.0)
    worker = TaskWorker(queue, {"build": slow}, concurrency=1, poll_s=0.02)
    worker.start()
    assert started.wait(WAIT_S)
    threading.Timer(0.2, release.set).start()
    assert worker.stop(WAIT_S) == []
    states = {t.id: t.state for t in queue.list_tasks()}
    assert states == {first: "done", second: "queued"}
