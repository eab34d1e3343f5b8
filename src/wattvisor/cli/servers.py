"""``wattvisor server ...`` and ``wattvisor power top``: a thin HTTP client of the ``/v1`` API.

Register with ``app.add_typer(server_app, name="server")`` and
``app.add_typer(power_app, name="power")``. The API address is ``--url``,
``$WATTVISOR_URL`` or ``http://<api.host>:<api.port>``; the token is
``$WATTVISOR_TOKEN`` or one minted for an hour from the admin key file on this
machine. Nothing here holds business logic: every decision is the API's, and its
error messages are shown as they are.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from wattvisor.auth.errors import KeyFileError
from wattvisor.auth.keys import mint_token_from_file
from wattvisor.cli.context import err, state

server_app = typer.Typer(help="Create, list, show and delete servers.", no_args_is_help=True)
power_app = typer.Typer(help="Power and energy of your servers.", no_args_is_help=True)
out = Console()

UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="WATTVISOR_URL", help="API address (default from settings)."),
]
FINAL_STATUSES = frozenset({"ACTIVE", "SHUTOFF", "ERROR", "DELETED"})


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


class ApiClient:
    """The few calls the commands make, with the API's error message on failure."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise _fail(f"cannot reach the API at {self.http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = f"{error['message']} ({error['code']}, HTTP {response.status_code})"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {response.status_code}: {response.text[:200]}"
            raise _fail(message)
        return response.json() if response.content else None

    def close(self) -> None:
        self.http.close()


@contextmanager
def _client(url: str | None) -> Iterator[ApiClient]:
    settings = state.settings()
    base = url or f"http://{settings.api.host}:{settings.api.port}"
    token = os.environ.get("WATTVISOR_TOKEN")
    if not token:
        try:
            token = mint_token_from_file(
                settings.admin_key_path, settings.auth.admin_user, timedelta(hours=1)
            )
        except (KeyFileError, OSError) as exc:
            raise _fail(
                f"no token: set WATTVISOR_TOKEN (`wattvisor token create`) or run where the "
                f"admin key {settings.admin_key_path} is readable ({exc})"
            ) from exc
    client = ApiClient(base, token)
    try:
        yield client
    finally:
        client.close()


def _wait(client: ApiClient, server_id: str, label: str, timeout_s: float) -> dict[str, Any]:
    """Poll the server with a spinner until it settles (no task, a final status)."""
    deadline = time.monotonic() + timeout_s
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=err, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task(f"{label} {server_id}", total=None)
        while True:
            # The API holds the answer until the task in progress ends (or wait_s passes),
            # so this loop makes a request per state change, not per tick.
            left = max(0.0, min(5.0, deadline - time.monotonic()))
            server: dict[str, Any] = client.call(
                "GET", f"/v1/servers/{server_id}?wait_s={left:.1f}"
            )
            status = server["status"]
            progress.update(task, description=f"{label} {server['name']}: {status}")
            if status in FINAL_STATUSES and server.get("task") is None:
                return server
            if time.monotonic() > deadline:
                raise _fail(f"server {server_id} is still {status} after {timeout_s:.0f} s")
            if server.get("task") is None:
                time.sleep(0.25)  # BUILD before a worker picked it up: nothing to wait on yet


def _server_table(servers: list[dict[str, Any]]) -> Table:
    table = Table("ID", "Name", "Status", "Task", "Power metrics", "Created", box=None)
    for s in servers:
        table.add_row(
            s["id"], escape(s["name"]), s["status"], s.get("task") or "",
            "yes" if s["power_metrics"] else "no", s["created_at"][:19].replace("T", " "),
        )  # fmt: skip
    return table


@server_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Display name of the server.")],
    flavor: Annotated[str, typer.Option("--flavor", "-f", help="Flavor name or id.")],
    image: Annotated[str, typer.Option("--image", "-i", help="Image name or id.")],
    power_metrics: Annotated[
        bool, typer.Option("--power-metrics", help="Share its own energy counter with the guest.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until ACTIVE or ERROR.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Create a server; with --wait, follow it until it is ACTIVE (exit 1 on ERROR)."""
    body: dict[str, Any] = {"name": name, "flavor": flavor, "image": image}
    if power_metrics:
        body["power_metrics"] = True
    with _client(url) as client:
        server = client.call("POST", "/v1/servers", body)
        if wait:
            server = _wait(client, server["id"], "building", timeout)
    _print_server(server, as_json)
    if server["status"] == "ERROR":
        raise _fail(f"server {server['id']} failed: {server.get('fault')}")


def _print_server(server: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(server))
        return
    table = Table(box=None, show_header=False)
    for key, value in server.items():
        shown = ", ".join(value) if isinstance(value, list) else "" if value is None else value
        table.add_row(key, escape(str(shown)))
    out.print(table)


@server_app.command("list")
def list_servers(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Your project's servers (every project's for an admin)."""
    with _client(url) as client:
        servers = client.call("GET", "/v1/servers")
    if as_json:
        out.print_json(json.dumps(servers))
    else:
        out.print(_server_table(servers))


_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _resolve(client: ApiClient, ident: str) -> str:
    """A server id from an id or a unique name, as people type them."""
    if _UUID.match(ident):
        return ident
    servers: list[dict[str, Any]] = client.call("GET", "/v1/servers")
    matches = [s["id"] for s in servers if s.get("name") == ident]
    if len(matches) == 1:
        return str(matches[0])
    if not matches:
        raise _fail(f"no server named {ident!r}; give a name from `wattvisor server list` or an id")
    raise _fail(f"{len(matches)} servers are named {ident!r}; give one of their ids: "
                + ", ".join(matches))


@server_app.command("show")
def show(
    server_id: Annotated[str, typer.Argument(help="Server id or unique name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """One server with its status and fault."""
    with _client(url) as client:
        server = client.call("GET", f"/v1/servers/{_resolve(client, server_id)}")
    _print_server(server, as_json)


@server_app.command("delete")
def delete(
    server_id: Annotated[str, typer.Argument(help="Server id or unique name.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is DELETED.")] = False,
    timeout: Annotated[float, typer.Option("--timeout")] = 120.0,
    url: UrlOption = None,
) -> None:
    """Delete a server (its guest, resources, files and energy total)."""
    with _client(url) as client:
        server_id = _resolve(client, server_id)
        server = client.call("DELETE", f"/v1/servers/{server_id}")
        if wait:
            server = _wait(client, server_id, "deleting", timeout)
    err.print(f"server {server_id}: {server['status']}" + (f" ({server['task']})"
              if server.get("task") else ""))  # fmt: skip


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
    with _client(url) as client:
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
