"""Who sees what: the authenticated principal, project visibility and admin-only fields.

Members act on their own project only, and another project's resources must look
exactly like missing ones (404, never 403), so routes ask :func:`can_see_project`
and answer "not found" on False. Host names, host paths, share source directories
and libvirt URIs are for admins: :func:`redact_for` strips them from responses
(dicts, lists, pydantic models) for everyone else, whatever route built them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.config import JsonDict

from wattvisor.auth.users import Role

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
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


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
