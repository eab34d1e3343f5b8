"""``wattvisor volume ...``: block volumes over ``/v1``, attached and detached by alias.

Register with ``app.add_typer(volume_app, name="volume")``. Volumes are local to
their host, so ``create --server`` asks the API to put one next to that server.
An attached volume is the device ``ua-<volume id>``; ``detach`` takes either form.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from wattvisor.cli.api_client import (
    ServerArg,
    UrlOption,
    VolumeArg,
    connect,
    resolve_server,
    resolve_volume,
    segment,
)
from wattvisor.cli.context import say
from wattvisor.cli.output import (
    Column,
    ColumnOption,
    FormatOption,
    JsonOption,
    Output,
    created,
    print_json,
)

volume_app = typer.Typer(
    help="Volumes: create, list, show, delete, attach to and detach from servers.",
    no_args_is_help=True,
)
ALIAS_PREFIX = "ua-"
VOLUME_COLUMNS = (
    Column("ID", "id", ident=True),
    Column("Name", "name"),
    Column("Size GiB", "size_gb", right=True),
    Column("Format", "format"),
    Column("Status", "status"),
    Column("Server", "server_id", ident=True),
    Column("Created", "created_at", text=created),
    Column("Alias", "alias", ident=True, default=False),
    Column("Project", "project", default=False),
)


@volume_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Display name of the volume.")],
    size: Annotated[int, typer.Option("--size", help="Size in GiB.")],
    volume_format: Annotated[
        str | None, typer.Option("--format", help="qcow2 or raw (default: the API's, qcow2).")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Put it on this server's host (id or unique name)."),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Create a volume, on the host of --server if given (so it can be attached there)."""
    output = Output.of(None, None, as_json)
    body: dict[str, Any] = {"name": name, "size_gb": size}
    if volume_format is not None:
        body["format"] = volume_format
    with connect(url) as client:
        if server is not None:
            body["server_id"] = resolve_server(client, server)
        volume = client.call("POST", "/v1/volumes", body)
    output.record(volume)


@volume_app.command("list")
def list_volumes(
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Your project's volumes (every project's for an admin)."""
    output = Output.of(fmt, columns, as_json)
    output.pick(VOLUME_COLUMNS)
    with connect(url) as client:
        volumes: list[dict[str, Any]] = client.call("GET", "/v1/volumes")
    output.rows(volumes, VOLUME_COLUMNS)


@volume_app.command("show")
def show(
    volume: VolumeArg,
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """One volume: size, format, status and the server it is attached to."""
    output = Output.of(fmt, columns, as_json)
    with connect(url) as client:
        found = client.call("GET", f"/v1/volumes/{segment(volume)}")
    output.record(found)


@volume_app.command("delete")
def delete(
    volume: VolumeArg,
    url: UrlOption = None,
) -> None:
    """Delete an available (detached) volume and its data."""
    with connect(url) as client:
        volume_id = resolve_volume(client, volume)
        client.call("DELETE", f"/v1/volumes/{segment(volume_id)}")
    say(f"volume {volume_id} deleted")


@volume_app.command("attach")
def attach(
    server_id: ServerArg,
    volume: VolumeArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the volume as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Attach a volume as a virtio disk (serial = volume id, alias ua-<volume id>)."""
    with connect(url) as client:
        server_id = resolve_server(client, server_id)
        attached = client.call("POST", f"/v1/servers/{server_id}/volumes", {"volume_id": volume})
    if as_json:
        print_json(attached)
    else:
        say(f"volume {attached['id']} attached to server {server_id} as {attached['alias']}")


@volume_app.command("detach")
def detach(
    server_id: ServerArg,
    volume: Annotated[
        str, typer.Argument(help="Volume id, unique name, or its alias ua-<volume id>.")
    ],
    url: UrlOption = None,
) -> None:
    """Detach a volume from a server; it becomes available again."""
    with connect(url) as client:
        server_id = resolve_server(client, server_id)
        # An alias goes to the API as it is: its refusal lists the server's aliases.
        alias = (
            volume
            if volume.startswith(ALIAS_PREFIX)
            else ALIAS_PREFIX + resolve_volume(client, volume)
        )
        client.call("DELETE", f"/v1/servers/{server_id}/volumes/{segment(alias)}")
    say(f"volume {alias.removeprefix(ALIAS_PREFIX)} detached from server {server_id}")
