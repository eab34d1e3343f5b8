"""``wattvisor power ...``: power and energy of servers, projects and hosts over ``/v1``.

Register with ``app.add_typer(power_app, name="power")``. The figures are the
API's (``GET /v1/power/servers``, ``/v1/servers/{id}/power``,
``/v1/projects/{p}/power``, ``/v1/hosts/{id}/power``); nothing is computed here.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Annotated, Any

import typer
from rich.live import Live

from wattvisor.auth import InvalidTTL, parse_ttl
from wattvisor.cli.api_client import (
    ApiClient,
    ServerArg,
    UrlOption,
    connect,
    resolve_host,
    resolve_server,
    segment,
)
from wattvisor.cli.context import fail
from wattvisor.cli.output import (
    Column,
    ColumnOption,
    FormatOption,
    JsonOption,
    Output,
    OutputFormat,
    console,
    print_json,
    table,
)

power_app = typer.Typer(
    help="Power and energy of servers, projects and hosts.", no_args_is_help=True
)
HistoryOption = Annotated[
    int, typer.Option("--history", min=0, help="How many recent samples to list.")
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="List the history of this long (90s, 30m, 6h, 7d; at most 31d) kept by the "
        "controllers across every host, instead of the recent samples.",
    ),
]
TOP_COLUMNS = (
    Column("ID", "id", ident=True),
    Column("Name", "name"),
    Column("Project", "project"),
    Column("Status", "status"),
    Column("Watts", "watts", text=lambda w: f"{w:.2f}", right=True),
    Column("Joules", "joules", text=lambda j: f"{j:.1f}", right=True),
    Column("Source", "source"),
    Column("Measured", "measured", default=False),
    Column("Taken at", "taken_at", default=False),
)
SAMPLE_COLUMNS = (
    Column("Taken at (UTC)", "taken_at", text=lambda t: _time(t, precise=True)),
    Column("Watts", "watts", text=lambda w: f"{w:.2f}", right=True),
    Column("Joules", "joules", text=lambda j: f"{j:.1f}", right=True),
)


def _time(unix: float | None, precise: bool = False) -> str:
    if unix is None:
        return "never"
    moment = datetime.fromtimestamp(unix, UTC)
    if precise:  # samples can be less than a second apart
        return moment.strftime("%H:%M:%S.%f")[:-3]
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _source_note(power: dict[str, Any]) -> str:
    if not power["sampled"]:
        return " (no sample yet)"
    return "" if power["measured"] else " (not measured)"


def _stored_history(client: ApiClient, subject: str, kind: str, since: str) -> list[Any]:
    try:
        window = parse_ttl(since, maximum=timedelta(days=31))
    except InvalidTTL as exc:
        raise fail(f"--since: {exc}") from exc
    seconds = max(1, int(window.total_seconds()))
    base = "/v1/servers" if kind == "server" else "/v1/projects"
    points: list[Any] = client.call(
        "GET", f"{base}/{segment(subject)}/power/history?since={seconds}"
    )
    return points


def _print_power(power: dict[str, Any], history: int, output: Output) -> None:
    """A power reading: its fields, then (in a table) its last ``history`` samples, newest first."""
    if output.fmt is not OutputFormat.table:
        output.record(power)
        return
    summary = {k: v for k, v in power.items() if k != "history"}
    summary["watts"] = f"{power['watts']:.2f}"
    summary["joules"] = f"{power['joules']:.1f}"
    summary["source"] = power["source"] + _source_note(power)
    summary["taken_at"] = _time(power["taken_at"])
    output.record(summary)
    samples = power["history"][-history:] if history else []
    if samples and not output.columns:
        console().print(table(list(reversed(samples)), SAMPLE_COLUMNS, "recent samples"))


@power_app.command("server")
def server_power(
    server_id: ServerArg,
    history: HistoryOption = 10,
    since: SinceOption = None,
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """A server's power, energy and recent samples."""
    output = Output.of(fmt, columns, as_json)
    with connect(url) as client:
        power = client.call("GET", f"/v1/servers/{resolve_server(client, server_id)}/power")
        if since is not None:
            power["history"] = _stored_history(client, power["subject"], "server", since)
            history = len(power["history"])
    _print_power(power, history, output)


@power_app.command("project")
def project_power(
    project: Annotated[str, typer.Argument(help="Project id.")],
    history: HistoryOption = 10,
    since: SinceOption = None,
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """A project's power and energy, summed over every host."""
    output = Output.of(fmt, columns, as_json)
    with connect(url) as client:
        power = client.call("GET", f"/v1/projects/{segment(project)}/power")
        if since is not None:
            power["history"] = _stored_history(client, power["subject"], "project", since)
            history = len(power["history"])
    _print_power(power, history, output)


@power_app.command("host")
def host_power(
    host_id: Annotated[str, typer.Argument(help="Host id or unique name.")],
    history: HistoryOption = 10,
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """A host's power and energy (admin)."""
    output = Output.of(fmt, columns, as_json)
    with connect(url) as client:
        power = client.call("GET", f"/v1/hosts/{resolve_host(client, host_id)}/power")
    _print_power(power, history, output)


# -- top ----------------------------------------------------------------------------------


class _Stop(Exception):
    """SIGTERM arrived: end ``power top`` as Ctrl-C does."""


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


def _servers_power(client: ApiClient, project: str | None) -> list[dict[str, Any]]:
    """Every visible server's latest figures, highest watts first: one request."""
    query = f"?project={segment(project)}" if project is not None else ""
    rows: list[dict[str, Any]] = client.call("GET", f"/v1/power/servers{query}")
    return rows


def _title() -> str:
    return f"servers by watts at {datetime.now(UTC).strftime('%H:%M:%S UTC')}"


def _print_refresh(output: Output, rows: list[dict[str, Any]]) -> None:
    """One refresh off a terminal: a table with the time, JSON on one line, or values."""
    if output.fmt is OutputFormat.json:
        picked = output.pick(TOP_COLUMNS)
        data = [{c.key: c.value(r) for c in picked} for r in rows] if output.columns else rows
        print_json(data, indent=None)
    elif output.fmt is OutputFormat.value:
        output.rows(rows, TOP_COLUMNS)
    else:
        console().print(table(rows, output.pick(TOP_COLUMNS), _title()))
        sys.stdout.write("\n")
    sys.stdout.flush()


@power_app.command("top")
def top(
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.1, help="Seconds between updates.")
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one table and exit.")] = False,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only this project's servers.")
    ] = None,
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Servers by power, refreshed every --interval until Ctrl-C or SIGTERM.

    On a terminal the table is redrawn in place; elsewhere (a pipe, a file, a log)
    each refresh is printed after the last one, a JSON array per line with -f json.
    Ending it leaves the last figures printed."""
    output = Output.of(fmt, columns, as_json)
    output.pick(TOP_COLUMNS)
    live_view = output.fmt is OutputFormat.table and console().is_terminal and not once
    with connect(url) as client, _stop_on_sigterm():
        try:
            if not live_view:
                while True:
                    _print_refresh(output, _servers_power(client, project))
                    if once:
                        return
                    time.sleep(interval)
            rows = _servers_power(client, project)
            picked = output.pick(TOP_COLUMNS)
            with Live(table(rows, picked, _title()), console=console(), auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(table(_servers_power(client, project), picked, _title()),
                                refresh=True)  # fmt: skip
        except (KeyboardInterrupt, _Stop):
            pass
