"""Cluster keys, single-use join tokens, host credentials and joined hosts' agents.

Revision ID: 0004_host_credentials
Revises: 0003_cache_generations
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_host_credentials"
down_revision = "0003_cache_generations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_keys",
        sa.Column("public_key", sa.String(length=100), nullable=False),
        sa.Column("cluster_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("public_key"),
    )
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_host", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "host_credentials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("host_uuid", sa.String(length=36), nullable=False),
        sa.Column("public_key", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["host_uuid"], ["compute_hosts.provider_uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_host_credentials_host", "host_credentials", ["host_uuid"])
    op.create_table(
        "host_agents",
        sa.Column("host_uuid", sa.String(length=36), nullable=False),
        sa.Column("addresses", sa.JSON(), nullable=False),
        sa.Column("energy_source", sa.String(length=32), nullable=False),
        sa.Column("join_token_id", sa.String(length=36), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["host_uuid"], ["compute_hosts.provider_uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host_uuid"),
    )
    generations = sa.table(
        "cache_generations", sa.column("name", sa.String()), sa.column("value", sa.BigInteger())
    )
    op.bulk_insert(
        generations, [{"name": "host_keys", "value": 0}, {"name": "cluster_keys", "value": 0}]
    )


def downgrade() -> None:
    op.execute("DELETE FROM cache_generations WHERE name IN ('host_keys', 'cluster_keys')")
    op.drop_table("host_agents")
    op.drop_index("ix_host_credentials_host", table_name="host_credentials")
    op.drop_table("host_credentials")
    op.drop_table("join_tokens")
    op.drop_table("cluster_keys")
