"""What every command over the ``/v1`` API shares: the address, the token, the calls, errors.

The API address is ``--url``, ``$WATTVISOR_URL`` or ``http://<api.host>:<api.port>``;
the token is ``$WATTVISOR_TOKEN`` or one minted for an hour from the admin key file
on this machine. Commands built on this hold no business logic: every decision is
the API's, and its error messages reach the user as they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer

from wattvisor.auth.errors import KeyFileError
from wattvisor.auth.keys import mint_token_from_file
from wattvisor.cli.context import fail, state

UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="WATTVISOR_URL", help="API address (default from settings)."),
]
ServerArg = Annotated[str, typer.Argument(help="Server id or unique name.")]
VolumeArg = Annotated[str, typer.Argument(help="Volume id or unique name.")]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def segment(value: str) -> str:
    """``value`` as one path segment, so names with spaces or slashes stay one segment."""
    return quote(value, safe="")


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
            raise fail(f"cannot reach the API at {self.http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = f"{error['message']} ({error['code']}, HTTP {response.status_code})"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {response.status_code}: {response.text[:200]}"
            raise fail(message)
        return response.json() if response.content else None

    def close(self) -> None:
        self.http.close()


@contextmanager
def connect(url: str | None) -> Iterator[ApiClient]:
    """A client of the API at ``url`` (or the configured one) with the caller's token."""
    settings = state.settings()
    base = url or f"http://{settings.api.host}:{settings.api.port}"
    token = os.environ.get("WATTVISOR_TOKEN")
    if not token:
        try:
            token = mint_token_from_file(
                settings.admin_key_path, settings.auth.admin_user, timedelta(hours=1)
            )
        except (KeyFileError, OSError) as exc:
            raise fail(
                f"no token: set WATTVISOR_TOKEN (`wattvisor token create`) or run where the "
                f"admin key {settings.admin_key_path} is readable ({exc})"
            ) from exc
    client = ApiClient(base, token)
    try:
        yield client
    finally:
        client.close()


def is_uuid(value: str) -> bool:
    return _UUID.match(value) is not None


def _resolve(client: ApiClient, ident: str, kind: str) -> str:
    """An id from an id or a unique name of a ``kind`` (server, host) listed at /v1/<kind>s."""
    if is_uuid(ident):
        return ident
    listed: list[dict[str, Any]] = client.call("GET", f"/v1/{kind}s")
    matches = [item["id"] for item in listed if item.get("name") == ident]
    if len(matches) == 1:
        return str(matches[0])
    if not matches:
        raise fail(f"no {kind} named {ident!r}; give a name from `wattvisor {kind} list` or an id")
    raise fail(f"{len(matches)} {kind}s are named {ident!r}; give one of their ids: "
               + ", ".join(matches))  # fmt: skip


def resolve_server(client: ApiClient, ident: str) -> str:
    """A server id from an id or a unique name, as people type them."""
    return _resolve(client, ident, "server")


def resolve_host(client: ApiClient, ident: str) -> str:
    """A host id from an id or a unique name (listing hosts is the API's admin check)."""
    return _resolve(client, ident, "host")


def resolve_volume(client: ApiClient, ident: str) -> str:
    """A volume id from an id or a unique name; the API looks names up among the volumes
    the caller may see and refuses an ambiguous one with the matching ids."""
    if is_uuid(ident):
        return ident
    volume: dict[str, Any] = client.call("GET", f"/v1/volumes/{segment(ident)}")
    return str(volume["id"])
