"""What the PostgreSQL benches share: a private server, and worker processes that start,
connect, and wait for "go" so that no start-up cost lands inside a measured window.

A worker process is ``python -m <module> <role> <args...>``: it prints ``ready`` once
connected, waits for a line (``go``), works, and waits for another (``stop``) before it
finishes; its last stdout line is what it reports. :func:`ready_processes` starts them,
:func:`tell` sends a line to each, :func:`finish` stops them (killing one that does not
end in time) and hands back their last lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

READY_TIMEOUT_S = 600.0


@contextmanager
def private_postgres() -> Iterator[Any | None]:
    """A private PostgreSQL 15 server (fsync off) for one bench; None (and a line saying
    why) when it cannot start, so the bench prints that instead of figures."""
    try:
        from tests.support.postgres import start_postgres
    except ImportError as exc:
        print(f"PostgreSQL skipped: {exc}")
        yield None
        return
    try:
        server = start_postgres()
    except RuntimeError as exc:
        print(f"PostgreSQL skipped: {exc}")
        yield None
        return
    try:
        yield server
    finally:
        server.stop()


def migrated_database(server: Any) -> str:
    """A new, migrated database on ``server``; its URL."""
    from wattvisor.store import migrate

    url: str = server.create_database()
    migrate(url)
    return url


def ready_processes(
    module: str, args: Sequence[str], count: int, *, env: dict[str, str] | None = None
) -> list[subprocess.Popen[str]]:
    """``count`` processes of ``python -m module *args``, each past its ``ready`` line.

    A process that ends or says something else first fails the start (the others are
    killed); its output is in the error."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for _ in range(count)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                rest = p.stdout.read() if p.poll() is not None else ""
                raise RuntimeError(f"{module} process {p.pid} said {line!r}, not ready: {rest}")
    except BaseException:
        finish(procs, timeout_s=5.0)
        raise
    return procs


def tell(procs: Sequence[subprocess.Popen[str]], line: str) -> None:
    """Send ``line`` to every process."""
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(line + "\n")
        p.stdin.flush()


def read_line(proc: subprocess.Popen[str]) -> str:
    """The next stdout line of ``proc`` (empty when it ended)."""
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def finish(procs: Sequence[subprocess.Popen[str]], *, timeout_s: float = 60.0) -> list[str]:
    """Tell each process ``stop`` and wait for it; its last stdout line, one per process
    (a process still running after ``timeout_s`` is killed and gives an empty line)."""
    lasts = []
    for p in procs:
        out = ""
        try:
            if p.poll() is None:
                assert p.stdin is not None
                p.stdin.write("stop\n")
                p.stdin.flush()
            out, _ = p.communicate(timeout=timeout_s)
        except (BrokenPipeError, subprocess.TimeoutExpired, ValueError):
            p.kill()
            p.communicate(timeout=timeout_s)
        lines = [line for line in (out or "").splitlines() if line.strip()]
        lasts.append(lines[-1].strip() if lines else "")
    return lasts
