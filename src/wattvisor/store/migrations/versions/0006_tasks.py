"""The durable task queue shared by every controller.

Revision ID: 0006_tasks
Revises: 0005_server_disks
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_tasks"
down_revision = "0005_server_disks"
branch_labels = None
depends_on = None

_IN_FLIGHT = "state IN ('queued', 'running')"
_CLAIMABLE = "state = 'queued' AND ready"
_RUNNING = "state = 'running'"


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_tasks_in_flight_key",
        "tasks",
        ["kind", "target", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text(_IN_FLIGHT),
        sqlite_where=sa.text(_IN_FLIGHT),
    )
    op.create_index(
        "ix_tasks_claimable",
        "tasks",
        ["run_after", "id"],
        postgresql_where=sa.text(_CLAIMABLE),
        sqlite_where=sa.text(_CLAIMABLE),
    )
    op.create_index(
        "ix_tasks_in_flight_target",
        "tasks",
        ["target", "id"],
        postgresql_where=sa.text(_IN_FLIGHT),
        sqlite_where=sa.text(_IN_FLIGHT),
    )
    op.create_index(
        "ix_tasks_running_lease",
        "tasks",
        ["lease_expires_at"],
        postgresql_where=sa.text(_RUNNING),
        sqlite_where=sa.text(_RUNNING),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_running_lease", table_name="tasks")
    op.drop_index("ix_tasks_in_flight_target", table_name="tasks")
    op.drop_index("ix_tasks_claimable", table_name="tasks")
    op.drop_index("uq_tasks_in_flight_key", table_name="tasks")
    op.drop_table("tasks")
