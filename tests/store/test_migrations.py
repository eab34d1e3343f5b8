"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from wattvisor.store import Base, make_engine, migrate


def test_migrated_schema_matches_models(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_migrating_twice_changes_nothing(store_url: str) -> None:
    migrate(store_url)
    engine = make_engine(store_url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert {"resource_providers", "inventories", "allocations", "consumers"} <= tables
            rows = conn.execute(text("SELECT id, value FROM placement_sequence")).all()
            assert [tuple(r) for r in rows] == [(1, 0)]
    finally:
        engine.dispose()


def test_sqlite_store_runs_in_wal_mode(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/wal.db"
    migrate(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_refused_with_an_explanation() -> None:
    import pytest

    with pytest.raises(ValueError, match="in-memory SQLite"):
        make_engine("sqlite://")
