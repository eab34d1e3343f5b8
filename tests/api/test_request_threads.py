"""Blocking work of a request runs on a pool thread: off the event loop, in the caller's
context, its result or its exception handed back as a direct call would."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from wattvisor.api.request_threads import run_blocking

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


def test_a_call_runs_off_the_event_loop_thread_and_returns_its_result() -> None:
    def where(a: int, *, b: int) -> tuple[str, int]:
        return threading.current_thread().name, a + b

    async def main() -> tuple[str, str, int]:
        name, total = await run_blocking(where, 2, b=3)
        return threading.current_thread().name, name, total

    loop_thread, worker, total = asyncio.run(main())
    assert worker != loop_thread
    assert worker.startswith("wattvisor-api")
    assert total == 5


def test_the_callers_context_variables_are_seen_and_its_own_are_kept_apart() -> None:
    def read_and_set() -> str:
        seen = marker.get()
        marker.set("set in the thread")
        return seen

    async def main() -> tuple[str, str]:
        marker.set("set by the request")
        seen = await run_blocking(read_and_set)
        return seen, marker.get()

    assert asyncio.run(main()) == ("set by the request", "set by the request")


def test_the_exception_raised_in_the_thread_reaches_the_caller() -> None:
    class Refused(Exception):
        pass

    def refuse() -> None:
        raise Refused("server 'b1' is not yours")

    with pytest.raises(Refused, match="server 'b1' is not yours"):
        asyncio.run(run_blocking(refuse))


def test_concurrent_calls_all_complete() -> None:
    barrier = threading.Barrier(8, timeout=30)

    def meet(i: int) -> int:
        barrier.wait()  # only passes if eight calls run at the same time
        return i

    async def main() -> list[int]:
        return list(await asyncio.gather(*(run_blocking(meet, i) for i in range(8))))

    assert asyncio.run(main()) == list(range(8))
