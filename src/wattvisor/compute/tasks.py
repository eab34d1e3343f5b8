"""The durable task queue: work lives in the store, not in a controller's memory.

A request becomes a task row in the same transaction as the change it asks for
(the server row and its build task commit together, or neither does), so a
controller that dies, or restarts, loses nothing: any controller sharing the store
claims the task and does it. There is no broker and no lock service of our own:

- **Claiming** is one statement. On PostgreSQL it picks the next claimable rows
  ``FOR UPDATE SKIP LOCKED``, so any number of controllers take disjoint tasks without
  waiting for each other; on SQLite (``wattvisor up``: one process) the write
  transaction's ``BEGIN IMMEDIATE`` already serialises claimers.
- **A claim is a lease.** The worker renews it while the task runs; a task whose lease
  ran out (its controller died or lost the store) is queued again by whichever worker
  looks next (:meth:`TaskQueue.expire_leases`). ``attempts`` counts claims and
  ``(id, attempts)`` names one claim, so a worker that was taken over can no longer
  complete, fail or renew the task (:class:`LeaseLost`).
- **One target at a time.** A target's tasks (a server's build, then its delete) run
  one after the other in the order they were queued, whichever controllers run them:
  only the first unsettled task of a target is ``ready``, and whoever settles it makes
  the next one ready. Enqueuing and settling hold a PostgreSQL advisory lock on the
  target for their transaction, so they agree on who is first.
- **Retries** are bounded (``max_attempts``) with exponential backoff; the last error
  stays on the row for operators.

A lease expiring while its worker still runs (a stalled controller) would let two
workers run one task, so handlers must be idempotent: every host call is idempotent
per server uuid, and a handler reads the state it acts on from the store first.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, func, insert, select, text, update

from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.duties import advisory_key
from wattvisor.store.task_tables import (
    CLAIMABLE_SQL,
    IN_FLIGHT,
    IN_FLIGHT_SQL,
    RUNNING_SQL,
    TaskRow,
)

log = logging.getLogger(__name__)

_tasks = cast(Table, TaskRow.__table__)

STATES = ("queued", "running", "done", "failed")
MAX_ERROR_CHARS = 4000
MAX_KIND_CHARS = 32
MAX_TARGET_CHARS = 64
MAX_KEY_CHARS = 128


class TaskError(Exception):
    """A task request that cannot be accepted; the message names the value."""


class LeaseLost(Exception):
    """This worker's claim on a task ended (its lease ran out and another worker took the
    task, or an operator settled it): the worker must not write the task's outcome."""

    def __init__(self, task_id: int, worker_id: str, attempt: int) -> None:
        super().__init__(
            f"task {task_id}: attempt {attempt} by worker {worker_id!r} no longer holds the task"
        )
        self.task_id = task_id


class PermanentFailure(Exception):
    """Raised by a handler for a failure that a retry cannot fix: the task fails now."""


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task as the store holds it."""

    id: int
    kind: str
    target: str
    key: str
    payload: Mapping[str, Any]
    state: str
    ready: bool
    """First in line for its target (only such a task is claimed)."""
    attempts: int
    max_attempts: int
    run_after: datetime
    claimed_by: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The task a request is served by; ``created`` is False when the same task
    (kind, target and key) was in flight already and nothing new was queued."""

    task: TaskRecord
    created: bool


class Lease:
    """One worker's claim on one task: attempt ``attempt`` of ``task``.

    The holder renews it (:meth:`TaskQueue.renew`; :class:`TaskWorker` does so in the
    background) and settles it once with :meth:`TaskQueue.complete` or
    :meth:`TaskQueue.fail`. A handler running long may look at :attr:`lost` between
    steps and stop early: another worker owns the task then.
    """

    __slots__ = ("_lost", "_settling", "attempt", "expires_at", "settled", "task", "worker_id")

    def __init__(self, task: TaskRecord, worker_id: str) -> None:
        self.task = task
        self.worker_id = worker_id
        self.attempt = task.attempts
        self.expires_at = task.lease_expires_at
        self.settled = False
        """True once this worker's outcome for the task is committed."""
        self._settling = False  # an outcome is being written (maybe in a caller's transaction)
        self._lost = threading.Event()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def __repr__(self) -> str:
        return f"Lease(task={self.task.id}, kind={self.task.kind!r}, attempt={self.attempt})"


