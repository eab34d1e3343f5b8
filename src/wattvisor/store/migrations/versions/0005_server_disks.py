"""The volume a server boots from.

Revision ID: 0005_server_disks
Revises: 0004_host_credentials
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_server_disks"
down_revision = "0004_host_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("servers", sa.Column("boot_volume_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    op.drop_column("servers", "boot_volume_id")
