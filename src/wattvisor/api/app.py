"""The HTTP API application of ``wattvisor up``.

``create_app`` wires services to routers; each area mounts its own router, so adding an
area means one more ``install``/``include_router`` call here, not a new application.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, params

from wattvisor.api import placement_routes
from wattvisor.api.allowed_methods import AllowedMethods
from wattvisor.api.v1_errors import install_v1_errors
from wattvisor.config.settings import Settings
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate


def create_app(
    settings: Settings,
    *,
    placement: Placement | None = None,
    routers: Sequence[APIRouter] = (),
    placement_dependencies: Sequence[params.Depends] = (),
) -> FastAPI:
    """Build the API for ``settings``.

    Without ``placement`` the store at ``settings.store_url`` is migrated to the newest
    schema and used; pass one to share a service (and its index) with other components.
    ``placement_dependencies`` run before every ``/placement`` route (e.g. an admin-token
    check once authentication exists). Every route outside ``/placement`` answers errors
    as ``{"error": {"code", "message", "details"}}``.
    """
    if placement is None:
        engine = make_engine(settings.store_url)
        migrate(engine)
        placement = Placement(engine)
    app = FastAPI(title="wattvisor", version="0.1.0")
    app.state.settings = settings
    app.state.placement = placement
    placement_routes.install(app, placement, dependencies=placement_dependencies)
    for router in routers:
        app.include_router(router)
    install_v1_errors(app)
    app.add_middleware(AllowedMethods, router=app.router)
    return app
