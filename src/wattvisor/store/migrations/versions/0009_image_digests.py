"""The sha256 and size of each image file (disk, kernel, initrd).

Existing images get none here: hashing every image file in a migration could take
minutes and fail on a file that has since moved. The catalog records a file's digest
the first time it is needed (a host fetches it or a server boots it), and from then
on a file whose content differs is refused.

Revision ID: 0009_image_digests
Revises: 0008_identity
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_image_digests"
down_revision = "0008_identity"
branch_labels = None
depends_on = None

_COLUMNS = ("disk", "kernel", "initrd")


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        for part in _COLUMNS:
            batch.add_column(sa.Column(f"{part}_sha256", sa.String(length=64), nullable=True))
            batch.add_column(sa.Column(f"{part}_size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        for part in _COLUMNS:
            batch.drop_column(f"{part}_size")
            batch.drop_column(f"{part}_sha256")
