"""Placement handlers for consumers' allocations and a provider's allocations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from wattvisor.api.placement.bodies import _consumer_update, _json, _obj, _with_current_generation
from wattvisor.api.placement.microversion import _microversion
from wattvisor.api.placement.threads import call
from wattvisor.placement import (
    BadRequest,
    Placement,
)


def router(placement: Placement) -> APIRouter:
    """The allocation routes over ``placement``."""
    router = APIRouter()

    @router.get("/resource_providers/{uuid}/allocations", summary="List provider allocations")
    async def get_provider_allocations(uuid: str) -> dict[str, Any]:
        generation, held = await call(placement.get_provider_allocations, uuid)
        return {
            "allocations": {
                c.consumer_uuid: {
                    "resources": dict(c.allocations[0].resources),
                    "consumer_generation": c.generation,
                }
                for c in held
            },
            "resource_provider_generation": generation,
        }

    @router.get("/allocations/{consumer_uuid}", summary="List allocations of a consumer")
    async def get_allocations(consumer_uuid: str, request: Request) -> dict[str, Any]:
        version = _microversion(request)
        held = await call(placement.get_allocations, consumer_uuid)
        body: dict[str, Any] = {
            "allocations": {
                a.provider_uuid: {"generation": a.provider_generation, "resources": a.resources}
                for a in held.allocations
            }
        }
        if held.allocations and version.at_least(12):
            body.update(project_id=held.project_id, user_id=held.user_id)
        if held.allocations and version.at_least(28):
            body["consumer_generation"] = held.generation
        if held.allocations and version.at_least(38):
            body["consumer_type"] = held.consumer_type
        return body

    @router.put("/allocations/{consumer_uuid}", status_code=204, summary="Update allocations")
    async def put_allocations(consumer_uuid: str, request: Request) -> Response:
        version = _microversion(request)
        update_ = _consumer_update(consumer_uuid, await _json(request), version)
        update_ = await call(_with_current_generation, placement, update_)
        if not update_.allocations and update_.consumer_generation is None:
            raise BadRequest(
                "JSON does not validate: empty allocations need the consumer_generation of "
                "an existing consumer"
            )
        try:
            await call(
                placement.set_allocations,
                update_.consumer_uuid,
                update_.allocations,
                project_id=update_.project_id,
                user_id=update_.user_id,
                consumer_generation=update_.consumer_generation,
                consumer_type=update_.consumer_type,
            )
        except BadRequest as exc:
            raise BadRequest(
                f"Unable to allocate inventory for consumer {update_.consumer_uuid}: {exc.detail}",
                code=exc.code,
            ) from exc
        return Response(status_code=204)

    @router.post("/allocations", status_code=204, summary="Manage allocations")
    async def post_allocations(request: Request) -> Response:
        version = _microversion(request)
        body = await _json(request)
        if not body:
            raise BadRequest("JSON does not validate: at least one consumer is required")
        updates = [
            _consumer_update(consumer_uuid, _obj(entry, f"consumer {consumer_uuid}"), version)
            for consumer_uuid, entry in body.items()
        ]
        updates = [await call(_with_current_generation, placement, u) for u in updates]
        await call(placement.set_allocations_many, updates)
        return Response(status_code=204)

    @router.delete("/allocations/{consumer_uuid}", status_code=204, summary="Delete allocations")
    async def delete_allocations(consumer_uuid: str) -> Response:
        await call(placement.delete_allocations, consumer_uuid)
        return Response(status_code=204)

    return router
