"""``wattvisor server ...``: a thin HTTP client of the ``/v1`` servers and interfaces.

Register with ``app.add_typer(server_app, name="server")``. Address, token and
errors come from :mod:`wattvisor.cli.api_client`; every decision is the API's,
and its error messages are shown as they are.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from wattvisor.cli.api_client import (
    ApiClient,
    ServerArg,
    UrlOption,
    connect,
    resolve_server,
    segment,
)
from wattvisor.cli.console_log import console_log
from wattvisor.cli.context import fail, say
from wattvisor.cli.output import (
    Column,
    ColumnOption,
    FormatOption,
    JsonOption,
    Output,
    OutputFormat,
    created,
    print_json,
    yes_no,
)
from wattvisor.cli.wait_progress import FINAL_STATUSES, describe, wait_for

__all__ = ["FINAL_STATUSES", "server_app"]

server_app = typer.Typer(
    help="Servers: create, list, show, stop, start, delete; their interfaces and metadata.",
    no_args_is_help=True,
)
SERVER_COLUMNS = (
    Column("ID", "id", ident=True),
    Column("Name", "name"),
    Column("Status", "status"),
    Column("Task", "task"),
    Column("Flavor", "flavor_name"),
    Column("Image", "image_name"),
    Column("Networks", "addresses"),
    Column("Power metrics", "power_metrics", text=yes_no),
    Column("Created", "created_at", text=created),
    Column("Flavor ID", "flavor_id", ident=True, default=False),
    Column("Image ID", "image_id", ident=True, default=False),
    Column("Project", "project", default=False),
    Column("Fault", "fault", default=False),
)
INTERFACE_COLUMNS = (
    Column("Alias", "alias", ident=True),
    Column("MAC", "mac", ident=True),
    Column("Model", "model"),
    Column("Kind", "kind"),
    Column("Created", "created_at", text=created),
    Column("ID", "id", ident=True, default=False),
)


def _catalog_names(client: ApiClient) -> tuple[dict[str, str], dict[str, str]]:
    """Flavor and image names by id (two requests, whatever the number of servers)."""
    flavors = {f["id"]: f["name"] for f in client.call("GET", "/v1/flavors")}
    images = {i["id"]: i["name"] for i in client.call("GET", "/v1/images")}
    return flavors, images


def with_names(
    server: dict[str, Any], flavors: dict[str, str], images: dict[str, str]
) -> dict[str, Any]:
    """``server`` with ``flavor_name`` after ``flavor_id`` and ``image_name`` after ``image_id``
    (empty when the flavor or image has been deleted since)."""
    named: dict[str, Any] = {}
    for key, value in server.items():
        named[key] = value
        if key == "flavor_id":
            named["flavor_name"] = flavors.get(value, "")
        elif key == "image_id":
            named["image_name"] = images.get(value, "")
    return named


def networks_text(addresses: Any) -> str:
    """``net=10.0.0.2, fd00::2`` per network (``; `` between networks), as Nova's CLI."""
    if not isinstance(addresses, dict):
        return ""
    return "; ".join(
        f"{network}={', '.join(str(a.get('addr', '')) for a in listed if isinstance(a, dict))}"
        for network, listed in addresses.items()
        if isinstance(listed, list)
    )


def _named(client: ApiClient, server: dict[str, Any]) -> dict[str, Any]:
    return with_names(server, *_catalog_names(client))


