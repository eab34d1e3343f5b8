"""Placement microversions: the ``OpenStack-API-Version`` header and its range."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import Request

from wattvisor.placement import (
    BadRequest,
    PlacementError,
)

PREFIX = "/placement"
MAX_VERSION = (1, 39)
MIN_VERSION = (1, 0)
VERSION_HEADER = "OpenStack-API-Version"
_VERSION_RE = re.compile(r"^placement\s+(latest|\d+\.\d+)$", re.IGNORECASE)


def _location(request: Request, path: str) -> dict[str, str]:
    """A ``Location`` header naming ``PREFIX + path`` as an absolute URL, as Placement sends.

    Clients resolve a path-only location against their Placement endpoint, which already
    ends in ``/placement`` (``openstack resource provider create`` follows it that way).
    """
    return {"Location": f"{str(request.base_url).rstrip('/')}{PREFIX}{path}"}


@dataclass(frozen=True, slots=True)
class Microversion:
    major: int
    minor: int

    def at_least(self, minor: int) -> bool:
        return (self.major, self.minor) >= (1, minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


class VersionNotAcceptable(PlacementError):
    status = 406


def _microversion(request: Request) -> Microversion:
    raw = request.headers.get(VERSION_HEADER)
    if raw is None:
        return Microversion(*MIN_VERSION)
    match = _VERSION_RE.match(raw.strip())
    if match is None:
        # Headers for other services are ignored, as Placement does.
        if not raw.strip().lower().startswith("placement"):
            return Microversion(*MIN_VERSION)
        raise BadRequest(f"invalid version string: {raw}")
    value = match.group(1).lower()
    if value == "latest":
        return Microversion(*MAX_VERSION)
    major, minor = (int(p) for p in value.split("."))
    if not MIN_VERSION <= (major, minor) <= MAX_VERSION:
        raise VersionNotAcceptable(
            f"Unacceptable version header: {value}; this service offers "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} to {MAX_VERSION[0]}.{MAX_VERSION[1]}"
        )
    return Microversion(major, minor)


def script_name(request: Request) -> str:
    """Where the Placement API is served, as links and ``Location`` name it: behind a
    proxy (ASGI ``root_path``) the proxy's prefix comes first, as Placement's links carry
    the WSGI script name."""
    root_path: str = request.scope.get("root_path", "")
    return f"{root_path.rstrip('/')}{PREFIX}"
