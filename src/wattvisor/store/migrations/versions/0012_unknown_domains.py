"""Unknown domains: what a joined host runs that no server owns, kept per host in the
store (every controller shows the same list, and it survives restarts).

Revision ID: 0012_unknown_domains
Revises: 0011_server_metadata
Create Date: 2026-12-02 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_unknown_domains"
down_revision = "0011_server_metadata"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_unknown_domains",
        sa.Column("host_uuid", sa.String(length=36), nullable=False),
        sa.Column("domain_uuid", sa.String(length=36), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host_uuid"], ["compute_hosts.provider_uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host_uuid", "domain_uuid"),
    )


def downgrade() -> None:
    op.drop_table("host_unknown_domains")
