"""Placement handlers for /resource_providers and /resource_providers/{uuid}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from wattvisor.api.placement.bodies import _json, _provider_body
from wattvisor.api.placement.microversion import _location, _microversion, script_name
from wattvisor.api.placement.models import (
    ProviderCreateBody,
    ProviderCreateBody14,
    ProviderUpdateBody,
    ProviderUpdateBody14,
    request_body,
    validated,
)
from wattvisor.api.placement.queries import (
    _PROVIDER_PARAMS,
    _UUID_RE,
    _check_params,
    _member_of,
    _single,
    _trait_query,
)
from wattvisor.api.placement.threads import call
from wattvisor.placement import (
    BadRequest,
    Placement,
    parse_resources,
)


def router(placement: Placement) -> APIRouter:
    """The /resource_providers and /resource_providers/{uuid} routes over ``placement``."""
    router = APIRouter()

    @router.get("/resource_providers", summary="List resource providers")
    async def list_providers(request: Request) -> dict[str, Any]:
        version = _microversion(request)
        _check_params(request, _PROVIDER_PARAMS)
        resources_raw = _single(request, "resources")
        uuid = _single(request, "uuid")
        if uuid is not None and not _UUID_RE.match(uuid):
            raise BadRequest(f"Invalid query string parameters: Invalid uuid value: {uuid}")
        in_tree = _single(request, "in_tree")
        if in_tree is not None and not _UUID_RE.match(in_tree):
            raise BadRequest(f"Invalid query string parameters: Invalid uuid value: {in_tree}")
        providers = await call(
            placement.list_providers,
            name=_single(request, "name"),
            uuid=uuid,
            resources=parse_resources(resources_raw) if resources_raw else None,
            traits=_trait_query(request) if request.query_params.getlist("required") else None,
            in_tree=in_tree,
            member_of=_member_of(request.query_params.getlist("member_of"), version),
        )
        return {
            "resource_providers": [
                _provider_body(p, version, script_name(request)) for p in providers
            ]
        }

    @router.post(
        "/resource_providers",
        summary="Create resource provider",
        openapi_extra=request_body(ProviderCreateBody14, ProviderCreateBody),
    )
    async def create_provider(request: Request) -> Response:
        version = _microversion(request)
        raw = await _json(request)
        body = validated(ProviderCreateBody14 if version.at_least(14) else ProviderCreateBody, raw)
        parent = getattr(body, "parent_provider_uuid", None)
        provider = await call(
            placement.create_provider,
            body.name,
            str(body.uuid) if body.uuid is not None else None,
            str(parent) if parent is not None else None,
        )
        location = _location(request, f"/resource_providers/{provider.uuid}")
        if version.at_least(20):
            return JSONResponse(
                _provider_body(provider, version, script_name(request)), headers=location
            )
        return Response(status_code=201, headers=location)

    @router.get("/resource_providers/{uuid}", summary="Show resource provider")
    async def show_provider(uuid: str, request: Request) -> dict[str, Any]:
        provider = await call(placement.get_provider, uuid)
        return _provider_body(provider, _microversion(request), script_name(request))

    @router.put(
        "/resource_providers/{uuid}",
        summary="Update resource provider",
        openapi_extra=request_body(ProviderUpdateBody14, ProviderUpdateBody),
    )
    async def update_provider(uuid: str, request: Request) -> dict[str, Any]:
        version = _microversion(request)
        raw = await _json(request)
        body = validated(ProviderUpdateBody14 if version.at_least(14) else ProviderUpdateBody, raw)
        current = await call(placement.get_provider, uuid)
        parent = current.parent_provider_uuid
        if "parent_provider_uuid" in body.model_fields_set:
            given = getattr(body, "parent_provider_uuid", None)
            parent = str(given) if given is not None else None
        provider = await call(
            placement.update_provider, uuid, body.name, parent, may_reparent=version.at_least(37)
        )
        return _provider_body(provider, version, script_name(request))

    @router.delete("/resource_providers/{uuid}", status_code=204, summary="Delete provider")
    async def delete_provider(uuid: str) -> Response:
        await call(placement.delete_provider, uuid)
        return Response(status_code=204)

    return router
