"""Migrations that add a table take it away again and bring it back, on both backends:
0006 (the task queue) and 0012 (unknown domains kept in the store)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect

from wattvisor.store import make_engine, migrate
from wattvisor.store.migrate import alembic_config


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("revision", "added", "kept"),
    [
        ("0006_tasks", "tasks", "servers"),
        ("0012_unknown_domains", "host_unknown_domains", "compute_hosts"),
    ],
)
def test_a_table_migration_goes_down_and_up_again(
    store_url: str, revision: str, added: str, kept: str
) -> None:
    assert added in _tables(store_url)
    engine = make_engine(store_url)
    config = alembic_config(store_url)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, f"{revision}-1")
    finally:
        engine.dispose()
    tables = _tables(store_url)
    assert added not in tables and kept in tables
    migrate(store_url)
    assert added in _tables(store_url)
