"""``wattvisor user ...``: an admin registers people and their public keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from wattvisor.cli.api_client import UrlOption, connect, segment
from wattvisor.cli.context import fail
from wattvisor.cli.output import (
    Column,
    ColumnOption,
    FormatOption,
    JsonOption,
    Output,
    created,
    print_line,
)

user_app = typer.Typer(help="Users and their public keys (admin).", no_args_is_help=True)
USER_COLUMNS = (
    Column("Name", "name", ident=True),
    Column("UUID", "uuid", ident=True),
    Column("Project", "project", ident=True),
    Column("Project UUID", "project_uuid", ident=True),
    Column("Role", "role"),
    Column("Created", "created_at", text=created),
    Column("Public key", "public_key", ident=True, default=False),
)

PROJECT_COLUMNS = (
    Column("Name", "name", ident=True),
    Column("UUID", "uuid", ident=True),
    Column("First used", "created_at", text=created),
)


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
    body = {
        "name": name,
        "project": project,
        "role": role,
        "public_key": _public_key(public_key, public_key_file),
    }
    with connect(url) as client:
        user = client.call("POST", "/v1/users", body)
    print_line(f"user {user['name']} ({user['role']}) in project {user['project']}")


@user_app.command("list")
def list_users(
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Every registered user."""
    output = Output.of(fmt, columns, as_json)
    output.pick(USER_COLUMNS)
    with connect(url) as client:
        users: list[dict[str, Any]] = client.call("GET", "/v1/users")
    output.rows(users, USER_COLUMNS)


@user_app.command("projects")
def list_projects(
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Every project used so far, with the uuid it got on first use."""
    output = Output.of(fmt, columns, as_json)
    output.pick(PROJECT_COLUMNS)
    with connect(url) as client:
        projects: list[dict[str, Any]] = client.call("GET", "/v1/projects")
    output.rows(projects, PROJECT_COLUMNS)


@user_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="User name.")],
    url: UrlOption = None,
) -> None:
    """Remove a user; their tokens stop working at once."""
    with connect(url) as client:
        client.call("DELETE", f"/v1/users/{segment(name)}")
    print_line(f"user {name} deleted")
