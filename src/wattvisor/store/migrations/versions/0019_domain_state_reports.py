"""Domain state reports: each agent sends its host's domain states with a heartbeat
(when they changed), and the power sync reads them from the store.

Existing hosts start without a report; the power sync asks such a host itself until
its agent reports.

Revision ID: 0019_domain_state_reports
Revises: 0018_project_energy_minutes
Create Date: 2026-12-03 07:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_domain_state_reports"
down_revision = "0018_project_energy_minutes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("host_agents") as batch:
        batch.add_column(sa.Column("domain_states", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("domain_states_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("host_agents") as batch:
        batch.drop_column("domain_states_at")
        batch.drop_column("domain_states")
