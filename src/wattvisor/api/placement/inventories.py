"""Placement handlers for /resource_providers/{uuid}/inventories[/{resource_class}]."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from wattvisor.api.placement.bodies import _check_reserved, _inventory, _inventory_body, _json
from wattvisor.api.placement.microversion import _location, _microversion
from wattvisor.api.placement.models import (
    InventoriesBody,
    InventoryCreateBody,
    InventoryUpdateBody,
    request_body,
    validated,
)
from wattvisor.api.placement.threads import call
from wattvisor.placement import (
    BadRequest,
    Conflict,
    NotFound,
    Placement,
)


def router(placement: Placement) -> APIRouter:
    """The /resource_providers/{uuid}/inventories[/{resource_class}] routes over ``placement``."""
    router = APIRouter()

    @router.get("/resource_providers/{uuid}/inventories", summary="List inventories")
    async def get_inventories(uuid: str) -> dict[str, Any]:
        result = await call(placement.get_inventories, uuid)
        return {
            "inventories": {rc: _inventory_body(i) for rc, i in result.inventories.items()},
            "resource_provider_generation": result.generation,
        }

    @router.put(
        "/resource_providers/{uuid}/inventories",
        summary="Replace inventories",
        openapi_extra=request_body(InventoriesBody),
    )
    async def put_inventories(uuid: str, request: Request) -> dict[str, Any]:
        body = validated(InventoriesBody, await _json(request))
        generation = body.resource_provider_generation
        inventories = {rc: _inventory(fields) for rc, fields in body.inventories.items()}
        version = _microversion(request)
        for rc, inventory in inventories.items():
            _check_reserved(uuid, rc, inventory, version)
        result = await call(placement.set_inventories, uuid, generation, inventories)
        return {
            "inventories": {rc: _inventory_body(i) for rc, i in result.inventories.items()},
            "resource_provider_generation": result.generation,
        }

    @router.post(
        "/resource_providers/{uuid}/inventories",
        status_code=201,
        summary="Add an inventory",
        openapi_extra=request_body(InventoryCreateBody),
    )
    async def post_inventory(uuid: str, request: Request) -> JSONResponse:
        body = validated(InventoryCreateBody, await _json(request))
        resource_class = body.resource_class
        inventory = _inventory(body)
        current = await call(placement.get_inventories, uuid)
        if resource_class not in await call(placement.list_resource_classes):
            raise BadRequest(f"No such resource class {resource_class}")
        if resource_class in current.inventories:
            raise Conflict(
                f"Update conflict: inventory for {resource_class} on resource provider {uuid} "
                "already exists"
            )
        wanted = {**current.inventories, resource_class: inventory}
        try:
            result = await call(placement.set_inventories, uuid, current.generation, wanted)
        except BadRequest as exc:
            raise BadRequest(
                exc.detail.replace("Unable to update inventory", "Unable to create inventory"),
                code=exc.code,
            ) from exc
        return JSONResponse(
            {
                **_inventory_body(result.inventories[resource_class]),
                "resource_provider_generation": result.generation,
            },
            status_code=201,
            headers=_location(request, f"/resource_providers/{uuid}/inventories/{resource_class}"),
        )

    @router.get("/resource_providers/{uuid}/inventories/{resource_class}", summary="Show inventory")
    async def get_inventory(uuid: str, resource_class: str) -> dict[str, Any]:
        result = await call(placement.get_inventories, uuid)
        inventory = result.inventories.get(resource_class)
        if inventory is None:
            raise NotFound(f"No inventory of class {resource_class} for {uuid}")
        return {
            **_inventory_body(inventory),
            "resource_provider_generation": result.generation,
        }

    @router.put(
        "/resource_providers/{uuid}/inventories/{resource_class}",
        summary="Update inventory",
        openapi_extra=request_body(InventoryUpdateBody),
    )
    async def put_inventory(uuid: str, resource_class: str, request: Request) -> dict[str, Any]:
        body = validated(InventoryUpdateBody, await _json(request))
        generation = body.resource_provider_generation
        inventory = _inventory(body)
        _check_reserved(uuid, resource_class, inventory, _microversion(request))
        current = await call(placement.get_inventories, uuid)
        if resource_class not in current.inventories:
            raise BadRequest(
                f"No inventory record with resource class {resource_class} for resource "
                f"provider {uuid}; create it with POST /resource_providers/{uuid}/inventories"
            )
        wanted = {**current.inventories, resource_class: inventory}
        result = await call(placement.set_inventories, uuid, generation, wanted)
        return {
            **_inventory_body(result.inventories[resource_class]),
            "resource_provider_generation": result.generation,
        }

    @router.delete(
        "/resource_providers/{uuid}/inventories/{resource_class}", summary="Delete inventory"
    )
    async def delete_inventory(uuid: str, resource_class: str) -> Response:
        current = await call(placement.get_inventories, uuid)
        if resource_class not in current.inventories:
            raise NotFound(f"No inventory of class {resource_class} found for delete")
        wanted = {rc: i for rc, i in current.inventories.items() if rc != resource_class}
        await call(placement.set_inventories, uuid, current.generation, wanted)
        return Response(status_code=204)

    @router.delete("/resource_providers/{uuid}/inventories", summary="Delete inventories")
    async def delete_inventories(uuid: str) -> Response:
        current = await call(placement.get_inventories, uuid)
        await call(placement.set_inventories, uuid, current.generation, {})
        return Response(status_code=204)

    return router
