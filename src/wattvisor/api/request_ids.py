"""Every request gets an id (``req-<uuid>``), answered in ``X-Request-Id``.

Errors that hide details from members quote it, and the log line holding those
details carries it, so that an admin can find what a member was not shown.
Placement's ``openstack-request-id`` carries the same id.
"""

from __future__ import annotations

import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-Id"


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


def request_id(request: Request) -> str:
    """The id :class:`RequestIds` gave ``request`` (a new one outside that middleware)."""
    state = request.scope.setdefault("state", {})
    value = state.get("request_id")
    if not isinstance(value, str):
        value = state["request_id"] = new_request_id()
    return value


class RequestIds:
    """The outermost middleware: names each request before anything else looks at it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = new_request_id()
        scope.setdefault("state", {})["request_id"] = value

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = value
            await send(message)

        await self.app(scope, receive, send_with_id)
