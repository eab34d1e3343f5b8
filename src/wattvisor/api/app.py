"""The HTTP API application of ``wattvisor up``.

``create_app`` wires services to routers; each area mounts its own router, so adding an
area means one more ``install``/``include_router`` call here, not a new application.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, params
from sqlalchemy import Engine
from starlette.middleware.cors import CORSMiddleware
from starlette.types import StatelessLifespan

from wattvisor.api import dashboard_routes
from wattvisor.api import placement as placement_api
from wattvisor.api.allowed_methods import AllowedMethods
from wattvisor.api.request_guards import AuthenticateFirst, BodyLimit
from wattvisor.api.request_ids import RequestIds
from wattvisor.api.v1_errors import install_v1_errors
from wattvisor.auth.fastapi import Authenticator, install_auth_errors
from wattvisor.config.settings import Settings
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate


def create_app(
    settings: Settings,
    *,
    placement: Placement | None = None,
    routers: Sequence[APIRouter] = (),
    placement_dependencies: Sequence[params.Depends] = (),
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """Build the API for ``settings``.

    Without ``placement`` the store at ``settings.store_url`` is migrated to the newest
    schema and used; pass one to share a service (and its index) with other components.
    ``placement_dependencies`` run before every ``/placement`` route (e.g. an admin-token
    check once authentication exists). Every route outside ``/placement`` answers errors
    as ``{"error": {"code", "message", "details"}}``.

    With ``authenticator``, every ``/v1`` and ``/placement`` request must carry a valid
    token (``/placement`` an admin's), checked before anything reads its body. Bodies
    over ``api.max_body_bytes`` are refused with 413; every response carries an
    ``X-Request-Id``.
    """
    owned: Engine | None = None
    if placement is None:
        owned = make_engine(settings.store_url)
        migrate(owned)
        placement = Placement(owned)
    app = FastAPI(title="wattvisor", version="0.1.0", lifespan=_disposing(owned))
    app.state.settings = settings
    app.state.placement = placement
    # The given routers before Placement's: a request is matched against the routes in
    # order, and the hot paths (hosts' heartbeats and pushes) are under /v1. No route
    # of one answers a path of the other (/placement against /v1).
    for router in routers:
        app.include_router(router)
    placement_api.install(app, placement, dependencies=placement_dependencies)
    dashboard_routes.install(app)
    install_v1_errors(app)
    # The last added runs first: ids, then the methods a path allows (OPTIONS and 405
    # say no more than /openapi.json), then the token, then the body cap.
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)
    if authenticator is not None:
        install_auth_errors(app)
        app.add_middleware(AuthenticateFirst, authenticator=authenticator)
    app.add_middleware(AllowedMethods, router=app.router)
    app.add_middleware(RequestIds)
    if settings.api.cors_allowed_origins:
        # Outermost: a browser's preflight is answered before any token is asked for.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_allowed_origins,
            allow_methods=list(CORS_METHODS),
            allow_headers=["*"],
            expose_headers=list(CORS_EXPOSED_HEADERS),
        )
    return app


CORS_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD")
"""The methods a cross-origin page may use (Placement's CORS defaults)."""
CORS_EXPOSED_HEADERS = ("X-Request-Id", "OpenStack-Request-Id", "OpenStack-API-Version")
"""Response headers a cross-origin page may read."""


def _disposing(engine: Engine | None) -> StatelessLifespan[FastAPI]:
    """The app's lifespan: the store engine it made itself is disposed when it shuts down.

    Its pooled connections hold the database file (or a socket) open until then; an
    engine that a caller passed in with its service stays the caller's to dispose.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if engine is not None:
                engine.dispose()

    return lifespan