def default_worker_id() -> str:
    """A name no other worker has: host name, process id and a random suffix (a restarted
    controller must not pass for the one that died)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuidlib.uuid4().hex[:8]}"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _record(row: Any) -> TaskRecord:
    return TaskRecord(
        id=int(row.id), kind=row.kind, target=row.target, key=row.idempotency_key,
        payload=dict(row.payload), state=row.state, ready=bool(row.ready), attempts=row.attempts,
        max_attempts=row.max_attempts, run_after=_utc(row.run_after),
        claimed_by=row.claimed_by,
        lease_expires_at=None if row.lease_expires_at is None else _utc(row.lease_expires_at),
        last_error=row.last_error, created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )  # fmt: skip


def _store_now(conn: Connection) -> Any:
    """The time every controller agrees on: on PostgreSQL the database server's clock
    (controllers' clocks may differ, and leases compare across them), read in the
    statement itself, which costs no round trip (the statement's start rather than the
    transaction's: a handler's transaction may be long); on SQLite, one machine's clock
    is the only one there is. Either may be compared and added to a ``timedelta``."""
    if conn.dialect.name == "postgresql":
        return func.statement_timestamp()
    return datetime.now(UTC)


def _check_name(what: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise TaskError(f"task {what} {value!r} must be a string of 1-{limit} characters")
    if not value.isprintable():
        raise TaskError(f"task {what} {value!r} must be printable characters only")
    return value


class TaskQueue:
    """Enqueue, claim, renew and settle tasks in the store at ``engine``.

    ``lease_s`` is how long a claim lasts without renewal, and so how long a dead
    controller's task waits before another one takes it. A retried task waits
    ``backoff_s * 2**(attempt - 1)``, at most ``max_backoff_s``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        lease_s: float = 30.0,
        backoff_s: float = 2.0,
        max_backoff_s: float = 300.0,
    ) -> None:
        if lease_s <= 0 or backoff_s < 0 or max_backoff_s < backoff_s:
            raise TaskError(
                f"lease_s={lease_s!r} must be > 0 and 0 <= backoff_s={backoff_s!r} <= "
                f"max_backoff_s={max_backoff_s!r}"
            )
        self.engine = engine
        self.lease_s = lease_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    # ---------------------------------------------------------------- enqueue

    @staticmethod
    def enqueue(
        conn: Connection,
        kind: str,
        target: str,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str = "",
        max_attempts: int = 5,
        delay_s: float = 0.0,
    ) -> Enqueued:
        """Queue a task in the caller's write transaction (it exists only if that commits).

        While a task of the same ``kind``, ``target`` and ``key`` is queued or running, a
        repeated request gets that task back (``created=False``) instead of a second one:
        the default key "" allows one in-flight task per kind and target; give a key
        (a volume id for an attach) where several may be in flight.
        """
        _check_name("kind", kind, MAX_KIND_CHARS)
        _check_name("target", target, MAX_TARGET_CHARS)
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
            raise TaskError(f"task key {key!r} must be a string of at most {MAX_KEY_CHARS}")
        if not isinstance(max_attempts, int) or not 1 <= max_attempts <= 100:
            raise TaskError(f"max_attempts {max_attempts!r} must be an integer from 1 to 100")
        if not 0 <= delay_s <= 86_400:
            raise TaskError(f"delay_s {delay_s!r} must be from 0 to 86400")
        _lock_target(conn, target)
        row = conn.execute(
            select(_tasks).where(
                (_tasks.c.kind == kind)
                & (_tasks.c.target == target)
                & (_tasks.c.idempotency_key == key)
                & _tasks.c.state.in_(IN_FLIGHT)
            )
        ).first()
        if row is not None:
            return Enqueued(_record(row), created=False)
        first_in_line = _head_of(conn, target) is None
        now = _store_now(conn)
        row = conn.execute(
            insert(_tasks)
            .values(
                kind=kind,
                target=target,
                idempotency_key=key,
                payload=dict(payload or {}),
                state="queued",
                ready=first_in_line,
                attempts=0,
                max_attempts=max_attempts,
                run_after=now + timedelta(seconds=delay_s),
                claimed_by=None,
                lease_expires_at=None,
                last_error=None,
                created_at=now,
                updated_at=now,
            )
            .returning(*_tasks.c)
        ).one()
        return Enqueued(_record(row), created=True)

    # ------------------------------------------------------------------ claim

    def claim(self, worker_id: str, kinds: Iterable[str], limit: int = 1) -> list[Lease]:
        """Claim up to ``limit`` queued, due tasks of ``kinds`` for ``worker_id``, oldest
        first; a task behind an earlier unsettled one of its target is not ready yet.

        A task whose lease ran out is queued again by :meth:`expire_leases`, which a
        :class:`TaskWorker` runs before every claim.
        """
        wanted = sorted(set(kinds))
        if limit < 1 or not wanted:
            return []
        with write_transaction(self.engine) as conn:
            now = _store_now(conn)
            # One statement: the rows are locked as they are picked (SKIP LOCKED: those
            # another claimer holds are passed over, not waited for) and taken at once.
            claimable = (
                select(_tasks.c.id)
                .where(
                    text(CLAIMABLE_SQL) & (_tasks.c.run_after <= now) & _tasks.c.kind.in_(wanted)
                )
                .order_by(_tasks.c.run_after, _tasks.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = conn.execute(
                update(_tasks)
                .where(_tasks.c.id.in_(claimable.scalar_subquery()))
                .values(
                    state="running",
                    claimed_by=worker_id,
                    attempts=_tasks.c.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=self.lease_s),
                    updated_at=now,
                )
                .returning(*_tasks.c)
            ).all()
        leases = [Lease(_record(row), worker_id) for row in rows]
        leases.sort(key=lambda lease: (lease.task.run_after, lease.task.id))
        return leases

    def expire_leases(self, kinds: Iterable[str] | None = None) -> list[TaskRecord]:
        """Settle the running tasks whose lease ran out (their worker died, stalled or
        lost the store): queued again at once while attempts are left, else failed (a
        task that kills its controller every time must not go round for ever).

        Returns the tasks failed here; their old worker can no longer settle them.
        """
        with write_transaction(self.engine) as conn:
            now = _store_now(conn)
            condition = text(RUNNING_SQL) & (_tasks.c.lease_expires_at < now)
            if kinds is not None:
                condition = condition & _tasks.c.kind.in_(sorted(set(kinds)))
            targets = conn.execute(select(_tasks.c.target).where(condition)).scalars().all()
            if not targets:
                return []
            for target in sorted(set(targets)):  # one order everywhere: no deadlock
                _lock_target(conn, target)
            expired = conn.execute(
                select(_tasks.c.id, _tasks.c.target, _tasks.c.attempts, _tasks.c.max_attempts)
                .where(condition)
                .with_for_update(skip_locked=True)
            ).all()
            again = [row.id for row in expired if row.attempts < row.max_attempts]
            last = [row.id for row in expired if row.attempts >= row.max_attempts]
            if again:
                conn.execute(
                    update(_tasks)
                    .where(_tasks.c.id.in_(again))
                    .values(
                        state="queued",
                        claimed_by=None,
                        lease_expires_at=None,
                        updated_at=now,
                        last_error="the lease of the previous attempt ran out (its worker "
                        "died, stalled or lost the store)",
                    )
                )
            if not last:
                return []
            rows = conn.execute(
                update(_tasks)
                .where(_tasks.c.id.in_(last))
                .values(
                    state="failed",
                    lease_expires_at=None,
                    updated_at=now,
                    last_error="the worker of the last allowed attempt stopped renewing its "
                    "lease (it died, stalled or lost the store)",
                )
                .returning(*_tasks.c)
            ).all()
            for target in sorted({row.target for row in rows}):
                _ready_next(conn, target)
        return [_record(row) for row in rows]

    # ------------------------------------------------------------ the holder

    def renew(self, leases: Sequence[Lease]) -> list[Lease]:
        """Extend every lease by ``lease_s``; returns those that were lost meanwhile
        (and marks them :attr:`Lease.lost`)."""
        live = [lease for lease in leases if not (lease.settled or lease._settling or lease.lost)]
        if not live:
            return []
        lost = []
        with write_transaction(self.engine) as conn:
            expires = _store_now(conn) + timedelta(seconds=self.lease_s)
            for lease in live:
                renewed = conn.execute(
                    update(_tasks)
                    .where(_held_by(lease))
                    .values(lease_expires_at=expires)
                    .returning(_tasks.c.lease_expires_at)
                ).scalar_one_or_none()
                if renewed is None:
                    lost.append(lease)
                else:
                    lease.expires_at = _utc(renewed)
        lost = [lease for lease in lost if not (lease.settled or lease._settling)]
        for lease in lost:
            lease._lost.set()
        return lost

    def complete(self, lease: Lease, conn: Connection | None = None) -> TaskRecord:
        """Mark the task done. Pass the handler's own write transaction as ``conn`` to
        commit the task's outcome and its completion together. Raises :class:`LeaseLost`
        when this claim no longer holds the task."""
        return self._settle(lease, conn, state="done", lease_expires_at=None)

    def fail(
        self, lease: Lease, error: str, *, retry: bool = True, conn: Connection | None = None
    ) -> TaskRecord:
        """Record ``error``; queue the task again after a backoff while attempts are left
        and ``retry`` is True, else fail it for good."""
        error = (error or "failed without a message")[:MAX_ERROR_CHARS]
        if retry and lease.attempt < lease.task.max_attempts:
            delay = min(self.backoff_s * 2 ** (lease.attempt - 1), self.max_backoff_s)
            return self._settle(
                lease, conn, state="queued", claimed_by=None, lease_expires_at=None,
                last_error=error, run_after=timedelta(seconds=delay),
            )  # fmt: skip
        return self._settle(lease, conn, state="failed", lease_expires_at=None, last_error=error)

    def release(self, lease: Lease) -> TaskRecord:
        """Give the task back untried (a worker stopping before it began): queued again
        at once, and this attempt does not count."""
        return self._settle(
            lease, None, state="queued", claimed_by=None, lease_expires_at=None,
            attempts=_tasks.c.attempts - 1,
        )  # fmt: skip

    def _settle(self, lease: Lease, conn: Connection | None, **values: Any) -> TaskRecord:
        if lease.settled:
            raise LeaseLost(lease.task.id, lease.worker_id, lease.attempt)
        lease._settling = True
        if conn is not None:
            # Settled when the caller's transaction commits; the worker trusts it does
            # once the handler returns.
            return _record(self._settle_in(conn, lease, values))
        try:
            with write_transaction(self.engine) as own:
                row = self._settle_in(own, lease, values)
        except LeaseLost:
            raise
        except BaseException:
            lease._settling = False  # nothing was written: the lease is still ours to renew
            raise
        lease.settled = True
        return _record(row)

    @staticmethod
    def _settle_in(conn: Connection, lease: Lease, values: dict[str, Any]) -> Any:
        settles = values["state"] in ("done", "failed")
        if settles:
            _lock_target(conn, lease.task.target)
        now = _store_now(conn)
        delay = values.pop("run_after", None)
        if delay is not None:
            values["run_after"] = now + delay
        row = conn.execute(
            update(_tasks)
            .where(_held_by(lease))
            .values(updated_at=now, **values)
            .returning(*_tasks.c)
        ).first()
        if row is None:
            lease._lost.set()
            raise LeaseLost(lease.task.id, lease.worker_id, lease.attempt)
        if settles:
            _ready_next(conn, lease.task.target)
        return row

    # ------------------------------------------------------------- operators

    def get(self, task_id: int) -> TaskRecord | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(_tasks).where(_tasks.c.id == task_id)).first()
        return None if row is None else _record(row)

    def list_tasks(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        target: str | None = None,
        limit: int = 100,
    ) -> list[TaskRecord]:
        """Tasks newest first, optionally of one state, kind and/or target."""
        if state is not None and state not in STATES:
            raise TaskError(f"task state {state!r} is not one of {', '.join(STATES)}")
        if not 1 <= limit <= 10_000:
            raise TaskError(f"limit {limit!r} must be from 1 to 10000")
        query = select(_tasks).order_by(_tasks.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(_tasks.c.state == state)
        if kind is not None:
            query = query.where(_tasks.c.kind == kind)
        if target is not None:
            query = query.where(_tasks.c.target == target)
        with read_transaction(self.engine) as conn:
            return [_record(row) for row in conn.execute(query)]

    def counts(self) -> dict[str, int]:
        """How many tasks are in each state."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(select(_tasks.c.state, func.count()).group_by(_tasks.c.state)).all()
        found = {state: int(count) for state, count in rows}
        return {state: found.get(state, 0) for state in STATES}

    def in_flight(self, target: str) -> list[TaskRecord]:
        """The target's unsettled tasks, oldest first (the one running comes first)."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(_tasks)
                .where((_tasks.c.target == target) & _tasks.c.state.in_(IN_FLIGHT))
                .order_by(_tasks.c.id)
            ).all()
        return [_record(row) for row in rows]

    def wait(self, task_id: int, timeout_s: float, poll_s: float = 0.05) -> TaskRecord:
        """The task once it is done or failed; TimeoutError naming it after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            task = self.get(task_id)
            if task is None:
                raise TaskError(f"task {task_id!r} does not exist")
            if task.state not in IN_FLIGHT:
                return task
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} is still {task.state} after {timeout_s} s")
            time.sleep(poll_s)

    def wait_for_target(self, target: str, timeout_s: float, poll_s: float = 0.05) -> None:
        """Return once ``target`` has no unsettled task; TimeoutError naming what is still
        in flight after ``timeout_s`` (for ``wait_s`` in the API, the CLI and tests)."""
        deadline = time.monotonic() + timeout_s
        while pending := self.in_flight(target):
            if time.monotonic() >= deadline:
                doing = ", ".join(f"{t.kind} ({t.state})" for t in pending)
                raise TimeoutError(f"{target} still has {doing} after {timeout_s} s")
            time.sleep(poll_s)

    def prune(self, older_than_s: float) -> int:
        """Delete settled tasks last changed more than ``older_than_s`` ago; returns how many."""
        from sqlalchemy import delete

        with write_transaction(self.engine) as conn:
            cutoff = _store_now(conn) - timedelta(seconds=older_than_s)
            removed = conn.execute(
                delete(_tasks).where(
                    _tasks.c.state.in_(("done", "failed")) & (_tasks.c.updated_at < cutoff)
                )
            ).rowcount
        return int(removed)


def _lock_target(conn: Connection, target: str) -> None:
    """Serialise, until the transaction ends, every change to which of ``target``'s tasks
    is first in line (enqueue, and settling one for good). PostgreSQL's transaction-scoped
    advisory lock does it without a row to lock; SQLite's writers are serialised already.
    Always taken before any task row, so it cannot deadlock with a row lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(target, "task-target")}
        )


