"""Each server's highest energy counter per host, kept at write time (fast totals).

Revision ID: 0020_energy_server_counters
Revises: 0019_domain_state_reports
Create Date: 2026-12-03 07:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_energy_server_counters"
down_revision = "0019_domain_state_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "energy_server_counters",
        sa.Column("server_uuid", sa.String(length=36), nullable=False),
        sa.Column("host_uuid", sa.String(length=36), nullable=False),
        sa.Column("project", sa.String(length=255), nullable=False),
        sa.Column("energy_joules_total", sa.Float(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("server_uuid", "host_uuid"),
    )
    op.create_index("ix_energy_server_counters_project", "energy_server_counters", ["project"])
    # Counters stored before this table existed: the highest of samples and rollups.
    op.execute(
        "INSERT INTO energy_server_counters "
        "(server_uuid, host_uuid, project, energy_joules_total, ts_ms) "
        "SELECT server_uuid, host_uuid, MAX(project), MAX(energy_joules_total), MAX(t) FROM ("
        " SELECT server_uuid, host_uuid, project, energy_joules_total, ts_ms AS t"
        " FROM energy_server_samples"
        " UNION ALL"
        " SELECT server_uuid, host_uuid, project, energy_joules_total, bucket_ms AS t"
        " FROM energy_server_rollups"
        ") AS every_counter GROUP BY server_uuid, host_uuid"
    )


def downgrade() -> None:
    op.drop_index("ix_energy_server_counters_project", table_name="energy_server_counters")
    op.drop_table("energy_server_counters")
