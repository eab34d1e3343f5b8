"""Placement's request id, microversion and cache headers, and route gating."""

from __future__ import annotations

import re
from email.utils import formatdate

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wattvisor.api.placement.errors import _error_response, _new_request_id
from wattvisor.api.placement.microversion import (
    MIN_VERSION,
    PREFIX,
    VERSION_HEADER,
    Microversion,
    _microversion,
)
from wattvisor.placement import (
    PlacementError,
)


class PlacementHeaders:
    """Placement's request id and microversion headers, on ``/placement`` requests only.

    A plain ASGI middleware: ``@app.middleware("http")`` would wrap every request of
    the application (``/v1`` too) in Starlette's streaming ``call_next`` machinery.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = state.get("request_id") or _new_request_id()
        state["request_id"] = request_id
        request = Request(scope)
        method = scope["method"]
        path = scope["path"].removeprefix(PREFIX) or "/"
        refusal: tuple[int, str, str] | None = None
        try:
            version = _microversion(request)
        except PlacementError as exc:
            version = Microversion(*MIN_VERSION)
            refusal = (exc.status, exc.detail, exc.code)
        else:
            if not _route_available(method, path, version):
                refusal = (404, "The resource could not be found.", "placement.undefined_code")
            elif method in ("GET", "HEAD") and not _accepts_json(request.headers.get("accept")):
                refusal = (406, "Only application/json is provided", "placement.undefined_code")
        if refusal is not None:
            response = _error_response(request, *refusal)
            _add_placement_headers(response.headers, request_id, version)
            await response(scope, receive, send)
            return
        cached = version.at_least(15) and method in ("GET", "PUT", "POST")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                _add_placement_headers(headers, request_id, version)
                status = message["status"]
                if cached and (
                    status == 200
                    or (path.startswith("/traits/") and status in (201, 204))
                    or (method == "POST" and path.endswith("/inventories") and status == 201)
                ):
                    headers["cache-control"] = "no-cache"
                    headers["last-modified"] = formatdate(usegmt=True)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# (method or "*", path pattern, the first microversion that offers it), as Placement gates.
_GATES: tuple[tuple[str, re.Pattern[str], int], ...] = tuple(
    (method, re.compile(pattern), minor)
    for method, pattern, minor in (
        ("*", r"^/resource_providers/[^/]+/aggregates$", 1),
        ("*", r"^/resource_classes(/[^/]*)?$", 2),
        ("DELETE", r"^/resource_providers/[^/]+/inventories$", 5),
        ("*", r"^/traits(/[^/]*)?$", 6),
        ("*", r"^/resource_providers/[^/]+/traits$", 6),
        ("*", r"^/usages$", 9),
        ("*", r"^/allocation_candidates$", 10),
        ("POST", r"^/allocations$", 13),
        ("*", r"^/reshaper$", 30),
    )
)


def _route_available(method: str, path: str, version: Microversion) -> bool:
    """Whether the route exists at ``version``. A method no Placement route serves
    (OPTIONS, PATCH, ...) is never gated: the router answers it 405 with the path's
    ``Allow`` list at every version, as Placement does."""
    if method not in ("GET", "HEAD", "PUT", "POST", "DELETE"):
        return True
    return all(
        version.at_least(minor)
        for gate_method, pattern, minor in _GATES
        if gate_method in ("*", method) and pattern.match(path)
    )


def _accepts_json(accept: str | None) -> bool:
    if accept is None or not accept.strip():
        return True
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("application/json", "application/*", "*/*"):
            return True
    return False


def _add_placement_headers(headers: MutableHeaders, request_id: str, version: Microversion) -> None:
    headers["openstack-request-id"] = request_id
    headers[VERSION_HEADER] = f"placement {version}"
    headers["Vary"] = VERSION_HEADER.lower()
