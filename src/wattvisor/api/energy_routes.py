"""Energy across the fleet: agents push samples, Prometheus finds every agent.

``POST /v1/hosts/{id}/energy`` takes a batch of the host's samples, signed with that
host's own token (no one else's: :func:`wattvisor.auth.policy.check_route`).
(Prometheus discovery of the agents is in :mod:`wattvisor.api.prometheus_routes`.)

(No ``from __future__ import annotations``: FastAPI resolves the dependency
annotations at runtime, and they name closure variables.)
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from wattvisor.api.v1_routes import PREFIX, known_query
from wattvisor.api.v1_schemas import ERROR_RESPONSES, PowerSample
from wattvisor.auth import Principal
from wattvisor.auth.fastapi import make_host_dependency
from wattvisor.compute.energy_history import MAX_SERVERS_PER_SAMPLE, EnergyHistory
from wattvisor.compute.power import MAX_HISTORY_S, PowerService
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
    history: EnergyHistory, power: PowerService, authenticated: Dependency, admin: Dependency
) -> APIRouter:
    router = APIRouter(
        prefix=PREFIX, responses=ERROR_RESPONSES, dependencies=[Depends(known_query)]
    )
    Member = Annotated[Principal, Depends(authenticated)]
    Since = Annotated[
        float, Query(ge=1, le=MAX_HISTORY_S, description="window: the last this many seconds")
    ]
    Step = Annotated[
        float | None, Query(ge=1, description="seconds per point (default: window / 300)")
    ]
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

    @router.get(
        "/projects/{project_id}/power/history", response_model=list[PowerSample], tags=["power"]
    )
    def project_power_history(
        project_id: str, principal: Member, since: Since = 86400, step: Step = None
    ) -> list[PowerSample]:
        """The project's power and energy over time, summed over every host that pushes."""
        points = power.stored_history(principal, project=project_id, since_s=since, step_s=step)
        return [PowerSample(taken_at=p.taken_at, watts=p.power_watts,
                            joules=p.energy_joules_total) for p in points]  # fmt: skip

    @router.get(
        "/servers/{server_id}/power/history", response_model=list[PowerSample], tags=["power"]
    )
    def server_power_history(
        server_id: str, principal: Member, since: Since = 86400, step: Step = None
    ) -> list[PowerSample]:
        """The server's power and energy over time, from what its host pushed."""
        points = power.stored_history(principal, server_id=server_id, since_s=since, step_s=step)
        return [PowerSample(taken_at=p.taken_at, watts=p.power_watts,
                            joules=p.energy_joules_total) for p in points]  # fmt: skip

    return router