@server_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Display name of the server.")],
    flavor: Annotated[str, typer.Option("--flavor", "-f", help="Flavor name or id.")],
    image: Annotated[str, typer.Option("--image", "-i", help="Image name or id.")],
    power_metrics: Annotated[
        bool, typer.Option("--power-metrics", help="Share its own energy counter with the guest.")
    ] = False,
    boot_volume: Annotated[
        str | None,
        typer.Option("--boot-volume", help="Boot from this volume (name or id) as root disk."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until ACTIVE or ERROR.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 300.0,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Create a server; with --wait, follow it until it is ACTIVE (exit 1 on ERROR).

    The new server's id is printed on stderr as soon as the API accepts it, so it is
    known even if the wait is cut short."""
    output = Output.of(None, None, as_json)
    body: dict[str, Any] = {"name": name, "flavor": flavor, "image": image}
    if power_metrics:
        body["power_metrics"] = True
    if boot_volume is not None:
        body["boot_volume"] = boot_volume
    with connect(url) as client:
        server = client.call("POST", "/v1/servers", body)
        if wait:
            say(f"server {server['name']} accepted: id {server['id']}, {describe(server)}")
            server = wait_for(client, server["id"], "building", timeout)
        server = _named(client, server)
    output.record(server)
    if server["status"] == "ERROR":
        raise fail(f"server {server['id']} failed: {server.get('fault')}")


@server_app.command("list")
def list_servers(
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Your project's servers (every project's for an admin)."""
    output = Output.of(fmt, columns, as_json)
    output.pick(SERVER_COLUMNS)
    with connect(url) as client:
        servers: list[dict[str, Any]] = client.call("GET", "/v1/servers")
        flavors, images = _catalog_names(client)
    if output.fmt is not OutputFormat.json:
        servers = [{**s, "addresses": networks_text(s.get("addresses"))} for s in servers]
    output.rows([with_names(s, flavors, images) for s in servers], SERVER_COLUMNS)


@server_app.command("show")
def show(
    server_id: ServerArg,
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """One server with its status, fault, and flavor and image names next to their ids."""
    output = Output.of(fmt, columns, as_json)
    with connect(url) as client:
        server = client.call("GET", f"/v1/servers/{resolve_server(client, server_id)}")
        server = _named(client, server)
    if output.fmt is not OutputFormat.json and "addresses" in server:
        server["addresses"] = networks_text(server["addresses"])
    output.record(server)


@server_app.command("delete")
def delete(
    server_id: ServerArg,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is DELETED.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 120.0,
    url: UrlOption = None,
) -> None:
    """Delete a server (its guest, resources, files and energy total)."""
    with connect(url) as client:
        server_id = resolve_server(client, server_id)
        server = client.call("DELETE", f"/v1/servers/{server_id}")
        if wait:
            server = wait_for(client, server_id, "deleting", timeout)
    say(f"server {server_id}: {describe(server)}")


def _power_action(
    action: str, label: str, ident: str, wait: bool, timeout: float, as_json: bool, url: str | None
) -> None:
    """POST ``/v1/servers/{id}/<action>``; with ``wait``, follow the task to its end."""
    with connect(url) as client:
        server_id = resolve_server(client, ident)
        server = client.call("POST", f"/v1/servers/{server_id}/{action}")
        if wait:
            server = wait_for(client, server_id, label, timeout)
    if as_json:
        print_json(server)
    else:
        say(f"server {server_id}: {describe(server)}")
    if server["status"] == "ERROR":
        raise fail(f"server {server_id} failed: {server.get('fault')}")


MIGRATION_FINAL = frozenset({"done", "failed", "cancelled"})


def _migration_line(migration: dict[str, Any]) -> str:
    line = f"migration {migration['id']}: {migration['state']} {migration['progress']}%"
    if migration.get("vni") is not None:
        line += f" (vni {migration['vni']}, {migration['subnet']})"
    if migration.get("fault"):
        line += f": {migration['fault']}"
    return line


@server_app.command("migrate")
def migrate(
    server_id: ServerArg,
    host: Annotated[
        str | None, typer.Option("--host", help="Target host id or name; default: scheduler.")
    ] = None,
    no_tunnel: Annotated[
        bool, typer.Option("--no-tunnel", help="Send the memory without a VXLAN tunnel.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it, showing the memory sent, to its end.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 900.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the migration as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Live-migrate a server to another host (admin); exit 1 when it fails."""
    body: dict[str, Any] = {"tunnel": not no_tunnel}
    if host is not None:
        body["host"] = host
    with connect(url) as client:
        server_id = resolve_server(client, server_id)
        migration = client.call("POST", f"/v1/servers/{server_id}/migrate", body)
        say(_migration_line(migration))
        if wait:
            migration = _follow_migration(client, server_id, timeout)
    if as_json:
        print_json(migration)
    else:
        say(_migration_line(migration))
    if migration["state"] == "failed":
        raise fail(f"server {server_id} did not migrate: {migration.get('fault')}")


def _follow_migration(client: ApiClient, server_id: str, timeout: float) -> dict[str, Any]:
    """Poll the migration until it ends, printing each change of state or percent."""
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        migration: dict[str, Any] = client.call("GET", f"/v1/servers/{server_id}/migration")
        line = _migration_line(migration)
        if line != shown:
            say(line)
            shown = line
        if migration["state"] in MIGRATION_FINAL:
            return migration
        if time.monotonic() > deadline:
            raise fail(f"migration of server {server_id} still {migration['state']} after "
                       f"{timeout:g} s; it goes on (see `wattvisor server migration`)")  # fmt: skip
        time.sleep(MIGRATION_POLL_S)


MIGRATION_POLL_S = 0.5


@server_app.command("migration")
def migration_show(
    server_id: ServerArg,
    cancel: Annotated[
        bool, typer.Option("--cancel", help="Cancel it; the server stays on its source.")
    ] = False,
    url: UrlOption = None,
) -> None:
    """Show the server's latest migration (admin), or cancel the running one."""
    with connect(url) as client:
        server_id = resolve_server(client, server_id)
        method = "DELETE" if cancel else "GET"
        migration = client.call(method, f"/v1/servers/{server_id}/migration")
    print_json(migration)


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
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Add a NIC (generated MAC, alias ua-<port id>) on the configured network."""
    output = Output.of(None, None, as_json)
    body = {"model": model} if model is not None else None
    with connect(url) as client:
        interface = client.call(
            "POST", f"/v1/servers/{resolve_server(client, server_id)}/interfaces", body
        )
    output.record(interface)


@server_app.command("interfaces")
def interfaces(
    server_id: ServerArg,
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """The NICs added to a server, with the aliases `interface-remove` takes."""
    output = Output.of(fmt, columns, as_json)
    output.pick(INTERFACE_COLUMNS)
    with connect(url) as client:
        found: list[dict[str, Any]] = client.call(
            "GET", f"/v1/servers/{resolve_server(client, server_id)}/interfaces"
        )
    output.rows(found, INTERFACE_COLUMNS)


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
    say(f"server {server_id}: interface {alias} removed")


# -- console ----------------------------------------------------------------------------

server_app.command("console-log")(console_log)
