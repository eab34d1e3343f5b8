"""Cache generations (users, catalog) and the admin-only detail of a server's fault.

Revision ID: 0003_cache_generations
Revises: 0002_compute
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_cache_generations"
down_revision = "0002_compute"
branch_labels = None
depends_on = None


def upgrade() -> None:
    generations = op.create_table(
        "cache_generations",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.bulk_insert(generations, [{"name": "users", "value": 0}, {"name": "catalog", "value": 0}])
    op.add_column("servers", sa.Column("fault_detail", sa.Text(), nullable=True))
    # Faults written before may hold a host's words: they become the admin's detail, and
    # members read a statement that says so.
    op.execute(
        "UPDATE servers SET fault_detail = fault, fault = 'the server failed; an admin "
        "sees the host''s own message in the server''s fault' WHERE fault IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("UPDATE servers SET fault = fault_detail WHERE fault_detail IS NOT NULL")
    op.drop_column("servers", "fault_detail")
    op.drop_table("cache_generations")
