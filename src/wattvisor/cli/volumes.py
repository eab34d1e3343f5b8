"""``wattvisor volume ...``: block volumes over ``/v1``, attached and detached by alias.

Register with ``app.add_typer(volume_app, name="volume")``. Volumes are local to
their host, so ``create --server`` asks the API to put one next to that server.
An attached volume is the device ``ua-<volume id>``; ``detach`` takes either form.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from wattvisor.cli.api_client import (
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
from wattvisor.cli.context import err

volume_app = typer.Typer(
    help="Volumes: create, list, show, delete, attach to and detach from servers.",
    no_args_is_help=True,
)
ALIAS_PREFIX = "ua-"


def device_alias(volume: str) -> str:
    """The device alias of a volume given by its id or already by its alias."""
    return volume if volume.startswith(ALIAS_PREFIX) else f"{ALIAS_PREFIX}{volume}"


@volume_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Display name of the volume.")],
    size: Annotated[int, typer.Option("--size", help="Size in GiB.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="qcow2 or raw (default: the API's, qcow2).")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Put it on this server's host (id or unique name)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the volume as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Create a volume, on the host of --server if given (so it can be attached there)."""
    body: dict[str, Any] = {"name": name, "size_gb": size}
    if fmt is not None:
        body["format"] = fmt
    with connect(url) as client:
        if server is not None:
            body["server_id"] = resolve_server(client, server)
        volume = client.call("POST", "/v1/volumes", body)
    print_record(volume, as_json)


@volume_app.command("list")
def list_volumes(as_json: JsonOption = False, url: UrlOption = None) -> None:
    """Your project's volumes (every project's for an admin)."""
    with connect(url) as client:
        volumes: list[dict[str, Any]] = client.call("GET", "/v1/volumes")
    if as_json:
        print_json(volumes)
        return
    table = Table("ID", "Name", "Size GiB", "Format", "Status", "Server", "Created", box=None)
    for v in volumes:
        table.add_row(
            v["id"], escape(v["name"]), str(v["size_gb"]), v["format"], v["status"],
            v.get("server_id") or "", v["created_at"][:19].replace("T", " "),
        )  # fmt: skip
    out.print(table)


@volume_app.command("show")
def show(
    volume_id: Annotated[str, typer.Argument(help="Volume id.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """One volume: size, format, status and the server it is attached to."""
    with connect(url) as client:
        volume = client.call("GET", f"/v1/volumes/{segment(volume_id)}")
    print_record(volume, as_json)


@volume_app.command("delete")
def delete(
    volume_id: Annotated[str, typer.Argument(help="Volume id.")],
    url: UrlOption = None,
) -> None:
    """Delete an available (detached) volume and its data."""
    with connect(url) as client:
        client.call("DELETE", f"/v1/volumes/{segment(volume_id)}")
    err.print(f"volume {volume_id} deleted")


@volume_app.command("attach")
def attach(
    server_id: ServerArg,
    volume_id: Annotated[str, typer.Argument(help="Volume id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the volume as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Attach a volume as a virtio disk (serial = volume id, alias ua-<volume id>)."""
    with connect(url) as client:
        server_id = resolve_server(client, server_id)
        volume = client.call("POST", f"/v1/servers/{server_id}/volumes", {"volume_id": volume_id})
    if as_json:
        print_json(volume)
    else:
        err.print(f"volume {volume['id']} attached to server {server_id} as {volume['alias']}")


@volume_app.command("detach")
def detach(
    server_id: ServerArg,
    volume: Annotated[str, typer.Argument(help="Volume id or its alias ua-<volume id>.")],
    url: UrlOption = None,
) -> None:
    """Detach a volume from a server; it becomes available again."""
    alias = device_alias(volume)
    with connect(url) as client:
        server_id = resolve_server(client, server_id)
        client.call("DELETE", f"/v1/servers/{server_id}/volumes/{segment(alias)}")
    err.print(f"volume {alias.removeprefix(ALIAS_PREFIX)} detached from server {server_id}")
