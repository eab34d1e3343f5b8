"""Placement's error document and the errors only the HTTP layer raises."""

from __future__ import annotations

import uuid as uuidlib
from http import HTTPStatus

from fastapi import Request
from fastapi.responses import JSONResponse

from wattvisor.placement import (
    PlacementError,
)


def _error_response(request: Request, status: int, detail: str, code: str) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) or _new_request_id()
    return JSONResponse(
        status_code=status,
        content={
            "errors": [
                {
                    "status": status,
                    "title": HTTPStatus(status).phrase,
                    "detail": detail,
                    "code": code,
                    "request_id": request_id,
                }
            ]
        },
    )


def placement_error(request: Request, status: int, detail: str, code: str) -> JSONResponse:
    """An error in Placement's shape, for refusals made before a Placement route runs."""
    return _error_response(request, status, detail, code)


def _new_request_id() -> str:
    return f"req-{uuidlib.uuid4()}"


class PlacementUnsupportedMedia(PlacementError):
    status = 415
