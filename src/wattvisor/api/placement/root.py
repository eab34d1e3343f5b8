"""GET / : Placement's version document."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from wattvisor.api.placement.microversion import MAX_VERSION, MIN_VERSION, PREFIX


def versions_router() -> APIRouter:
    """Placement's version document: public, as clients read it before they authenticate."""
    router = APIRouter(prefix=PREFIX, tags=["placement"])

    @router.get("/", summary="Placement API versions")
    async def versions() -> dict[str, Any]:
        return {
            "versions": [
                {
                    "id": "v1.0",
                    "max_version": f"{MAX_VERSION[0]}.{MAX_VERSION[1]}",
                    "min_version": f"{MIN_VERSION[0]}.{MIN_VERSION[1]}",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": ""}],
                }
            ]
        }

    return router
