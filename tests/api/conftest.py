"""Fixtures of the /v1 API tests (the real all-in-one app on libvirt's test driver)."""

from api.v1_world import world

__all__ = ["world"]
