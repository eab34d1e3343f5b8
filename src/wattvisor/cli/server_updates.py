"""``wattvisor server rename|set|resize``: change a server that exists.

Register with ``add_server_update_commands(server_app)``. Like the other server
commands these only call the API; it decides, and its errors are shown as they are.
"""

from __future__ import annotations

from typing import Annotated

import typer

from wattvisor.cli.api_client import ServerArg, UrlOption, connect, resolve_server
from wattvisor.cli.context import fail, say
from wattvisor.cli.output import print_json
from wattvisor.cli.wait_progress import describe, wait_for

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the server as JSON.")]


def rename(
    server_id: ServerArg,
    name: Annotated[str, typer.Argument(help="The new display name.")],
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Give a server a new display name (the domain on its host keeps its own name)."""
    _rename(server_id, name, as_json, url)


def set_properties(
    server_id: ServerArg,
    name: Annotated[str | None, typer.Option("--name", help="The new display name.")] = None,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Change a server's properties (today: its name)."""
    if name is None:
        raise fail("nothing to change; give --name NEW")
    _rename(server_id, name, as_json, url)


def _rename(ident: str, name: str, as_json: bool, url: str | None) -> None:
    with connect(url) as client:
        server_id = resolve_server(client, ident)
        server = client.call("PATCH", f"/v1/servers/{server_id}", {"name": name})
    if as_json:
        print_json(server)
    else:
        say(f"server {server_id}: renamed to {server['name']!r}")


def resize(
    server_id: ServerArg,
    flavor: Annotated[str, typer.Argument(help="Flavor id or name to resize to.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the resize ends.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 300.0,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Move a server to another flavor on its own host (stopped, redefined, started)."""
    with connect(url) as client:
        server_id = resolve_server(client, server_id)
        server = client.call("POST", f"/v1/servers/{server_id}/resize", {"flavor": flavor})
        if wait:
            server = wait_for(client, server_id, "resizing", timeout)
    if as_json:
        print_json(server)
    else:
        say(f"server {server_id}: {describe(server)}")
    if wait and server.get("fault"):
        raise fail(f"server {server_id}: {server['fault']}")


def add_server_update_commands(app: typer.Typer) -> None:
    """Add rename, set and resize to the ``server`` command group."""
    app.command("rename")(rename)
    app.command("set")(set_properties)
    app.command("resize")(resize)
