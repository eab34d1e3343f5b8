"""What a request passes before a route sees it: the token check and the body size cap.

FastAPI reads and parses a request's body before it resolves the route's dependencies,
so a token checked in a dependency came too late: anyone, without a token, could make
the server read and parse a large body, and a 422 would tell them about the schema.
Here the token is checked from the headers alone, before anything reads the body, and
a body larger than ``api.max_body_bytes`` is refused with 413 as soon as that is known
(at once when ``Content-Length`` says so, else when the counted bytes pass the limit,
chunked bodies included) and the connection is closed instead of read to its end.

Installed outermost first: ``RequestIds`` (:mod:`wattvisor.api.request_ids`),
:class:`AuthenticateFirst`, :class:`BodyLimit`; Placement's own header middleware and
the routes come after.
Refusals use the error shape of the API they were sent to (``/placement`` keeps
Placement's ``{"errors": [...]}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wattvisor.api.placement import PREFIX as PLACEMENT_PREFIX
from wattvisor.api.placement import placement_error
from wattvisor.api.request_threads import run_blocking
from wattvisor.api.v1_errors import error_response
from wattvisor.auth import AccessDenied, AuthError
from wattvisor.auth.fastapi import Authenticator, authorization_of, challenge, require_admin
from wattvisor.auth.policy import JOIN_PATH

V1_PREFIX = "/v1"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def refusal(
    scope: Scope,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error answered before any route ran, in the shape of the API it was sent to."""
    request = Request(scope)
    if _under(scope["path"], PLACEMENT_PREFIX):
        response: Response = placement_error(request, status, message, code)
        response.headers.update(dict(headers or {}))
        return response
    return error_response(status, code, message, details, headers)


def _has_body(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    return headers.get("content-length", "0") not in ("", "0") or (
        "chunked" in headers.get("transfer-encoding", "").lower()
    )


PUBLIC_PATHS = frozenset({PLACEMENT_PREFIX, f"{PLACEMENT_PREFIX}/"})
"""Placement's version document, which clients read before they authenticate."""


class AuthenticateFirst:
    """Checks the bearer token of every ``/v1`` and ``/placement`` request from its headers,
    before anything reads the body; ``/placement`` is for admins only.

    The principal is left in ``request.state.principal``, where the routes' auth
    dependency and the error handlers find it.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not (_under(path, V1_PREFIX) or _under(path, PLACEMENT_PREFIX))
            or path in PUBLIC_PATHS
        ):
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        if scope["method"] == "POST" and path == JOIN_PATH:
            # A host joining holds no user or host token yet, but a join token.
            try:
                joining = await run_blocking(
                    self.authenticator.authenticate_join,
                    authorization_of(Headers(scope=scope)),
                )
            except AuthError as exc:
                headers.update(challenge(exc))
                if _has_body(scope):
                    headers["Connection"] = "close"
                response = refusal(scope, 401, exc.code, exc.message, exc.details, headers)
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["join_token"] = joining
            await self.app(scope, receive, send)
            return
        try:
            # The user lookup reads the store: keep it off the event loop.
            principal = await run_blocking(
                self.authenticator.authenticate,
                scope["method"],
                path,
                authorization_of(Headers(scope=scope)),
            )
            if _under(path, PLACEMENT_PREFIX):
                require_admin(principal)
        except (AuthError, AccessDenied) as exc:
            status = 401 if isinstance(exc, AuthError) else 403
            headers.update(challenge(exc))
            if _has_body(scope):
                headers["Connection"] = "close"  # do not read a body that will not be used
            response = refusal(scope, status, exc.code, exc.message, exc.details, headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """A request body past the limit, found while it was being read (a 413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            status_code=413,
            detail=_too_large_message(max_bytes),
            headers={"Connection": "close"},
        )


def _too_large_message(max_bytes: int) -> str:
    return (
        f"the request body is larger than the {max_bytes} bytes this API accepts "
        "(setting api.max_body_bytes)"
    )


class BodyLimit:
    """Refuses request bodies larger than ``max_bytes`` with 413, without reading them whole.

    A ``Content-Length`` over the limit is answered at once; otherwise the bytes are
    counted as the route reads them, and reading stops with :class:`BodyTooLarge` once
    they pass the limit. Either way the connection is closed afterwards, so the rest
    of the body is never read.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            declared = int(Headers(scope=scope).get("content-length", ""))
        except ValueError:
            declared = None
        if declared is not None and declared > self.max_bytes:
            response = refusal(
                scope, 413, "too_large", _too_large_message(self.max_bytes),
                {"max_body_bytes": self.max_bytes, "content_length": declared},
                {"Connection": "close"},
            )  # fmt: skip
            await response(scope, receive, send)
            return
        received = 0
        exceeded = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def closing_send(message: Message) -> None:
            if exceeded and message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Connection"] = "close"
            await send(message)

        await self.app(scope, counted_receive, closing_send)
