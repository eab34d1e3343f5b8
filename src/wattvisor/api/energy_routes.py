"""Energy across the fleet: agents push samples, Prometheus finds every agent.

``POST /v1/hosts/{id}/energy`` takes a batch of the host's samples, signed with that
host's own token (no one else's: :func:`wattvisor.auth.policy.check_route`).
``GET /v1/prometheus/agents`` (admin) lists every joined agent's ``/metrics`` in
Prometheus' http_sd format.

(No ``from __future__ import annotations``: FastAPI resolves the dependency
annotations at runtime, and they name closure variables.)
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from wattvisor.api.v1_routes import PREFIX, known_query
from wattvisor.api.v1_schemas import ERROR_RESPONSES
from wattvisor.auth import Principal
from wattvisor.auth.fastapi import make_host_dependency
from wattvisor.compute.energy_history import MAX_SERVERS_PER_SAMPLE, EnergyHistory
from wattvisor.compute.prometheus_targets import agent_targets
from wattvisor.energy.fleet_samples import HostSample, ServerSample

Dependency = Callable[..., Awaitable[Principal]]
MAX_BATCH = 10_000
"""The schema's own bound; ``history.max_batch_samples`` is the one that applies."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ServerSampleIn(_Body):
    uuid: str = Field(max_length=36)
    power_watts: float
    joules: float
    energy_joules_total: float


class HostSampleIn(_Body):
    taken_at: float = Field(description="Unix time (s) at the end of the interval")
    interval_s: float
    source: str = Field(max_length=16, description="rapl, scaphandre or estimate")
    measured: bool
    power_watts: float
    joules: float = Field(description="the host's energy over the interval")
    energy_joules_total: float = Field(description="the host's monotonic counter")
    servers: list[ServerSampleIn] = Field(default_factory=list, max_length=MAX_SERVERS_PER_SAMPLE)


class EnergyBatch(_Body):
    samples: list[HostSampleIn] = Field(max_length=MAX_BATCH)


class EnergyBatchResult(BaseModel):
    stored: int = Field(description="samples stored now")
    duplicates: int = Field(description="samples stored before (a batch sent again)")
    ignored_servers: int = Field(description="servers the store does not know, skipped")
    ignored_server_ids: list[str]


def build_energy_router(
    history: EnergyHistory, authenticated: Dependency, admin: Dependency
) -> APIRouter:
    router = APIRouter(
        prefix=PREFIX, responses=ERROR_RESPONSES, dependencies=[Depends(known_query)]
    )
    Admin = Annotated[Principal, Depends(admin)]
    HostCaller = Annotated[Principal, Depends(make_host_dependency(authenticated))]

    @router.post(
        "/hosts/{host_id}/energy", response_model=EnergyBatchResult, tags=["hosts", "power"]
    )
    def push_energy(host_id: str, body: EnergyBatch, principal: HostCaller) -> EnergyBatchResult:
        """Store the calling host's samples; a sample stored before is skipped, so sending
        a batch again changes nothing. A refused batch stores nothing."""
        samples = [
            HostSample(
                taken_at=s.taken_at, interval_s=s.interval_s, source=s.source,
                measured=s.measured, power_watts=s.power_watts, joules=s.joules,
                energy_joules_total=s.energy_joules_total,
                servers=tuple(
                    ServerSample(v.uuid, v.power_watts, v.joules, v.energy_joules_total)
                    for v in s.servers
                ),
            )
            for s in body.samples
        ]  # fmt: skip
        result = history.ingest(principal.user, samples)
        return EnergyBatchResult(
            stored=result.stored,
            duplicates=result.duplicates,
            ignored_servers=result.ignored_servers,
            ignored_server_ids=list(result.ignored_server_uuids),
        )

    @router.get("/prometheus/agents", tags=["hosts"])
    def prometheus_agents(principal: Admin) -> list[dict[str, Any]]:
        """Every joined agent's ``/metrics`` as Prometheus ``http_sd_configs`` targets."""
        return agent_targets(history.engine)

    return router
