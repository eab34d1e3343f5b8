"""Server metadata: the owner's key/value pairs (Nova's server metadata).

Some keys mean something to wattvisor (``prometheus_exporter_port``,
``service_template``); existing servers get none.

Revision ID: 0011_server_metadata
Revises: 0010_energy_history
Create Date: 2026-12-02 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_server_metadata"
down_revision = "0010_energy_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        batch.add_column(
            sa.Column("server_metadata", sa.JSON(), nullable=False, server_default="{}")
        )


def downgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        batch.drop_column("server_metadata")
