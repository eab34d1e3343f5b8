"""Per-project energy per host sample, summed at write time (fast project history).

Revision ID: 0018_project_energy_minutes
Revises: 0017_placement_tree
Create Date: 2026-12-03 07:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_project_energy_minutes"
down_revision = "0017_placement_tree"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "energy_project_samples",
        sa.Column("project", sa.String(length=255), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("host_uuid", sa.String(length=36), nullable=False),
        sa.Column("joules", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("project", "ts_ms", "host_uuid"),
    )
    # Samples stored before this table existed: summed once, as ingest now does.
    op.execute(
        "INSERT INTO energy_project_samples (project, ts_ms, host_uuid, joules) "
        "SELECT project, ts_ms, host_uuid, SUM(joules) FROM energy_server_samples "
        "GROUP BY project, ts_ms, host_uuid"
    )


def downgrade() -> None:
    op.drop_table("energy_project_samples")
