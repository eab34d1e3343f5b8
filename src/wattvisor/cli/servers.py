"""``wattvisor server ...``: a thin HTTP client of the ``/v1`` servers and interfaces.

Register with ``app.add_typer(server_app, name="server")``. Address, token and
errors come from :mod:`wattvisor.cli.api_client`; every decision is the API's,
and its error messages are shown as they are.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from wattvisor.cli.api_client import (
    ApiClient,
    JsonOption,
    ServerArg,
    UrlOption,
    connect,
    out,
    print_json,
    print_record,
    resolve_server,
    segment,
)
from wattvisor.cli.context import err, fail

__all__ = ["FINAL_STATUSES", "server_app"]

server_app = typer.Typer(
    help="Servers: create, list, show, stop, start, delete; their interfaces and metadata.",
    no_args_is_help=True,
)
FINAL_STATUSES = frozenset({"ACTIVE", "SHUTOFF", "ERROR", "DELETED"})


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
                raise fail(f"server {server_id} is still {status} after {timeout_s:.0f} s")
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
    with connect(url) as client:
        server = client.call("POST", "/v1/servers", body)
        if wait:
            server = _wait(client, server["id"], "building", timeout)
    print_record(server, as_json)
    if server["status"] == "ERROR":
        raise fail(f"server {server['id']} failed: {server.get('fault')}")


@server_app.command("list")
def list_servers(
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Your project's servers (every project's for an admin)."""
    with connect(url) as client:
        servers = client.call("GET", "/v1/servers")
    if as_json:
        print_json(servers)
    else:
        out.print(_server_table(servers))


@server_app.command("show")
def show(
    server_id: ServerArg,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """One server with its status and fault."""
    with connect(url) as client:
        server = client.call("GET", f"/v1/servers/{resolve_server(client, server_id)}")
    print_record(server, as_json)


@server_app.command("delete")
def delete(
    server_id: ServerArg,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is DELETED.")] = False,
    timeout: Annotated[float, typer.Option("--timeout")] = 120.0,
    url: UrlOption = None,
) -> None:
    """Delete a server (its guest, resources, files and energy total)."""
    with connect(url) as client:
        server_id = resolve_server(client, server_id)
        server = client.call("DELETE", f"/v1/servers/{server_id}")
        if wait:
            server = _wait(client, server_id, "deleting", timeout)
    err.print(f"server {server_id}: {server['status']}" + (f" ({server['task']})"
              if server.get("task") else ""))  # fmt: skip


def _power_action(
    action: str, label: str, ident: str, wait: bool, timeout: float, as_json: bool, url: str | None
) -> None:
    """POST ``/v1/servers/{id}/<action>``; with ``wait``, follow the task to its end."""
    with connect(url) as client:
        server_id = resolve_server(client, ident)
        server = client.call("POST", f"/v1/servers/{server_id}/{action}")
        if wait:
            server = _wait(client, server_id, label, timeout)
    if as_json:
        print_json(server)
    else:
        err.print(f"server {server_id}: {server['status']}" + (f" ({server['task']})"
                  if server.get("task") else ""))  # fmt: skip
    if server["status"] == "ERROR":
        raise fail(f"server {server_id} failed: {server.get('fault')}")


@server_app.command("stop")
def stop(
    server_id: ServerArg,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is SHUTOFF.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Shut a server down (gracefully, then powered off after the API's stop timeout)."""
    _power_action("stop", "stopping", server_id, wait, timeout, as_json, url)


@server_app.command("start")
def start(
    server_id: ServerArg,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is ACTIVE.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Start a SHUTOFF server again."""
    _power_action("start", "starting", server_id, wait, timeout, as_json, url)


@server_app.command("metadata")
def metadata(
    server_id: ServerArg,
    url: UrlOption = None,
) -> None:
    """The server's config drive document (openstack/latest/meta_data.json), as JSON."""
    with connect(url) as client:
        document = client.call("GET", f"/v1/servers/{resolve_server(client, server_id)}/metadata")
    print_json(document)


# -- interfaces -------------------------------------------------------------------------


@server_app.command("interface-add")
def interface_add(
    server_id: ServerArg,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="NIC model, e.g. virtio, e1000 (default: the API's)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the interface as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Add a NIC (generated MAC, alias ua-<port id>) on the configured network."""
    body = {"model": model} if model is not None else None
    with connect(url) as client:
        interface = client.call(
            "POST", f"/v1/servers/{resolve_server(client, server_id)}/interfaces", body
        )
    print_record(interface, as_json)


@server_app.command("interfaces")
def interfaces(
    server_id: ServerArg,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """The NICs added to a server, with the aliases `interface-remove` takes."""
    with connect(url) as client:
        found: list[dict[str, Any]] = client.call(
            "GET", f"/v1/servers/{resolve_server(client, server_id)}/interfaces"
        )
    if as_json:
        print_json(found)
        return
    table = Table("Alias", "MAC", "Model", "Kind", "Created", box=None)
    for i in found:
        table.add_row(i["alias"], i["mac"], i["model"], i["kind"],
                      i["created_at"][:19].replace("T", " "))  # fmt: skip
    out.print(table)


@server_app.command("interface-remove")
def interface_remove(
    server_id: ServerArg,
    alias: Annotated[str, typer.Argument(help="The interface's alias, ua-<port id>.")],
    url: UrlOption = None,
) -> None:
    """Remove a NIC by its alias (from `wattvisor server interfaces`)."""
    with connect(url) as client:
        server_id = resolve_server(client, server_id)
        client.call("DELETE", f"/v1/servers/{server_id}/interfaces/{segment(alias)}")
    err.print(f"server {server_id}: interface {alias} removed")
