"""Task workers in separate processes on one PostgreSQL, as controllers of a fleet run:
every task runs once, and a worker killed mid-task hands the task on when its lease
runs out, never while it was alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from wattvisor.compute.tasks import TaskQueue
from wattvisor.store import make_engine, migrate, write_transaction

try:
    from support.postgres import PostgresServer
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import PostgresServer  # type: ignore[no-redef]

from .task_worker_process import RUNS_TABLE

WORKER = Path(__file__).with_name("task_worker_process.py")
WAIT_S = 120.0
LEASE_S = 3.0  # renewed every second: a loaded machine stalls for less than 2 s


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    url = postgres_server.create_database()
    migrate(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(RUNS_TABLE))
    engine.dispose()
    return url


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(url: str, name: str, exit_when_idle: bool) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        process = subprocess.Popen(
            [sys.executable, str(WORKER), url, name, str(LEASE_S), "1" if exit_when_idle else "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == "ready", process.stderr.read() if process.stderr else line
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=WAIT_S)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def _runs(engine: Engine) -> list[tuple[int, str, int, object, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT task_id, worker, attempt, started_at, finished_at FROM task_runs "
                "ORDER BY task_id, started_at"
            )
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_two_worker_processes_run_each_of_100_tasks_exactly_once(
    pg_url: str, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    engine = make_engine(pg_url)
    queue = TaskQueue(engine)
    with write_transaction(engine) as conn:
        ids = [queue.enqueue(conn, "job", f"server-{n}").task.id for n in range(100)]
    workers = [spawn(pg_url, name, True) for name in ("controller-a", "controller-b")]
    for worker in workers:
        _out, err = worker.communicate(timeout=WAIT_S)
        assert worker.returncode == 0, err
    runs = _runs(engine)
    tasks = queue.list_tasks(limit=1000)
    engine.dispose()
    assert sorted(r[0] for r in runs) == sorted(ids)  # each task once, none missing
    assert all(r[4] is not None for r in runs)
    assert {t.state for t in tasks} == {"done"}
    assert {t.attempts for t in tasks} == {1}


def test_a_killed_workers_task_is_finished_by_the_other_once_its_lease_runs_out(
    pg_url: str, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    engine = make_engine(pg_url)
    queue = TaskQueue(engine)
    with write_transaction(engine) as conn:
        hung = queue.enqueue(conn, "job", "server-hung", {"hang_in": "controller-a"}).task.id
        others = [queue.enqueue(conn, "job", f"server-{n}").task.id for n in range(30)]
    doomed = spawn(pg_url, "controller-a", False)
    _until(lambda: any(r[0] == hung for r in _runs(engine)), "controller-a to start the task")
    started_hung = time.monotonic()
    spawn(pg_url, "controller-b", True)
    _until(
        lambda: all((t := queue.get(i)) is not None and t.state == "done" for i in others),
        "the other tasks to be done",
    )
    # controller-b keeps claiming while controller-a keeps renewing its lease.
    _until(lambda: time.monotonic() - started_hung > 3 * LEASE_S, "several lease periods")
    assert [r[:3] for r in _runs(engine) if r[0] == hung] == [(hung, "controller-a", 1)]

    with engine.connect() as conn:
        killed_at = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(WAIT_S)
    finished = queue.wait(hung, WAIT_S)
    runs = _runs(engine)
    engine.dispose()

    assert (finished.state, finished.claimed_by, finished.attempts) == ("done", "controller-b", 2)
    first, second = [r for r in runs if r[0] == hung]
    assert first[1:3] == ("controller-a", 1) and first[4] is None  # cut short by the kill
    assert second[1:3] == ("controller-b", 2) and second[4] is not None
    assert second[3] > killed_at  # type: ignore[operator]  # never while controller-a lived
    others_runs = [r for r in runs if r[0] != hung]
    assert sorted(r[0] for r in others_runs) == sorted(others)
    assert all(r[4] is not None for r in others_runs)
