"""Live migrations and their tunnel reservations (one VNI and one subnet each).

Revision ID: 0014_live_migration
Revises: 0013_host_geolocation
Create Date: 2026-12-02 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_live_migration"
down_revision = "0013_host_geolocation"
branch_labels = None
depends_on = None

ACTIVE = "state IN ('queued', 'preparing', 'migrating', 'cancelling')"


def upgrade() -> None:
    op.create_table(
        "migrations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("server_uuid", sa.String(length=36), nullable=False),
        sa.Column("source_host", sa.String(length=36), nullable=False),
        sa.Column("target_host", sa.String(length=36), nullable=True),
        sa.Column("requested_host", sa.String(length=36), nullable=True),
        sa.Column("tunnel", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("vni", sa.Integer(), nullable=True),
        sa.Column("subnet", sa.String(length=64), nullable=True),
        sa.Column("fault", sa.Text(), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_migrations_active_server", "migrations", ["server_uuid"], unique=True,
        postgresql_where=sa.text(ACTIVE), sqlite_where=sa.text(ACTIVE),
    )  # fmt: skip
    op.create_index("ix_migrations_server", "migrations", ["server_uuid", "created_at"])
    op.create_table(
        "tunnel_reservations",
        sa.Column("migration_id", sa.String(length=36), nullable=False),
        sa.Column("vni", sa.Integer(), nullable=False),
        sa.Column("subnet", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("migration_id"),
        sa.UniqueConstraint("vni", name="uq_tunnel_reservations_vni"),
        sa.UniqueConstraint("subnet", name="uq_tunnel_reservations_subnet"),
    )


def downgrade() -> None:
    op.drop_table("tunnel_reservations")
    op.drop_index("ix_migrations_server", table_name="migrations")
    op.drop_index("uq_migrations_active_server", table_name="migrations")
    op.drop_table("migrations")
