"""Single duties: one holder at a time on both backends; on PostgreSQL the duty passes
to another process when its holder is killed or loses its connection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from wattvisor.store import make_engine
from wattvisor.store.duties import advisory_key, single_duty

try:
    from support.postgres import PostgresServer
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import PostgresServer  # type: ignore[no-redef]

WAIT_S = 60.0

_HOLDER = """
import sys, time
sys.path[:0] = {path!r}
from wattvisor.store import make_engine
from wattvisor.store.duties import single_duty
engine = make_engine(sys.argv[1])
with single_duty(engine, "power-sync") as duty:
    print("held" if duty else "not held", flush=True)
    time.sleep(120)
"""


def _in_thread(call: Callable[[], bool]) -> bool:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    thread.join(WAIT_S)
    return result[0]


def test_only_one_caller_holds_a_duty_at_a_time(store_url: str) -> None:
    engine = make_engine(store_url)

    def try_duty(name: str = "power-sync") -> bool:
        with single_duty(engine, name) as duty:
            return duty.held

    try:
        with single_duty(engine, "power-sync") as first:
            assert first.held and first.still_held()
            assert not _in_thread(try_duty)
            assert _in_thread(lambda: try_duty("downsampling"))  # another duty is free
        assert _in_thread(try_duty)  # released on exit
        with pytest.raises(RuntimeError), single_duty(engine, "power-sync"):
            raise RuntimeError("the duty failed")
        assert _in_thread(try_duty)  # released when the duty raised too
    finally:
        engine.dispose()


def test_bad_duty_names_are_refused_naming_the_value(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        for name in ("", "x" * 101, "tab\there"):
            with pytest.raises(ValueError, match="duty name"), single_duty(engine, name):
                pass
    finally:
        engine.dispose()


def test_duty_keys_are_stable_and_distinct() -> None:
    assert advisory_key("power-sync") == advisory_key("power-sync")
    assert advisory_key("power-sync") != advisory_key("downsampling")
    assert -(2**63) <= advisory_key("power-sync") < 2**63


def test_a_killed_holders_duty_passes_to_another_process(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER.format(path=sys.path), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    engine = make_engine(url)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with single_duty(engine, "power-sync") as duty:
            assert not duty.held
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while True:
            with single_duty(engine, "power-sync") as duty:
                if duty.held:
                    break
            assert time.monotonic() < deadline, "the duty never passed on"
            time.sleep(0.05)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate(timeout=WAIT_S)
        engine.dispose()


def test_a_holder_that_loses_its_connection_knows_it_lost_the_duty(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    engine = make_engine(url)
    try:
        with single_duty(engine, "power-sync") as duty:
            assert duty.still_held()
            with engine.connect() as admin:
                ended = (
                    admin.execute(
                        text(
                            "SELECT pg_terminate_backend(pid, 30000) FROM pg_locks "
                            "WHERE locktype = 'advisory' AND granted"
                        )
                    )
                    .scalars()
                    .all()
                )
            assert ended == [True]  # and the backend is gone (waited for up to 30 s)
            assert not duty.still_held()
            assert _in_thread(lambda: _held(engine))
    finally:
        engine.dispose()


def _held(engine: Engine) -> bool:
    with single_duty(engine, "power-sync") as duty:
        return duty.held
