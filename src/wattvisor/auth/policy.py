"""Who sees what: the authenticated principal, project visibility and admin-only fields.

Principals are users (roles ``admin`` and ``member``) or joined hosts (role ``host``).
A host may call only its own host endpoints and read image files (:func:`check_route`),
and users may call none of the host endpoints: a host endpoint is answered for the host
that signed the request, never for a user acting as one.

Members act on their own project only, and another project's resources must look
exactly like missing ones (404, never 403), so routes ask :func:`can_see_project`
and answer "not found" on False. Host names, host paths, share source directories
and libvirt URIs are for admins: :func:`redact_for` strips them from responses
(dicts, lists, pydantic models) for everyone else, whatever route built them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.config import JsonDict

from wattvisor.auth.errors import AccessDenied
from wattvisor.auth.users import Role

PrincipalRole = Role | Literal["host"]
"""A user's role (``admin``, ``member``), or ``host`` for a joined host's own token."""
HOST_ENDPOINT = re.compile(r"^/v1/hosts/(?P<host>[^/]+)/(?:heartbeat|credentials|energy)$")
"""The routes a host calls with its own token, for itself (``{host}`` is its id)."""
IMAGE_FILE_ENDPOINT = re.compile(r"^/v1/images/[^/]+/file$")
"""Where hosts (and admins) read an image's disk, kernel or initrd to cache it."""
JOIN_PATH = "/v1/hosts/join"
"""Where a host joins with a join token (no user or host token)."""
JOIN_TOKENS_PATH = "/v1/hosts/join-tokens"
"""Where an admin asks for a join token."""

ADMIN_ONLY_FIELDS: frozenset[str] = frozenset(
    {
        "host",
        "host_name",
        "hypervisor_hostname",
        "compute_host",
        "host_path",
        "host_paths",
        "source_dir",
        "source_path",
        "share_source_dir",
        "data_dir",
        "libvirt_uri",
        "uri",
        "disk_path",
        "console_path",
    }
)
"""Response fields only admins see. Routes may add their own via ``extra_fields``."""

ADMIN_ONLY: JsonDict = {"admin_only": True}
"""Mark a pydantic field admin-only: ``Field(..., json_schema_extra=ADMIN_ONLY)``."""


@dataclass(frozen=True)
class Principal:
    """The verified sender of a request: the user's name, project and role from the registry."""

    user: str
    project: str
    role: PrincipalRole

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_host(self) -> bool:
        """A joined host authenticated by its own key; ``user`` is then its host id."""
        return self.role == "host"


def host_principal(host_uuid: str) -> Principal:
    """The principal of a verified host token: no project, role ``host``."""
    return Principal(user=host_uuid, project="", role="host")


def host_endpoint(path: str) -> str | None:
    """The host id of a host endpoint path (``/v1/hosts/<id>/heartbeat``), else None."""
    match = HOST_ENDPOINT.match(path)
    return match.group("host") if match is not None else None


def check_route(principal: Principal, method: str, path: str) -> None:
    """Refuse (:class:`AccessDenied`, 403) a principal on a route its role may not call.

    Hosts call only their own host endpoints, and ``GET`` an image's files (they fetch
    what they boot); users (admins included) call no host endpoint: an admin who could
    heartbeat for a host could make the controller trust a dead one.
    """
    host = host_endpoint(path)
    if principal.is_host and method == "GET" and IMAGE_FILE_ENDPOINT.match(path):
        return
    if principal.is_host:
        if host is None:
            raise AccessDenied(
                f"a host token (host {principal.user}) may call only that host's own "
                f"endpoints (POST /v1/hosts/{principal.user}/heartbeat, .../credentials, "
                f".../energy) and GET /v1/images/<id>/file; "
                f"{method} {path[:200]} is not one",
                host_id=principal.user,
            )
        if host != principal.user:
            raise AccessDenied(
                f"a host token of host {principal.user} cannot act for host {host[:80]!r}",
                host_id=principal.user,
            )
        return
    if host is not None:
        raise AccessDenied(
            f"{method} {path[:200]} is a host endpoint: it takes the host's own token, not "
            f"the token of user {principal.user!r}",
            user=principal.user,
        )


def can_see_project(principal: Principal, project_id: str) -> bool:
    """True when ``principal`` may see resources of ``project_id`` (admins see every project)."""
    return principal.is_admin or principal.project == project_id


def project_scope(principal: Principal) -> str | None:
    """The project a listing must be filtered to, or None for "every project" (admins)."""
    return None if principal.is_admin else principal.project


def redact_for(principal: Principal, value: Any, extra_fields: Iterable[str] = ()) -> Any:
    """``value`` as ``principal`` may see it: JSON-ready data without admin-only fields.

    Admins get the value unchanged (models dumped to JSON-ready data). For members,
    every mapping key in :data:`ADMIN_ONLY_FIELDS` or ``extra_fields`` and every
    pydantic field marked :data:`ADMIN_ONLY` is dropped, at any depth.
    """
    if principal.is_admin:
        return _dump(value)
    hidden = ADMIN_ONLY_FIELDS | frozenset(extra_fields)
    return _redact(value, hidden)


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_dump(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _dump(item) for key, item in value.items()}
    return value


def _redact(value: Any, hidden: frozenset[str]) -> Any:
    return _redact_pair(value, _dump(value), hidden)


def _redact_pair(raw: Any, dumped: Any, hidden: frozenset[str]) -> Any:
    """Walk the original value (which knows its models' field marks) beside its dump."""
    if isinstance(raw, BaseModel) and isinstance(dumped, dict):
        out: dict[str, Any] = {}
        for name, info in type(raw).model_fields.items():
            key = info.serialization_alias or info.alias or name
            if key not in dumped:
                continue
            extra = info.json_schema_extra
            marked = isinstance(extra, dict) and extra.get("admin_only") is True
            if marked or name in hidden or key in hidden:
                continue
            out[key] = _redact_pair(getattr(raw, name), dumped[key], hidden)
        return out
    if isinstance(raw, Mapping) and isinstance(dumped, dict):
        return {
            key: _redact_pair(raw.get(key), item, hidden)
            for key, item in dumped.items()
            if not (isinstance(key, str) and key in hidden)
        }
    if isinstance(raw, list | tuple) and isinstance(dumped, list) and len(raw) == len(dumped):
        return [_redact_pair(r, d, hidden) for r, d in zip(raw, dumped, strict=True)]
    return dumped
