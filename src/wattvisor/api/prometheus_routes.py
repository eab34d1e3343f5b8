"""Prometheus discovery and service metrics over ``/v1/prometheus``.

- ``GET /v1/prometheus/agents`` (admin): every joined agent's ``/metrics``.
- ``GET /v1/prometheus/targets``: exporters inside ACTIVE VMs
  (``prometheus_exporter_port``). A member gets their own project's targets without
  the ``host`` label; an admin gets every project's, with it.
- ``GET /v1/prometheus/metrics`` (admin): the service metrics
  (``wattvisor_server_info``, ``wattvisor_server_service_template``).

Both lists are in Prometheus' ``http_sd_configs`` format and read from the store at
each request, so any controller answers the same.

(No ``from __future__ import annotations``: FastAPI resolves the dependency
annotations at runtime, and they name closure variables.)
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine

from wattvisor.api.v1_routes import PREFIX, known_query
from wattvisor.api.v1_schemas import ERROR_RESPONSES
from wattvisor.auth import Principal, project_scope
from wattvisor.compute.prometheus_targets import agent_targets, service_servers, vm_targets
from wattvisor.telemetry.service_metrics import make_service_registry

Dependency = Callable[..., Awaitable[Principal]]


def build_prometheus_router(
    engine: Engine,
    authenticated: Dependency,
    admin: Dependency,
    *,
    compat_series: bool = False,
    address_family: str = "ipv4",
) -> APIRouter:
    router = APIRouter(
        prefix=f"{PREFIX}/prometheus",
        responses=ERROR_RESPONSES,
        dependencies=[Depends(known_query)],
        tags=["prometheus"],
    )
    Admin = Annotated[Principal, Depends(admin)]
    Member = Annotated[Principal, Depends(authenticated)]
    registry = make_service_registry(lambda: service_servers(engine), compat_series=compat_series)

    @router.get("/agents")
    def prometheus_agents(principal: Admin) -> list[dict[str, Any]]:
        """Every joined agent's ``/metrics`` as Prometheus ``http_sd_configs`` targets."""
        return agent_targets(engine)

    @router.get("/targets")
    def prometheus_targets(principal: Member) -> list[dict[str, Any]]:
        """Exporters inside ACTIVE servers as ``http_sd_configs`` targets: the caller's
        project's (a member), or every project's with the ``host`` label (an admin)."""
        return vm_targets(
            engine, project=project_scope(principal), admin=principal.is_admin,
            family=address_family,
        )  # fmt: skip

    @router.get("/metrics", response_class=Response)
    def prometheus_service_metrics(principal: Admin) -> Response:
        """The service metrics in the Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
