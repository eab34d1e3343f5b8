"""Placement handlers for GET /allocation_candidates (1.10)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from wattvisor.api.placement.microversion import _microversion
from wattvisor.api.placement.queries import _candidate_request, _candidates_body
from wattvisor.api.placement.threads import call
from wattvisor.placement import (
    Placement,
    TraitQuery,
)
from wattvisor.placement.trees import (
    TreeCandidates,
)


def router(placement: Placement) -> APIRouter:
    """The GET /allocation_candidates (1.10) routes over ``placement``."""
    router = APIRouter()

    @router.get("/allocation_candidates", summary="List allocation candidates")
    async def allocation_candidates(request: Request) -> JSONResponse:
        version = _microversion(request)
        tree_request, limit = _candidate_request(request, version)
        traits = TraitQuery()
        for group in tree_request.groups:
            traits = traits.merged(group.traits)
        await call(
            placement.check_names,
            {rc for group in tree_request.groups for rc in group.resources},
            traits.merged(tree_request.root_traits),
        )
        snapshot = await call(placement.tree_snapshot)
        found = TreeCandidates(snapshot).candidates(tree_request, limit)
        # Plain str/int/list/dict: serialised as is, without FastAPI's per-value encoder.
        return JSONResponse(_candidates_body(snapshot, tree_request, found, version))

    return router
