"""Placement provider trees and aggregates: a provider's parent, and the aggregates
each provider is a member of.

Revision ID: 0017_placement_tree
Revises: 0014_live_migration
Create Date: 2026-12-03 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_placement_tree"
down_revision = "0014_live_migration"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "resource_providers", sa.Column("parent_provider_id", sa.Integer(), nullable=True)
    )
    op.create_index("ix_resource_providers_parent", "resource_providers", ["parent_provider_id"])
    op.create_table(
        "resource_provider_aggregates",
        sa.Column("resource_provider_id", sa.Integer(), nullable=False),
        sa.Column("aggregate_uuid", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_provider_id"], ["resource_providers.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("resource_provider_id", "aggregate_uuid"),
    )
    op.create_index(
        "ix_resource_provider_aggregates_aggregate",
        "resource_provider_aggregates",
        ["aggregate_uuid"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_resource_provider_aggregates_aggregate", table_name="resource_provider_aggregates"
    )
    op.drop_table("resource_provider_aggregates")
    op.drop_index("ix_resource_providers_parent", table_name="resource_providers")
    with op.batch_alter_table("resource_providers") as batch:
        batch.drop_column("parent_provider_id")