def _head_of(conn: Connection, target: str) -> int | None:
    """The id of ``target``'s oldest unsettled task (the caller holds the target lock)."""
    head = conn.execute(
        select(func.min(_tasks.c.id)).where((_tasks.c.target == target) & text(IN_FLIGHT_SQL))
    ).scalar_one_or_none()
    return None if head is None else int(head)


def _ready_next(conn: Connection, target: str) -> None:
    """After a task of ``target`` settled: the next one in line may be claimed."""
    line = _tasks.alias("line")
    head = select(func.min(line.c.id)).where(
        (line.c.target == target) & text("line.state IN ('queued', 'running')")
    )
    conn.execute(
        update(_tasks)
        .where((_tasks.c.id == head.scalar_subquery()) & ~_tasks.c.ready)
        .values(ready=True)
    )


def _held_by(lease: Lease) -> Any:
    """The claim ``lease`` made is still the task's current one."""
    return (
        (_tasks.c.id == lease.task.id)
        & (_tasks.c.state == "running")
        & (_tasks.c.claimed_by == lease.worker_id)
        & (_tasks.c.attempts == lease.attempt)
    )


Handler = Callable[[Lease], None]
"""Does one task. Must be idempotent: it may run again after a crash, or (rarely, a
stalled worker whose lease ran out) twice. Returning completes the task unless the
handler settled it itself; raising fails the attempt (:class:`PermanentFailure`: no retry)."""


