"""Placement handlers for POST /reshaper (1.30)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from wattvisor.api.placement.bodies import (
    _consumer_update,
    _inventory,
    _json,
    _need,
    _obj,
    _only,
    _uuid,
)
from wattvisor.api.placement.microversion import _microversion
from wattvisor.api.placement.models import InventoriesBody, validated
from wattvisor.api.placement.threads import call
from wattvisor.placement import (
    BadRequest,
    Inventory,
    Placement,
)


def router(placement: Placement) -> APIRouter:
    """The POST /reshaper (1.30) routes over ``placement``."""
    router = APIRouter()

    @router.post("/reshaper", status_code=204, summary="Move inventory and allocations at once")
    async def reshaper(request: Request) -> Response:
        version = _microversion(request)
        body = await _json(request)
        _only(body, {"inventories", "allocations"}, "the reshape")
        raw_inventories = _obj(_need(body, "inventories", "the reshape"), "inventories")
        raw_allocations = _obj(_need(body, "allocations", "the reshape"), "allocations")
        known = set(await call(placement.list_resource_classes))
        inventories: dict[str, tuple[int, dict[str, Inventory]]] = {}
        for rp_uuid, entry in raw_inventories.items():
            wanted = validated(InventoriesBody, entry)
            for rc in wanted.inventories:
                if rc not in known:
                    raise BadRequest(f"No such resource class {rc}")
            inventories[_uuid(rp_uuid, "resource provider uuid")] = (
                wanted.resource_provider_generation,
                {rc: _inventory(fields) for rc, fields in wanted.inventories.items()},
            )
        updates = [
            _consumer_update(consumer, _obj(entry, f"consumer {consumer}"), version)
            for consumer, entry in raw_allocations.items()
        ]
        for update_ in updates:
            for resources in update_.allocations.values():
                for rc in resources:
                    if rc not in known:
                        raise BadRequest(f"No such resource class {rc}")
        await call(placement.reshape, inventories, updates)
        return Response(status_code=204)

    return router
