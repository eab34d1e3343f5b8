"""HTTP API: routes, request/response bodies and error formats; no business logic."""

from wattvisor.api.app import create_app

__all__ = ["create_app"]
