"""The fleet's energy history: host and server samples pushed by agents, and rollups.

Revision ID: 0010_energy_history
Revises: 0009_image_digests
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_energy_history"
down_revision = "0009_image_digests"
branch_labels = None
depends_on = None


def _host_columns(time_column: str) -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("host_uuid", sa.String(length=36), nullable=False),
        sa.Column(time_column, sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "energy_host_samples",
        *_host_columns("ts_ms"),
        sa.Column("interval_ms", sa.Integer(), nullable=False),
        sa.Column("power_watts", sa.Float(), nullable=False),
        sa.Column("joules", sa.Float(), nullable=False),
        sa.Column("energy_joules_total", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("measured", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("host_uuid", "ts_ms"),
    )
    op.create_index("ix_energy_host_samples_ts", "energy_host_samples", ["ts_ms"])
    op.create_table(
        "energy_server_samples",
        *_host_columns("ts_ms"),
        sa.Column("server_uuid", sa.String(length=36), nullable=False),
        sa.Column("project", sa.String(length=255), nullable=False),
        sa.Column("power_watts", sa.Float(), nullable=False),
        sa.Column("joules", sa.Float(), nullable=False),
        sa.Column("energy_joules_total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("host_uuid", "ts_ms", "server_uuid"),
    )
    op.create_index(
        "ix_energy_server_samples_server", "energy_server_samples", ["server_uuid", "ts_ms"]
    )
    op.create_index(
        "ix_energy_server_samples_project", "energy_server_samples", ["project", "ts_ms"]
    )
    op.create_index("ix_energy_server_samples_ts", "energy_server_samples", ["ts_ms"])
    op.create_table(
        "energy_host_rollups",
        *_host_columns("bucket_ms"),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("interval_ms", sa.BigInteger(), nullable=False),
        sa.Column("power_watts", sa.Float(), nullable=False),
        sa.Column("joules", sa.Float(), nullable=False),
        sa.Column("energy_joules_total", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("measured", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("host_uuid", "bucket_ms"),
    )
    op.create_index("ix_energy_host_rollups_bucket", "energy_host_rollups", ["bucket_ms"])
    op.create_table(
        "energy_server_rollups",
        *_host_columns("bucket_ms"),
        sa.Column("server_uuid", sa.String(length=36), nullable=False),
        sa.Column("project", sa.String(length=255), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("power_watts", sa.Float(), nullable=False),
        sa.Column("joules", sa.Float(), nullable=False),
        sa.Column("energy_joules_total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("host_uuid", "bucket_ms", "server_uuid"),
    )
    op.create_index(
        "ix_energy_server_rollups_server", "energy_server_rollups", ["server_uuid", "bucket_ms"]
    )
    op.create_index(
        "ix_energy_server_rollups_project", "energy_server_rollups", ["project", "bucket_ms"]
    )
    op.create_index("ix_energy_server_rollups_bucket", "energy_server_rollups", ["bucket_ms"])


def downgrade() -> None:
    for table in (
        "energy_server_rollups",
        "energy_host_rollups",
        "energy_server_samples",
        "energy_host_samples",
    ):
        op.drop_table(table)
