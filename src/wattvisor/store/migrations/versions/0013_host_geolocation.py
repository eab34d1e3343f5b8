"""Host geolocation: the pairs, where they came from (lookup or admin) and why they are
empty; the IP addresses each agent reports.

Existing hosts start without a geolocation; a joined host gets one at its next
heartbeat (the agent sends its addresses with each).

Revision ID: 0013_host_geolocation
Revises: 0012_unknown_domains
Create Date: 2026-12-02 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_host_geolocation"
down_revision = "0012_unknown_domains"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("compute_hosts") as batch:
        batch.add_column(sa.Column("geolocation", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("geolocation_source", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("geolocation_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("host_agents") as batch:
        batch.add_column(sa.Column("ip_addresses", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("host_agents") as batch:
        batch.drop_column("ip_addresses")
    with op.batch_alter_table("compute_hosts") as batch:
        batch.drop_column("geolocation_reason")
        batch.drop_column("geolocation_source")
        batch.drop_column("geolocation")
