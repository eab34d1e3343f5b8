"""Bring a database to the newest schema with the Alembic migrations shipped in this package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from wattvisor.store.duties import advisory_key
from wattvisor.store.engine import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url`` that needs no alembic.ini on disk."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(target: str | Engine, revision: str = "head") -> None:
    """Upgrade the database at ``target`` (a URL or an engine) to ``revision``.

    Safe to run on every start: an up-to-date database is left as it is. Controllers
    starting together on one PostgreSQL take turns (a transaction-scoped advisory lock):
    the first upgrades, the others find the schema current.
    """
    engine = make_engine(target) if isinstance(target, str) else target
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key("migrate")})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    if isinstance(target, str):
        engine.dispose()
