"""One error shape for everything outside ``/placement``: ``{"error": {"code", "message",
"details"}}``, for the service's errors, request validation, unknown routes and methods,
and unexpected failures alike. ``/placement`` keeps Placement's own format.

This is also where members and admins part: an error carrying a host's own words
(host names, paths, libvirt domain names) reaches admins as it is, and members as a
plain statement of what failed plus the request id, under which the full text is
logged. The choice is made by the sender's role, never by filtering the text. Values
echoed from a refused request are cut short and shown with control characters escaped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wattvisor.api.request_ids import REQUEST_ID_HEADER, request_id
from wattvisor.auth import Principal
from wattvisor.compute import ComputeError
from wattvisor.compute.names import visible

log = logging.getLogger(__name__)

PLACEMENT_PREFIX = "/placement"
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def _accepted(error: dict[str, Any]) -> str | None:
    """What the validator would have accepted, from pydantic's error context."""
    ctx = error.get("ctx") or {}
    for key, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            return f"{symbol} {ctx[key]}"
    if "expected" in ctx:
        return str(ctx["expected"])
    if "min_length" in ctx or "max_length" in ctx:
        low, high = ctx.get("min_length", 0), ctx.get("max_length", "any")
        return f"length {low} to {high}"
    if error.get("type") == "extra_forbidden":
        return "no such field; see the OpenAPI document at /openapi.json"
    if error.get("type") == "missing":
        return "a value (the field is required)"
    return None


def echoed(value: Any) -> Any:
    """A refused value as an error may show it: numbers as they are, text cut short and
    with control and format characters escaped (the body itself may be a megabyte)."""
    if (
        value is None
        or isinstance(value, bool | float)
        or (isinstance(value, int) and abs(value) < 10**18)
    ):
        return value
    return visible(value if isinstance(value, str) else repr(value)[:200])


def validation_problems(exc: RequestValidationError) -> list[dict[str, Any]]:
    problems = []
    for error in exc.errors():
        loc = [visible(str(p)) for p in error.get("loc", ())]
        field = ".".join(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)
        problem: dict[str, Any] = {
            "field": field or "body",
            "in": loc[0] if loc else "body",
            "message": visible(str(error.get("msg", "invalid")), 1000),
            "value": echoed(error.get("input")),
        }
        accepted = _accepted(error)
        if accepted is not None:
            problem["accepted"] = accepted
        problems.append(problem)
    return problems


def _is_admin(request: Request) -> bool:
    """Whether the request was sent by an admin (unknown senders count as members)."""
    principal = getattr(request.state, "principal", None)
    return isinstance(principal, Principal) and principal.is_admin


def install_v1_errors(app: FastAPI) -> None:
    """Give every non-Placement error the API's shape (call after the Placement routes)."""
    placement_handler = app.exception_handlers.get(StarletteHTTPException)

    async def compute_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ComputeError)
        if not exc.host_detail:
            # Details repeat refused values (ids from the URL path among them) as given.
            details = {k: echoed(v) if isinstance(v, str) else v for k, v in exc.details.items()}
            return error_response(exc.status, exc.code, exc.message, details)
        rid = request_id(request)
        log.warning(
            "request %s: %s %s failed on a host: %s (%s)",
            rid, request.method, request.url.path, exc.message, exc.details,
        )  # fmt: skip
        if _is_admin(request):
            return error_response(
                exc.status, exc.code, exc.message, {**exc.details, "request_id": rid}
            )
        return error_response(
            exc.status,
            exc.code,
            f"{exc.public_message}; an admin can find what the host said under request id {rid}",
            {"request_id": rid},
        )

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if request.url.path.startswith(PLACEMENT_PREFIX):
            return await request_validation_exception_handler(request, exc)
        problems = validation_problems(exc)
        summary = "; ".join(
            f"{p['field']}: {p['message']}"
            + (f" (accepted: {p['accepted']})" if "accepted" in p else "")
            for p in problems
        )
        return error_response(
            422, "invalid_request", f"the request is not valid: {summary}", {"problems": problems}
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith(PLACEMENT_PREFIX) and placement_handler is not None:
            handler: Callable[[Request, Exception], Awaitable[Response]] = placement_handler  # type: ignore[assignment]
            return await handler(request, exc)
        status = exc.status_code
        path = visible(request.url.path, 200)
        details: dict[str, Any] = {"method": request.method, "path": path}
        if isinstance(exc.detail, dict) and "error" in exc.detail:
            return JSONResponse(exc.detail, status_code=status, headers=exc.headers)
        if status == 404:
            message = f"no such resource: {request.method} {path}"
        elif status == 405:
            allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
            message = f"method {request.method} is not allowed on {path}"
            if allowed:
                details["allowed"] = allowed
                message += f"; allowed: {allowed}"
        else:
            message = str(exc.detail)
        return error_response(
            status, _HTTP_CODES.get(status, f"http_{status}"), message, details, exc.headers
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        rid = request_id(request)
        log.exception(
            "request %s: unexpected error on %s %s", rid, request.method, request.url.path
        )
        return error_response(
            500,
            "internal_error",
            f"the server failed on {request.method} {visible(request.url.path, 200)}; an admin "
            f"can find why under request id {rid}",
            {"request_id": rid},
            # Starlette answers unexpected errors outside every middleware, RequestIds too.
            {REQUEST_ID_HEADER: rid},
        )

    app.add_exception_handler(ComputeError, compute_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
