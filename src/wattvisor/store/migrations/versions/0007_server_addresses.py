"""Server addresses: each server's slot, MAC and static addresses on its network.

Revision ID: 0007_server_addresses
Revises: 0006_tasks
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_server_addresses"
down_revision = "0006_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_addresses",
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("server_uuid", sa.String(length=36), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("ipv4", sa.String(length=15), nullable=False),
        sa.Column("ipv6", sa.String(length=39), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["server_uuid"], ["servers.uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("network", "slot"),
        sa.UniqueConstraint("network", "mac", name="uq_server_addresses_mac"),
    )
    op.create_index("ix_server_addresses_server", "server_addresses", ["server_uuid"])


def downgrade() -> None:
    op.drop_index("ix_server_addresses_server", table_name="server_addresses")
    op.drop_table("server_addresses")
