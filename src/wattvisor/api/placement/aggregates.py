"""Placement handlers for /resource_providers/{uuid}/aggregates."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from fastapi import APIRouter, Request

from wattvisor.api.placement.bodies import _int, _need, _obj, _only
from wattvisor.api.placement.microversion import _microversion
from wattvisor.api.placement.queries import _UUID_RE
from wattvisor.api.placement.threads import call
from wattvisor.placement import (
    BadRequest,
    Placement,
)


def router(placement: Placement) -> APIRouter:
    """The /resource_providers/{uuid}/aggregates routes over ``placement``."""
    router = APIRouter()

    @router.get("/resource_providers/{uuid}/aggregates", summary="List aggregates")
    async def get_aggregates(uuid: str, request: Request) -> dict[str, Any]:
        generation, aggregates = await call(placement.get_aggregates, uuid)
        body: dict[str, Any] = {"aggregates": aggregates}
        if _microversion(request).at_least(19):
            body["resource_provider_generation"] = generation
        return body

    @router.put("/resource_providers/{uuid}/aggregates", summary="Replace aggregates")
    async def put_aggregates(uuid: str, request: Request) -> dict[str, Any]:
        version = _microversion(request)
        await call(placement.get_provider, uuid)
        try:
            raw = await request.json()
        except ValueError as exc:
            raise BadRequest(f"Malformed JSON: {exc}") from exc
        generation: int | None = None
        if version.at_least(19):
            body = _obj(raw, "the aggregates")
            _only(body, {"aggregates", "resource_provider_generation"}, "the aggregates")
            raw = _need(body, "aggregates", "the aggregates")
            generation = _int(
                _need(body, "resource_provider_generation", "the aggregates"),
                "resource_provider_generation",
                0,
            )
        if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
            raise BadRequest(f"JSON does not validate: {raw!r} is not of type 'array'")
        for aggregate in raw:
            if not _UUID_RE.match(aggregate):
                raise BadRequest(f"JSON does not validate: {aggregate!r} is not a 'uuid'")
        if len(set(raw)) != len(raw):
            raise BadRequest(f"JSON does not validate: {raw!r} has non-unique elements")
        new_generation, _stored = await call(placement.set_aggregates, uuid, raw, generation)
        out: dict[str, Any] = {"aggregates": [str(uuidlib.UUID(a)) for a in raw]}
        if version.at_least(19):
            out["resource_provider_generation"] = new_generation
        return out

    return router
