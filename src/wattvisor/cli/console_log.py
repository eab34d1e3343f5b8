"""``wattvisor server console-log``: a server's serial console, and following it like ``tail -f``.

The text is the guest's: every control character but newline and tab is printed as
a visible escape (:func:`wattvisor.cli.safe_text.safe_log`), so a guest cannot drive
the terminal of whoever reads its console. ``--follow`` asks the API again every
``--interval`` seconds with the cursor of its last answer and prints only what is new;
it ends on Ctrl-C, SIGTERM, or when the server is deleted.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated, Any

import httpx
import typer

from wattvisor.cli.api_client import ApiClient, ServerArg, UrlOption, connect, resolve_server
from wattvisor.cli.context import fail, say
from wattvisor.cli.safe_text import safe_log

MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 60.0


class _Stop(Exception):
    """SIGTERM arrived: end ``--follow`` as Ctrl-C does."""


class _Gone(Exception):
    """The server no longer exists (deleted while followed)."""


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fetch(client: ApiClient, server_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """One answer of ``GET /v1/servers/{id}/console-log``; _Gone on 404, else the API's error."""
    path = f"/v1/servers/{server_id}/console-log"
    try:
        response = client.http.get(path, params=params)
    except httpx.TransportError as exc:
        raise fail(f"cannot reach the API at {client.http.base_url}: {exc}") from exc
    if response.status_code == 404:
        raise _Gone
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            message = f"{error['message']} ({error['code']}, HTTP {response.status_code})"
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {response.status_code}: {response.text[:200]}"
        raise fail(message)
    answer: dict[str, Any] = response.json()
    return answer


def _show(text: str) -> None:
    if text:
        sys.stdout.write(safe_log(text))
        sys.stdout.flush()


def console_log(
    server_id: ServerArg,
    lines: Annotated[
        int | None,
        typer.Option("--lines", "-n", help="Only the last N lines (default: the whole log)."),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Keep printing new output until Ctrl-C or deletion."),
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            min=MIN_INTERVAL_S,
            max=MAX_INTERVAL_S,
            help="Seconds between two polls of --follow.",
        ),
    ] = 1.0,
    url: UrlOption = None,
) -> None:
    """A server's serial console log, earlier boots first (like `openstack console log show`).

    Control characters the guest wrote are shown as escapes (\\x1b...), never sent to
    the terminal raw."""
    params: dict[str, Any] = {} if lines is None else {"lines": lines}
    with connect(url) as client, _stop_on_sigterm():
        try:
            ident = resolve_server(client, server_id)
            try:
                answer = _fetch(client, ident, params)
            except _Gone:
                raise fail(f"server {server_id!r} does not exist") from None
            _show(answer["text"])
            if answer["truncated"] and lines is None:
                say("(earlier output was left out: the answer is capped in size)")
            if follow:
                _follow(client, ident, answer["next_cursor"], interval)
        except (KeyboardInterrupt, _Stop):
            pass
        except _Gone:
            say(f"server {server_id} was deleted")


def _follow(client: ApiClient, server_id: str, cursor: str, interval: float) -> None:
    while True:
        answer = _fetch(client, server_id, {"cursor": cursor})
        if answer["reset"]:
            say("(some console output was rotated away before it could be shown)")
        _show(answer["text"])
        cursor = answer["next_cursor"]
        if not answer["more"]:
            time.sleep(interval)
