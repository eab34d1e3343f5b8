"""Task queue throughput on PostgreSQL: one worker process against two, side by side.

Each worker is a process of its own (a controller), started and connected before the
clock starts, on a private PostgreSQL 15 (fsync off). TASKS tasks, each for a target
of its own, are queued before the start; the figure is tasks settled per second from
"go" until every task is done. Two shapes:

- *claim+complete*: a loop of ``claim(limit=1)`` and ``complete`` — the cost of the
  queue itself, two transactions per task (``FOR UPDATE SKIP LOCKED`` keeps two
  workers from waiting for each other's rows).
- *TaskWorker*: the worker a controller runs (4 handler threads, a heartbeat, claims
  as many as there are free threads), with a handler that does nothing.

The machine has 2 shared cores, and the database server runs on them too: two workers
cannot double the figure here; the point is that a second worker adds throughput
instead of contending on locks.
"""

from __future__ import annotations

import os
import sys
import time

from bench.postgres_processes import (
    finish,
    migrated_database,
    private_postgres,
    ready_processes,
    tell,
)

TASKS = 1_000
CONCURRENCY = 4
WAIT_S = 300.0


def _worker(url: str, shape: str) -> None:
    """A worker process: connect, say ``ready``, wait for ``go``, work until asked to stop
    (TaskWorker) or the queue is empty (claim+complete), print how many it did."""
    from wattvisor.compute.tasks import Lease, TaskQueue, TaskWorker
    from wattvisor.store import make_engine

    engine = make_engine(url)
    queue = TaskQueue(engine, lease_s=30)
    queue.counts()  # open a connection before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    done = 0
    if shape == "loop":
        name = f"bench-{os.getpid()}"
        while leases := queue.claim(name, ["noop"], 1):
            queue.complete(leases[0])
            done += 1
    else:

        def noop(_lease: Lease) -> None:
            return None

        worker = TaskWorker(queue, {"noop": noop}, concurrency=CONCURRENCY, poll_s=0.01)
        worker.start()
        sys.stdin.readline()  # "stop"
        worker.stop(30)
    if shape == "loop":
        sys.stdin.readline()  # "stop"
    print(done, flush=True)
    engine.dispose()


def _measure(url: str, shape: str, workers: int) -> float:
    from sqlalchemy import text

    from wattvisor.compute.tasks import TaskQueue
    from wattvisor.store import make_engine, write_transaction

    engine = make_engine(url)
    queue = TaskQueue(engine)
    with write_transaction(engine) as conn:
        for n in range(TASKS):
            queue.enqueue(conn, "noop", f"{shape}-{workers}-{n}")
    procs = ready_processes("bench.bench_tasks", ["worker", url, shape], workers)
    try:
        started = time.perf_counter()
        tell(procs, "go")
        deadline = time.monotonic() + WAIT_S
        while True:
            counts = queue.counts()
            if counts["queued"] + counts["running"] == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{shape} with {workers} workers: {counts} after {WAIT_S} s")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        finish(procs)
        with write_transaction(engine) as conn:
            conn.execute(text("DELETE FROM tasks"))
        engine.dispose()
    return TASKS / elapsed


def run() -> None:
    with private_postgres() as server:
        if server is None:
            return
        url = migrated_database(server)
        print(f"task queue on PostgreSQL 15 (private server, fsync off), {TASKS} tasks")
        print(f"  {'shape':<26}{'1 worker':>14}{'2 workers':>14}{'2 / 1':>8}")
        for shape, label in (("loop", "claim+complete"), ("worker", "TaskWorker (4 threads)")):
            one = _measure(url, shape, 1)
            two = _measure(url, shape, 2)
            print(
                f"  {label:<26}{one:>9.0f} t/s{two:>10.0f} t/s{two / one:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        _worker(sys.argv[2], sys.argv[3])
    else:
        run()