class TaskWorker:
    """Runs tasks of the kinds in ``handlers`` on up to ``concurrency`` threads.

    One dispatcher thread claims as many tasks as there are free threads, one heartbeat
    thread renews the leases of the running ones every third of ``lease_s``. Tasks
    enqueued by this process start at once after :meth:`notify`; others are found
    within ``poll_s``. ``on_failed`` hears of every task that failed for good, also of
    one whose worker died on its last attempt.
    """

    def __init__(
        self,
        queue: TaskQueue,
        handlers: Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        concurrency: int = 4,
        poll_s: float = 1.0,
        on_failed: Callable[[TaskRecord], None] | None = None,
        name: str = "wattvisor-tasks",
    ) -> None:
        if not handlers:
            raise TaskError("a task worker needs at least one handler")
        if not 1 <= concurrency <= 256:
            raise TaskError(f"concurrency {concurrency!r} must be from 1 to 256")
        if poll_s <= 0:
            raise TaskError(f"poll_s {poll_s!r} must be > 0")
        self.queue = queue
        self.handlers = dict(handlers)
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.on_failed = on_failed
        self.name = name
        self._active: dict[int, tuple[Lease, threading.Thread]] = {}
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._beat = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_expiry = float("-inf")

    @property
    def running(self) -> int:
        """How many tasks this worker runs now."""
        with self._guard:
            return len(self._active)

    def leases(self) -> list[Lease]:
        with self._guard:
            return [lease for lease, _thread in self._active.values()]

    def start(self) -> None:
        if self._threads:
            return
        self._stopping.clear()
        for target, suffix in ((self._dispatch, "claim"), (self._heartbeat, "lease")):
            thread = threading.Thread(target=target, name=f"{self.name}-{suffix}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def notify(self) -> None:
        """Look for work now (a task was just enqueued in this process)."""
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> list[Lease]:
        """Claim nothing more and wait up to ``timeout_s`` for the running tasks.

        Returns the leases of tasks still running then: they stay claimed and renewed
        while they run here, so another worker takes them over only once this process is
        gone and their lease has run out.
        """
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        dispatcher = self._threads[0] if self._threads else None
        if dispatcher is not None:
            dispatcher.join(max(0.0, deadline - time.monotonic()))
        with self._guard:
            running = [thread for _lease, thread in self._active.values()]
        for thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._beat.set()
        if not self.running:
            for thread in self._threads[1:]:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        return self.leases()

    def run_until_idle(self, timeout_s: float = 60.0) -> int:
        """Claim and run tasks on this thread until none is runnable; returns how many ran.

        For the CLI and tests; a controller uses :meth:`start`.
        """
        deadline = time.monotonic() + timeout_s
        ran = 0
        while time.monotonic() < deadline:
            for task in self.queue.expire_leases(self.handlers):
                self._failed(task)
            leases = self.queue.claim(self.worker_id, self.handlers, 1)
            if not leases:
                break
            self._run(leases[0])
            ran += 1
        return ran

    # ---------------------------------------------------------------- threads

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            claimed = 0
            free = self.concurrency - self.running
            if free > 0:
                try:
                    self._expire()
                    leases = self.queue.claim(self.worker_id, self.handlers, free)
                except Exception:
                    log.exception("claiming tasks failed; trying again in %s s", self.poll_s)
                    leases = []
                for lease in leases:
                    if self._stopping.is_set():
                        self._release(lease)
                        continue
                    self._launch(lease)
                claimed = len(leases)
            if claimed == 0 or claimed < free:
                self._wake.wait(self.poll_s)

    def _expire(self) -> None:
        """Requeue or fail the tasks of dead workers, a few times per lease period."""
        now = time.monotonic()
        if now - self._last_expiry < self.queue.lease_s / 4:
            return
        self._last_expiry = now
        for task in self.queue.expire_leases(self.handlers):
            log.warning("task %s (%s of %s) failed: %s", task.id, task.kind, task.target,
                        task.last_error)  # fmt: skip
            self._failed(task)

    def _launch(self, lease: Lease) -> None:
        thread = threading.Thread(
            target=self._run_and_forget, args=(lease,), name=f"{self.name}-{lease.task.id}",
            daemon=True,
        )  # fmt: skip
        with self._guard:
            self._active[lease.task.id] = (lease, thread)
        thread.start()

    def _run_and_forget(self, lease: Lease) -> None:
        try:
            self._run(lease)
        finally:
            with self._guard:
                self._active.pop(lease.task.id, None)
            self._wake.set()
            if self._stopping.is_set():
                self._beat.set()

    def _run(self, lease: Lease) -> None:
        task = lease.task
        failed: TaskRecord | None = None
        try:
            try:
                self.handlers[task.kind](lease)
            except PermanentFailure as exc:
                if not lease.settled:
                    failed = self.queue.fail(lease, str(exc), retry=False)
            except Exception as exc:
                log.warning("task %s (%s of %s), attempt %s of %s failed: %s", task.id,
                            task.kind, task.target, lease.attempt, task.max_attempts, exc,
                            exc_info=True)  # fmt: skip
                if not lease.settled:
                    # Also when the handler settled it in a transaction of its own that
                    # then failed; if that one did commit, this finds the task settled.
                    failed = self.queue.fail(lease, f"{type(exc).__name__}: {exc}")
            else:
                if lease._settling:
                    lease.settled = True  # in the handler's transaction, committed by now
                elif not lease.settled:
                    self.queue.complete(lease)
        except LeaseLost as exc:
            if not lease._settling:
                log.warning("%s; its outcome here is dropped", exc)
        except Exception:
            log.exception("recording the outcome of task %s failed; its lease will run out",
                          task.id)  # fmt: skip
        if failed is not None and failed.state == "failed":
            self._failed(failed)

    def _failed(self, task: TaskRecord) -> None:
        if self.on_failed is None:
            return
        try:
            self.on_failed(task)
        except Exception:
            log.exception("handling the failure of task %s failed", task.id)

    def _release(self, lease: Lease) -> None:
        try:
            self.queue.release(lease)
        except Exception:
            log.exception("releasing task %s failed; its lease will run out", lease.task.id)

    def _heartbeat(self) -> None:
        interval = self.queue.lease_s / 3
        # Runs on after stop() while a task still runs: its lease lasts as long as this
        # process may be running it, and runs out only when the process is gone.
        while not (self._stopping.is_set() and not self.running):
            self._beat.wait(interval)
            self._beat.clear()
            leases = [lease for lease in self.leases() if not lease.settled]
            try:
                for lease in self.queue.renew(leases):
                    log.warning("task %s: lease lost while running; another worker owns it",
                                lease.task.id)  # fmt: skip
            except Exception:
                log.exception("renewing task leases failed; trying again")
