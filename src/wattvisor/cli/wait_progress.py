"""``--wait``: follow a server's task to its end, showing each status and task change.

A stop can take the API's whole stop timeout and a build minutes, so a silent
wait looks hung. Every change of status or task is a line on stderr with the time
since the wait began; on a terminal a spinner line shows the time running between
changes, elsewhere (a log, CI) a line every ``heartbeat_s`` says it is still
going. stdout stays for the result.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from wattvisor.cli.api_client import ApiClient
from wattvisor.cli.context import err, fail
from wattvisor.cli.safe_text import safe

FINAL_STATUSES = frozenset({"ACTIVE", "SHUTOFF", "ERROR", "DELETED"})
POLL_S = 5.0
"""The longest one request waits for the task (the API's ``wait_s``)."""


def describe(server: dict[str, Any]) -> str:
    """``STATUS`` or ``STATUS (task)``."""
    task = server.get("task")
    return str(server["status"]) + (f" ({task})" if task else "")


class WaitProgress:
    """Lines on stderr for each change of a server's status or task, with elapsed time."""

    def __init__(self, label: str, heartbeat_s: float = 30.0) -> None:
        self.label = label
        self.heartbeat_s = heartbeat_s
        self.started = time.monotonic()
        self.last_line = self.started
        self.seen: str | None = None
        self.live: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> WaitProgress:
        if err.is_terminal:
            self.live = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                console=err, transient=True,
            )  # fmt: skip
            self.live.start()
            self.task = self.live.add_task(safe(self.label), total=None)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.stop()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, server: dict[str, Any]) -> None:
        """Report ``server``'s state if it changed (or, off a terminal, if it has been long)."""
        now = describe(server)
        name = safe(f"{self.label} {server['name']}")
        if now != self.seen:
            self.seen = now
            self._line(f"{self.elapsed():7.1f} s  {name}: {safe(now)}")
        elif self.live is None and time.monotonic() - self.last_line >= self.heartbeat_s:
            self._line(f"{self.elapsed():7.1f} s  {name}: still {safe(now)}")
        if self.live is not None:
            self.live.update(self.task, description=f"{name}: {safe(now)}")

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        (self.live.console if self.live is not None else err).print(Text(text), soft_wrap=True)


def wait_for(
    client: ApiClient, server_id: str, label: str, timeout_s: float, heartbeat_s: float = 30.0
) -> dict[str, Any]:
    """Follow the server until it has no task and a final status; exit 1 after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    with WaitProgress(label, heartbeat_s) as progress:
        while True:
            # The API holds the answer until the task in progress ends (or wait_s passes),
            # so this loop makes a request per state change, not per tick.
            left = max(0.0, min(POLL_S, deadline - time.monotonic()))
            server: dict[str, Any] = client.call(
                "GET", f"/v1/servers/{server_id}?wait_s={left:.1f}"
            )
            progress.update(server)
            if server["status"] in FINAL_STATUSES and server.get("task") is None:
                return server
            if time.monotonic() > deadline:
                raise fail(
                    f"server {server_id} is still {describe(server)} after {timeout_s:.0f} s"
                )
            if server.get("task") is None:
                time.sleep(0.25)  # BUILD before a worker picked it up: nothing to wait on yet
