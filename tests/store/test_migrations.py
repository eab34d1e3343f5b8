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


def test_faults_written_before_0003_become_the_admins_detail(store_url: str) -> None:
    from datetime import UTC, datetime

    from alembic import command

    from wattvisor.store.migrate import alembic_config

    engine = make_engine(store_url)
    config = alembic_config(store_url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0002_compute")
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO servers (uuid, name, project, user_name, flavor_id, image_id, "
                    "status, task, fault, power_metrics, shares, created_at, updated_at) VALUES "
                    "('s1', 'web', 'p', 'u', 'f', 'i', 'ERROR', NULL, :fault, false, '[]', "
                    ":now, :now), ('s2', 'db', 'p', 'u', 'f', 'i', 'ACTIVE', NULL, NULL, false, "
                    "'[]', :now, :now)"
                ),
                {"fault": "delete failed: cannot undefine 'instance-0000002a'", "now": now},
            )
        migrate(store_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT uuid, fault, fault_detail FROM servers ORDER BY uuid")
            ).all()
    finally:
        engine.dispose()
    (_, fault, detail), s2 = rows
    assert detail == "delete failed: cannot undefine 'instance-0000002a'"
    assert "instance-" not in fault and "admin" in fault
    assert tuple(s2) == ("s2", None, None)
