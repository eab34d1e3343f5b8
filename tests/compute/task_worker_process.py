"""A controller's task worker as a process of its own, for the tests that kill one.

``python task_worker_process.py URL NAME LEASE_S EXIT_WHEN_IDLE`` runs a
:class:`TaskWorker` for kind ``job`` whose handler records each run in ``task_runs``
(committed before the work, so a run cut short by SIGKILL still shows) and marks it
finished after. A task with payload ``{"hang_in": NAME}`` hangs in that worker (up to
``HANG_S``) and runs normally anywhere else. The process prints ``ready`` once its
worker runs, and exits when the queue has nothing left in flight (if asked) or after
``LIFETIME_S``.
"""

from __future__ import annotations

import sys
import time

from sqlalchemy import text

from wattvisor.compute.tasks import Lease, TaskQueue, TaskWorker
from wattvisor.store import make_engine, write_transaction

HANG_S = 120.0
LIFETIME_S = 240.0

RUNS_TABLE = (
    "CREATE TABLE IF NOT EXISTS task_runs (task_id BIGINT NOT NULL, worker TEXT NOT NULL, "
    "attempt INT NOT NULL, started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ)"
)


def main(url: str, name: str, lease_s: float, exit_when_idle: bool) -> None:
    engine = make_engine(url)
    queue = TaskQueue(engine, lease_s=lease_s, backoff_s=0.0)

    def job(lease: Lease) -> None:
        with write_transaction(engine) as conn:
            conn.execute(
                text(
                    "INSERT INTO task_runs (task_id, worker, attempt, started_at) "
                    "VALUES (:t, :w, :a, clock_timestamp())"
                ),
                {"t": lease.task.id, "w": name, "a": lease.attempt},
            )
        if lease.task.payload.get("hang_in") == name:
            time.sleep(HANG_S)
        with write_transaction(engine) as conn:
            conn.execute(
                text(
                    "UPDATE task_runs SET finished_at = clock_timestamp() "
                    "WHERE task_id = :t AND worker = :w AND attempt = :a"
                ),
                {"t": lease.task.id, "w": name, "a": lease.attempt},
            )

    worker = TaskWorker(queue, {"job": job}, worker_id=name, concurrency=2, poll_s=0.05)
    worker.start()
    print("ready", flush=True)
    deadline = time.monotonic() + LIFETIME_S
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if exit_when_idle:
            counts = queue.counts()
            if counts["queued"] + counts["running"] == 0:
                break
    worker.stop(30)
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1")
