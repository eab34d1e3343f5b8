"""Placement handlers for /traits[/{name}] and /resource_providers/{uuid}/traits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from wattvisor.api.placement.bodies import _json
from wattvisor.api.placement.microversion import _location
from wattvisor.api.placement.models import ProviderTraitsBody, request_body, validated
from wattvisor.api.placement.queries import _CUSTOM_RE, _check_params, _single
from wattvisor.api.placement.threads import call
from wattvisor.placement import (
    BadRequest,
    ConcurrentUpdate,
    NotFound,
    Placement,
)
from wattvisor.placement.errors import CODE_QUERY_BAD_VALUE
from wattvisor.placement.names import MAX_NAME_LENGTH, shown_name


def router(placement: Placement) -> APIRouter:
    """The /traits[/{name}] and /resource_providers/{uuid}/traits routes over ``placement``."""
    router = APIRouter()

    @router.get("/resource_providers/{uuid}/traits", summary="List provider traits")
    async def get_provider_traits(uuid: str) -> dict[str, Any]:
        result = await call(placement.get_provider_traits, uuid)
        return {
            "traits": sorted(result.traits),
            "resource_provider_generation": result.generation,
        }

    @router.put(
        "/resource_providers/{uuid}/traits",
        summary="Replace provider traits",
        openapi_extra=request_body(ProviderTraitsBody),
    )
    async def put_provider_traits(uuid: str, request: Request) -> dict[str, Any]:
        body = validated(ProviderTraitsBody, await _json(request))
        generation, traits = body.resource_provider_generation, body.traits
        try:
            result = await call(placement.set_provider_traits, uuid, generation, traits)
        except ConcurrentUpdate as exc:
            raise ConcurrentUpdate(
                "Resource provider's generation already changed. Please update the generation "
                f"and try again. ({exc.detail})"
            ) from exc
        return {
            "traits": sorted(result.traits),
            "resource_provider_generation": result.generation,
        }

    @router.delete("/resource_providers/{uuid}/traits", summary="Delete provider traits")
    async def delete_provider_traits(uuid: str) -> Response:
        current = await call(placement.get_provider_traits, uuid)
        await call(placement.set_provider_traits, uuid, current.generation, [])
        return Response(status_code=204)

    @router.get("/traits", summary="List traits")
    async def list_traits(request: Request) -> dict[str, Any]:
        _check_params(request, {"name", "associated"})
        name = _single(request, "name")
        starts_with: str | None = None
        names: list[str] | None = None
        if name is not None:
            if name.startswith("startswith:"):
                starts_with = name.removeprefix("startswith:")
            elif name.startswith("in:"):
                names = [n.strip() for n in name.removeprefix("in:").split(",")]
            else:
                raise BadRequest(
                    "Badly formatted name parameter. Expected name query string parameter "
                    f'in form: ?name=[in|startswith]:[name1,name2|prefix]. Got: "{name}"',
                    code=CODE_QUERY_BAD_VALUE,
                )
        associated_raw = _single(request, "associated")
        associated: bool | None = None
        if associated_raw is not None:
            if associated_raw.lower() not in ("true", "false"):
                raise BadRequest(
                    'The query parameter "associated" only accepts "true" or "false", got '
                    f'"{associated_raw}"',
                    code=CODE_QUERY_BAD_VALUE,
                )
            associated = associated_raw.lower() == "true"
        traits = await call(
            placement.list_traits, starts_with=starts_with, names=names, associated=associated
        )
        return {"traits": traits}

    @router.get("/traits/{name}", summary="Show trait")
    async def show_trait(name: str) -> Response:
        if name not in await call(placement.list_traits, names=[name]):
            raise NotFound(f"No such trait(s): {name}")
        return Response(status_code=204)

    @router.put("/traits/{name}", summary="Create custom trait")
    async def put_trait(name: str, request: Request) -> Response:
        if not _CUSTOM_RE.match(name) or len(name) > MAX_NAME_LENGTH:
            raise BadRequest(
                "The trait is invalid. A valid trait must be no longer than 255 characters, "
                'start with the prefix "CUSTOM_" and use following characters: "A"-"Z", '
                f'"0"-"9" and "_" (got {shown_name(name)}: {len(name)} characters, at most '
                f"{MAX_NAME_LENGTH})"
            )
        created = await call(placement.ensure_custom_trait, name)
        return Response(
            status_code=201 if created else 204,
            headers=_location(request, f"/traits/{name}"),
        )

    @router.delete("/traits/{name}", summary="Delete custom trait")
    async def delete_trait(name: str) -> Response:
        await call(placement.delete_custom_trait, name)
        return Response(status_code=204)

    return router
