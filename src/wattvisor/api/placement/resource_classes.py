"""Placement handlers for /resource_classes[/{name}]."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from wattvisor.api.placement.bodies import _json
from wattvisor.api.placement.microversion import _location, _microversion, script_name
from wattvisor.api.placement.models import ResourceClassBody, request_body, validated
from wattvisor.api.placement.queries import _resource_class_name
from wattvisor.api.placement.threads import call
from wattvisor.placement import (
    Conflict,
    NotFound,
    Placement,
)


def router(placement: Placement) -> APIRouter:
    """The /resource_classes[/{name}] routes over ``placement``."""
    router = APIRouter()

    @router.get("/resource_classes/{name}", summary="Show resource class")
    async def show_resource_class(name: str, request: Request) -> dict[str, Any]:
        if name not in await call(placement.list_resource_classes):
            raise NotFound(f"No such resource class {name}.")
        return {
            "name": name,
            "links": [{"rel": "self", "href": f"{script_name(request)}/resource_classes/{name}"}],
        }

    @router.delete("/resource_classes/{name}", summary="Delete custom resource class")
    async def delete_resource_class(name: str) -> Response:
        try:
            await call(placement.delete_custom_resource_class, name)
        except Conflict as exc:
            raise Conflict(
                f"Error in delete resource class '{name}': Class is in use in inventory. "
                f"({exc.detail})",
                code=exc.code,
            ) from exc
        return Response(status_code=204)

    @router.get("/resource_classes", summary="List resource classes")
    async def list_resource_classes(request: Request) -> dict[str, Any]:
        names = await call(placement.list_resource_classes)
        base = script_name(request)
        return {
            "resource_classes": [
                {
                    "name": n,
                    "links": [{"rel": "self", "href": f"{base}/resource_classes/{n}"}],
                }
                for n in names
            ]
        }

    @router.post(
        "/resource_classes",
        status_code=201,
        summary="Create custom resource class",
        openapi_extra=request_body(ResourceClassBody),
    )
    async def post_resource_class(request: Request) -> Response:
        body = validated(ResourceClassBody, await _json(request))
        name = _resource_class_name(body.name)
        if not await call(placement.ensure_custom_resource_class, name):
            raise Conflict(f"Conflicting resource class already exists: {name}")
        return Response(status_code=201, headers=_location(request, f"/resource_classes/{name}"))

    @router.put("/resource_classes/{name}", summary="Create (1.7) or rename a resource class")
    async def put_resource_class(name: str, request: Request) -> Response:
        if not _microversion(request).at_least(7):
            body = validated(ResourceClassBody, await _json(request))
            new_name = _resource_class_name(body.name)
            base = script_name(request)
            await call(placement.rename_custom_resource_class, name, new_name)
            return JSONResponse(
                {
                    "name": new_name,
                    "links": [
                        {
                            "rel": "self",
                            "href": f"{base}/resource_classes/{new_name}",
                        }
                    ],
                }
            )
        name = _resource_class_name(name)
        created = await call(placement.ensure_custom_resource_class, name)
        return Response(
            status_code=201 if created else 204,
            headers=_location(request, f"/resource_classes/{name}"),
        )

    return router
