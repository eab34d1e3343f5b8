"""The Placement-compatible HTTP API (OpenStack Placement 1.39), mounted at ``/placement``.

Paths, bodies, status codes and error codes follow Placement's API reference so that
tools written for Placement work unchanged, checked by Placement's own gabbi tests
(tests/placement_gabbi). Each feature answers from the microversion Placement added it
in: provider trees and aggregates, sharing providers, request groups with
``group_policy``, ``same_subtree`` and ``root_required``, mappings, consumer types and
the reshaper. Allocation candidates are computed over a snapshot of the provider trees
(:mod:`wattvisor.placement.trees`); the in-process scheduler keeps its flat index.

One module per resource, as Placement's own handlers are laid out; each offers
``router(placement)``. Shared: :mod:`.microversion`, :mod:`.errors`, :mod:`.headers`,
:mod:`.bodies` and :mod:`.queries`.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, Request, Response, params
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException

from wattvisor.api.placement import (
    aggregates,
    allocation_candidates,
    allocations,
    inventories,
    reshaper,
    resource_classes,
    resource_providers,
    traits,
    usages,
)
from wattvisor.api.placement.errors import _error_response, placement_error
from wattvisor.api.placement.headers import PlacementHeaders
from wattvisor.api.placement.microversion import PREFIX
from wattvisor.api.placement.root import versions_router
from wattvisor.placement import Placement, PlacementError

__all__ = ["PREFIX", "build_router", "install", "placement_error", "versions_router"]

# Registration order is route matching order.
_RESOURCES = (
    resource_providers,
    aggregates,
    inventories,
    allocations,
    traits,
    usages,
    resource_classes,
    reshaper,
    allocation_candidates,
)


def build_router(placement: Placement, dependencies: Sequence[params.Depends] = ()) -> APIRouter:
    """All Placement routes over ``placement``, to be mounted at ``PREFIX``."""
    router = APIRouter(prefix=PREFIX, tags=["placement"], dependencies=list(dependencies))
    for resource in _RESOURCES:
        router.include_router(resource.router(placement))
    return router


def install(
    app: FastAPI, placement: Placement, dependencies: Sequence[params.Depends] = ()
) -> None:
    """Mount the Placement API on ``app`` with Placement's headers and error format."""
    app.include_router(versions_router())
    app.include_router(build_router(placement, dependencies))

    app.add_middleware(PlacementHeaders)

    @app.exception_handler(PlacementError)
    async def on_placement_error(request: Request, exc: PlacementError) -> Response:
        return _error_response(request, exc.status, exc.detail, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(PREFIX):
            detail = str(exc.detail)
            if exc.status_code == 405:
                detail = f"The method {request.method} is not allowed for this resource."
            elif exc.status_code == 404 and detail == "Not Found":
                detail = "The resource could not be found."
            return _error_response(request, exc.status_code, detail, "placement.undefined_code")
        return await http_exception_handler(request, exc)
