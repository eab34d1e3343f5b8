"""Running the synchronous Placement service off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` in the thread pool."""
    return await run_in_threadpool(function, *args, **kwargs)
