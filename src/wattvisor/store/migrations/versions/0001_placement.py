"""Placement tables: resource providers, inventories, traits, consumers, allocations.

Revision ID: 0001_placement
Revises:
Create Date: 2026-11-21 23:50:40.196549
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_placement"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("consumer_type", sa.String(length=255), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uuid"),
    )
    op.create_table(
        "custom_resource_classes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "custom_traits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "placement_sequence",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    sequence = sa.table(
        "placement_sequence", sa.column("id", sa.Integer), sa.column("value", sa.BigInteger)
    )
    op.bulk_insert(sequence, [{"id": 1, "value": 0}])
    op.create_table(
        "resource_provider_deletions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("resource_provider_deletions", schema=None) as batch_op:
        batch_op.create_index("ix_resource_provider_deletions_seq", ["seq"], unique=False)

    op.create_table(
        "resource_providers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("updated_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("uuid"),
    )
    with op.batch_alter_table("resource_providers", schema=None) as batch_op:
        batch_op.create_index("ix_resource_providers_updated_seq", ["updated_seq"], unique=False)

    op.create_table(
        "allocations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_provider_id", sa.Integer(), nullable=False),
        sa.Column("consumer_id", sa.Integer(), nullable=False),
        sa.Column("resource_class", sa.String(length=255), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["consumer_id"], ["consumers.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["resource_provider_id"], ["resource_providers.id"], ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index("ix_allocations_consumer_id", ["consumer_id"], unique=False)
        batch_op.create_index(
            "ix_allocations_rp_rc", ["resource_provider_id", "resource_class"], unique=False
        )

    op.create_table(
        "inventories",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_provider_id", sa.Integer(), nullable=False),
        sa.Column("resource_class", sa.String(length=255), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.Column("min_unit", sa.Integer(), nullable=False),
        sa.Column("max_unit", sa.Integer(), nullable=False),
        sa.Column("step_size", sa.Integer(), nullable=False),
        sa.Column("allocation_ratio", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_provider_id"], ["resource_providers.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("resource_provider_id", "resource_class", name="uq_inventories_rp_rc"),
    )
    op.create_table(
        "resource_provider_traits",
        sa.Column("resource_provider_id", sa.Integer(), nullable=False),
        sa.Column("trait", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_provider_id"], ["resource_providers.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("resource_provider_id", "trait"),
    )
    with op.batch_alter_table("resource_provider_traits", schema=None) as batch_op:
        batch_op.create_index("ix_resource_provider_traits_trait", ["trait"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("resource_provider_traits", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_provider_traits_trait")

    op.drop_table("resource_provider_traits")
    op.drop_table("inventories")
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index("ix_allocations_rp_rc")
        batch_op.drop_index("ix_allocations_consumer_id")

    op.drop_table("allocations")
    with op.batch_alter_table("resource_providers", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_providers_updated_seq")

    op.drop_table("resource_providers")
    with op.batch_alter_table("resource_provider_deletions", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_provider_deletions_seq")

    op.drop_table("resource_provider_deletions")
    op.drop_table("placement_sequence")
    op.drop_table("custom_traits")
    op.drop_table("custom_resource_classes")
    op.drop_table("consumers")
