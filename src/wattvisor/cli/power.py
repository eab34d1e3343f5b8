"""``wattvisor power ...``: power and energy of servers, projects and hosts over ``/v1``.

Register with ``app.add_typer(power_app, name="power")``. The figures are the
API's (``GET /v1/servers/{id}/power``, ``/v1/projects/{p}/power``,
``/v1/hosts/{id}/power``); nothing is computed here.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from wattvisor.cli.api_client import (
    ApiClient,
    JsonOption,
    ServerArg,
    UrlOption,
    connect,
    out,
    print_json,
    resolve_host,
    resolve_server,
    segment,
)

power_app = typer.Typer(
    help="Power and energy of servers, projects and hosts.", no_args_is_help=True
)
HistoryOption = Annotated[
    int, typer.Option("--history", min=0, help="How many recent samples to list.")
]


def _time(unix: float | None, precise: bool = False) -> str:
    if unix is None:
        return "never"
    moment = datetime.fromtimestamp(unix, UTC)
    if precise:  # samples can be less than a second apart
        return moment.strftime("%H:%M:%S.%f")[:-3]
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _print_power(power: dict[str, Any], history: int, as_json: bool) -> None:
    """A power reading: the summary, then its last ``history`` samples, newest first."""
    if as_json:
        print_json(power)
        return
    summary = Table(box=None, show_header=False)
    summary.add_row("subject", escape(power["subject"]))
    summary.add_row("watts", f"{power['watts']:.2f}")
    summary.add_row("joules", f"{power['joules']:.1f}")
    summary.add_row("source", power["source"] + ("" if power["measured"] else " (not measured)"))
    summary.add_row("servers", str(power["servers"]))
    summary.add_row("taken at", _time(power["taken_at"]))
    out.print(summary)
    samples = power["history"][-history:] if history else []
    if samples:
        table = Table("Taken at (UTC)", "Watts", "Joules", title="recent samples", box=None)
        for sample in reversed(samples):
            table.add_row(_time(sample["taken_at"], precise=True), f"{sample['watts']:8.2f}",
                          f"{sample['joules']:12.1f}")  # fmt: skip
        out.print(table)


@power_app.command("server")
def server_power(
    server_id: ServerArg,
    history: HistoryOption = 10,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """A server's power, energy and recent samples."""
    with connect(url) as client:
        power = client.call("GET", f"/v1/servers/{resolve_server(client, server_id)}/power")
    _print_power(power, history, as_json)


@power_app.command("project")
def project_power(
    project: Annotated[str, typer.Argument(help="Project id.")],
    history: HistoryOption = 10,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """A project's power and energy, summed over every host."""
    with connect(url) as client:
        power = client.call("GET", f"/v1/projects/{segment(project)}/power")
    _print_power(power, history, as_json)


@power_app.command("host")
def host_power(
    host_id: Annotated[str, typer.Argument(help="Host id or unique name.")],
    history: HistoryOption = 10,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """A host's power and energy (admin)."""
    with connect(url) as client:
        power = client.call("GET", f"/v1/hosts/{resolve_host(client, host_id)}/power")
    _print_power(power, history, as_json)


def _power_table(client: ApiClient) -> Table:
    rows = []
    for server in client.call("GET", "/v1/servers"):
        if server["status"] == "DELETED":
            continue
        power = client.call("GET", f"/v1/servers/{server['id']}/power")
        rows.append((power["watts"], power["joules"], power["source"], server))
    rows.sort(key=lambda row: row[0], reverse=True)
    table = Table("Server", "Name", "Status", "Watts", "Joules", "Source", box=None)
    for watts, joules, source, server in rows:
        table.add_row(
            server["id"], escape(server["name"]), server["status"], f"{watts:8.2f}",
            f"{joules:12.1f}", source,
        )  # fmt: skip
    return table


@power_app.command("top")
def top(
    interval: Annotated[
        float, typer.Option("--interval", "-n", help="Seconds between updates.")
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one table and exit.")] = False,
    url: UrlOption = None,
) -> None:
    """Servers by power, refreshed live (Ctrl-C to stop)."""
    with connect(url) as client:
        if once:
            out.print(_power_table(client))
            return
        with Live(_power_table(client), console=out, refresh_per_second=4) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(_power_table(client))
            except KeyboardInterrupt:
                pass
