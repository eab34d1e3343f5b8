"""Fixtures for placement tests: one migrated database per backend, and a service on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wattvisor.placement import Placement
from wattvisor.store import make_engine

try:
    from support.postgres import postgres_server, store_url
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import postgres_server, store_url  # type: ignore[no-redef]

__all__ = ["placement", "postgres_server", "store_url"]


@pytest.fixture
def placement(store_url: str) -> Iterator[Placement]:
    engine = make_engine(store_url)
    try:
        yield Placement(engine)
    finally:
        engine.dispose()
