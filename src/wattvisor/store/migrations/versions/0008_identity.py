"""Stable uuids for users and projects.

Every existing user gets a uuid of its own; every project name in use (by users,
servers or volumes) gets a row in ``projects`` with its uuid. Once given, a uuid
never changes.

Revision ID: 0008_identity
Revises: 0007_server_addresses
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0008_identity"
down_revision = "0007_server_addresses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("users", sa.Column("uuid", sa.String(length=36), nullable=True))
    users = sa.table("users", sa.column("name", sa.String), sa.column("uuid", sa.String))
    for (name,) in conn.execute(sa.select(users.c.name)).all():
        conn.execute(sa.update(users).where(users.c.name == name).values(uuid=str(uuid.uuid4())))
    with op.batch_alter_table("users") as batch:
        batch.alter_column("uuid", existing_type=sa.String(length=36), nullable=False)
        batch.create_unique_constraint("uq_users_uuid", ["uuid"])
    projects = op.create_table(
        "projects",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("uuid"),
    )
    names: set[str] = set()
    for table in ("users", "servers", "volumes"):
        names |= {row[0] for row in conn.execute(sa.text(f"SELECT DISTINCT project FROM {table}"))}
    now = datetime.now(UTC)
    if names:
        op.bulk_insert(
            projects,
            [{"name": n, "uuid": str(uuid.uuid4()), "created_at": now} for n in sorted(names)],
        )


def downgrade() -> None:
    op.drop_table("projects")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_uuid", type_="unique")
        batch.drop_column("uuid")
