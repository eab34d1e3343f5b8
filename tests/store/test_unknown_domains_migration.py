"""Migration 0011 keeps unknown domains in the store and takes them away again, on both
backends."""

from __future__ import annotations

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


def test_the_unknown_domains_migration_goes_down_and_up_again(store_url: str) -> None:
    assert "host_unknown_domains" in _tables(store_url)
    engine = make_engine(store_url)
    config = alembic_config(store_url)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0012_unknown_domains-1")
    finally:
        engine.dispose()
    tables = _tables(store_url)
    assert "host_unknown_domains" not in tables and "compute_hosts" in tables
    migrate(store_url)
    assert "host_unknown_domains" in _tables(store_url)
