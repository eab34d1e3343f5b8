"""``Allow``: which methods a path answers, for OPTIONS and for every 405.

FastAPI keeps one route per path and method, and Starlette answers a wrong method from
the first route whose path matches, so ``OPTIONS /v1/servers`` got a 405 saying only
``GET`` although ``POST`` works too. This middleware collects the methods of every route
matching the path instead: outside ``/placement`` it answers ``OPTIONS`` itself (204 and
``Allow``) and a wrong method with the API's error shape; on ``/placement`` it leaves
Placement's 405 as it is and gives it the complete ``Allow`` header (OpenStack
Placement answers ``OPTIONS`` with a 405, and so does this one).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wattvisor.api.v1_errors import PLACEMENT_PREFIX, error_response

_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
ANSWERS_CACHE_SIZE = 4_096
"""(method, path) pairs whose answer is remembered (LRU): matching a request against
every route took 1-2 ms of the event loop's time per request, the largest cost the
API added in front of a route."""


def _answers(router: Router, scope: Scope, method: str) -> bool:
    probe = {**scope, "method": method}
    return any(route.matches(probe)[0] is Match.FULL for route in router.routes)


def allowed_methods(router: Router, scope: Scope) -> frozenset[str]:
    """The methods some route of ``router`` answers on the path of ``scope`` (empty when
    no route has that path; every method for an ASGI app mounted there)."""
    return frozenset(m for m in _METHODS if _answers(router, scope, m))


class AllowedMethods:
    """Answer ``OPTIONS`` and wrong methods with the full ``Allow`` list of the path."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router
        # (route count, method, root path, path) -> whether some route answers it. The
        # route table is fixed once the app serves; the count keys out a table that
        # grew anyway. Only positive answers are kept: a refused method is the rare case,
        # and remembering every wrong path a client tries would let it fill the cache.
        self._answered: OrderedDict[tuple[int, str, str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def _answered_before(self, scope: Scope, method: str) -> bool:
        key = (len(self.router.routes), method, scope.get("root_path", ""), scope["path"])
        with self._lock:
            if key in self._answered:
                self._answered.move_to_end(key)
                return True
        if not _answers(self.router, scope, method):
            return False
        with self._lock:
            self._answered[key] = None
            if len(self._answered) > ANSWERS_CACHE_SIZE:
                self._answered.popitem(last=False)
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if self._answered_before(scope, method):
            await self.app(scope, receive, send)
            return
        methods = allowed_methods(self.router, scope)
        if not methods:
            await self.app(scope, receive, send)
            return
        placement = path.startswith(PLACEMENT_PREFIX)
        if not placement:
            methods = methods | {"OPTIONS"}
        allow = ", ".join(sorted(methods))
        if placement:

            async def send_with_allow(message: Message) -> None:
                if message["type"] == "http.response.start" and message["status"] == 405:
                    MutableHeaders(scope=message)["Allow"] = allow
                await send(message)

            await self.app(scope, receive, send_with_allow)
            return
        response: Response
        if method == "OPTIONS":
            response = Response(status_code=204, headers={"Allow": allow})
        else:
            response = error_response(
                405, "method_not_allowed",
                f"method {method} is not allowed on {path}; allowed: {allow}",
                {"method": method, "path": path, "allowed": allow}, {"Allow": allow},
            )  # fmt: skip
        await response(scope, receive, send)
