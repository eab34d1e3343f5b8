"""Fixtures for store tests: one migrated database per backend."""

from __future__ import annotations

try:
    from support.postgres import postgres_server, store_url
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import postgres_server, store_url  # type: ignore[no-redef]

__all__ = ["postgres_server", "store_url"]
