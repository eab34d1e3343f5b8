"""Migration 0008 gives every existing user and every project in use a uuid of its own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from wattvisor.store import make_engine, migrate
from wattvisor.store.migrate import alembic_config


def test_existing_users_and_projects_get_distinct_uuids(store_url: str) -> None:
    engine = make_engine(store_url)
    config = alembic_config(store_url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0007_server_addresses")
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (name, project, role, public_key, created_at) VALUES "
                    "('ann', 'p1', 'member', 'k1', :now), ('ben', 'p1', 'admin', 'k2', :now)"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO servers (uuid, name, project, user_name, flavor_id, image_id, "
                    "status, task, fault, power_metrics, shares, created_at, updated_at) VALUES "
                    "('s1', 'web', 'p2', 'gone', 'f', 'i', 'ACTIVE', NULL, NULL, false, '[]', "
                    ":now, :now)"
                ),
                {"now": now},
            )
        migrate(store_url)
        with engine.connect() as conn:
            users = dict(conn.execute(text("SELECT name, uuid FROM users")).all())
            projects = dict(conn.execute(text("SELECT name, uuid FROM projects")).all())
        migrate(store_url)  # again: nothing changes
        with engine.connect() as conn:
            assert dict(conn.execute(text("SELECT name, uuid FROM users")).all()) == users
    finally:
        engine.dispose()
    assert set(users) == {"ann", "ben"} and set(projects) == {"p1", "p2"}
    given = [*users.values(), *projects.values()]
    assert len(set(given)) == 4
    assert all(str(uuid.UUID(u)) == u for u in given)
