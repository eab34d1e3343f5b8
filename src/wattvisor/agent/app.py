"""The agent's HTTP app: the :class:`~wattvisor.compute.hostclient.HostClient` protocol
of one host, served over its in-process client, to the cluster's controllers only.

Every route requires a controller token of the cluster the host joined
(:func:`wattvisor.agent.credentials.make_controller_dependency`); the wire format is
:mod:`wattvisor.compute.hostclient_wire`. Host calls block (libvirt, files), so each
runs in the thread pool and the event loop keeps answering other controllers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from wattvisor.auth.fastapi import install_auth_errors
from wattvisor.compute.hostclient import HostClient
from wattvisor.compute.hostclient_wire import (
    HOST_ERROR_STATUS,
    WIRE_ERRORS,
    WIRE_TABLE,
    WireError,
    encode_error,
)
from wattvisor.host.driver import HostError

log = logging.getLogger(__name__)

JSON = "application/json"
KNOWN_ERRORS: tuple[type[Exception], ...] = (HostError, *WIRE_ERRORS.values())


def _error(status: int, kind: str, message: str) -> Response:
    body = json.dumps({"error": {"type": kind, "message": message}})
    return Response(body, status_code=status, media_type=JSON)


def create_agent_app(
    host: HostClient, require_controller: Callable[..., Awaitable[Any]]
) -> FastAPI:
    """The app ``wattvisor agent`` serves; ``require_controller`` admits the controllers."""
    app = FastAPI(
        title="wattvisor agent",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(require_controller)],
    )
    install_auth_errors(app)

    @app.post("/v1/host/{method}")
    async def call(method: str, request: Request) -> Response:
        wire = WIRE_TABLE.get(method)
        if wire is None:
            return _error(
                404, "UnknownMethod",
                f"host method {method[:64]!r} is not served by this agent; accepted: "
                f"{', '.join(sorted(WIRE_TABLE))}",
            )  # fmt: skip
        try:
            kwargs = wire.decode_arguments(await request.body())
        except WireError as exc:
            return _error(422, "WireError", str(exc))
        function = getattr(host, method)
        try:
            result = await run_in_threadpool(function, **kwargs)
        except KNOWN_ERRORS as exc:
            return Response(
                json.dumps({"error": encode_error(exc)}),
                status_code=HOST_ERROR_STATUS,
                media_type=JSON,
            )
        except Exception as exc:
            log.exception("host call %s failed", method)
            return Response(
                json.dumps({"error": encode_error(exc)}),
                status_code=HOST_ERROR_STATUS,
                media_type=JSON,
            )
        return Response(wire.encode_result(result), media_type=JSON)

    return app
