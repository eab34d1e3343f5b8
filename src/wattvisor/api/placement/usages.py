"""Placement handlers for /usages and /resource_providers/{uuid}/usages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from wattvisor.api.placement.microversion import _microversion
from wattvisor.api.placement.queries import _check_params, _single
from wattvisor.api.placement.threads import call
from wattvisor.placement import (
    BadRequest,
    Placement,
)
from wattvisor.placement.names import MAX_NAME_LENGTH


def router(placement: Placement) -> APIRouter:
    """The /usages and /resource_providers/{uuid}/usages routes over ``placement``."""
    router = APIRouter()

    @router.get("/resource_providers/{uuid}/usages", summary="List provider usages")
    async def get_usages(uuid: str) -> dict[str, Any]:
        result = await call(placement.get_usages, uuid)
        return {"usages": result.usages, "resource_provider_generation": result.generation}

    @router.get("/usages", summary="Usages of a project (and user)")
    async def project_usages(request: Request) -> dict[str, Any]:
        version = _microversion(request)
        _check_params(request, {"project_id": 9, "user_id": 9, "consumer_type": 38})
        project_id = _single(request, "project_id")
        if project_id is None:
            raise BadRequest("Invalid query string parameters: 'project_id' is a required property")
        user_id = _single(request, "user_id")
        for key, value in (("project_id", project_id), ("user_id", user_id)):
            if value is not None and not 1 <= len(value) <= MAX_NAME_LENGTH:
                rule = "minLength" if not value else "maxLength"
                raise BadRequest(
                    f"Invalid query string parameters: {key} must have 1-{MAX_NAME_LENGTH} "
                    f"characters\n\nFailed validating '{rule}' in schema['properties']['{key}']"
                )
        by_type = await call(placement.project_usages, project_id, user_id)
        if not version.at_least(38):
            totals: dict[str, int] = {}
            for _count, amounts in by_type.values():
                for rc, used in amounts.items():
                    totals[rc] = totals.get(rc, 0) + used
            return {"usages": totals}
        consumer_type = _single(request, "consumer_type")
        if consumer_type == "all":
            count = sum(c for c, _a in by_type.values())
            merged: dict[str, int] = {}
            for _count, amounts in by_type.values():
                for rc, used in amounts.items():
                    merged[rc] = merged.get(rc, 0) + used
            return {"usages": {"all": {"consumer_count": count, **merged}} if count else {}}
        return {
            "usages": {
                ctype: {"consumer_count": count, **amounts}
                for ctype, (count, amounts) in by_type.items()
                if consumer_type is None or ctype == consumer_type
            }
        }

    return router
