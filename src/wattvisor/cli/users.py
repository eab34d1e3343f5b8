"""``wattvisor user ...``: an admin registers people and their public keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from wattvisor.cli.api_client import UrlOption, connect
from wattvisor.cli.context import fail

user_app = typer.Typer(help="Users and their public keys (admin).", no_args_is_help=True)
out = Console()


def _public_key(value: str | None, key_file: Path | None) -> str:
    if (value is None) == (key_file is None):
        raise fail("give the public key with exactly one of --public-key or --public-key-file")
    if key_file is not None:
        try:
            return key_file.read_text().strip()
        except OSError as exc:
            raise fail(f"cannot read public key file {str(key_file)!r}: {exc}") from exc
    assert value is not None
    return value.strip()


@user_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="User name (what their tokens say).")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project id.")],
    public_key: Annotated[
        str | None, typer.Option("--public-key", help="'ed25519/<hex>' from `keys create`.")
    ] = None,
    public_key_file: Annotated[
        Path | None, typer.Option("--public-key-file", help="File holding the public key.")
    ] = None,
    role: Annotated[str, typer.Option("--role", help="member or admin.")] = "member",
    url: UrlOption = None,
) -> None:
    """Register a user; they then mint their own tokens with `wattvisor token create`."""
    body = {"name": name, "project": project, "role": role,
            "public_key": _public_key(public_key, public_key_file)}
    with connect(url) as client:
        user = client.call("POST", "/v1/users", body)
    out.print(f"user {user['name']} ({user['role']}) in project {user['project']}")


@user_app.command("list")
def list_users(url: UrlOption = None) -> None:
    """Every registered user."""
    with connect(url) as client:
        users: list[dict[str, Any]] = client.call("GET", "/v1/users")
    table = Table("Name", "Project", "Role")
    for user in users:
        table.add_row(user["name"], user["project"], user["role"])
    out.print(table)


@user_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="User name.")],
    url: UrlOption = None,
) -> None:
    """Remove a user; their tokens stop working at once."""
    with connect(url) as client:
        client.call("DELETE", f"/v1/users/{name}")
    out.print(f"user {name} deleted")
