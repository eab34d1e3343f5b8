"""Compute tables: users, flavors, images, hosts, servers, volumes, interfaces.

Revision ID: 0002_compute
Revises: 0001_placement
Create Date: 2026-11-22 00:21:44.382537
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_compute"
down_revision = "0001_placement"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compute_hosts",
        sa.Column("provider_uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("libvirt_uri", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("next_index", sa.Integer(), nullable=False),
        sa.Column("local", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("provider_uuid"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "flavors",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.Integer(), nullable=False),
        sa.Column("disk_gb", sa.Integer(), nullable=False),
        sa.Column("swap_mb", sa.Integer(), nullable=False),
        sa.Column("ephemeral_gb", sa.Integer(), nullable=False),
        sa.Column("extra_specs", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("kernel_path", sa.Text(), nullable=True),
        sa.Column("initrd_path", sa.Text(), nullable=True),
        sa.Column("cmdline", sa.Text(), nullable=True),
        sa.Column("disk_path", sa.Text(), nullable=True),
        sa.Column("disk_format", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "servers",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("project", sa.String(length=255), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("flavor_id", sa.String(length=36), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=True),
        sa.Column("fault", sa.Text(), nullable=True),
        sa.Column("host_uuid", sa.String(length=36), nullable=True),
        sa.Column("domain_name", sa.String(length=255), nullable=True),
        sa.Column("power_metrics", sa.Boolean(), nullable=False),
        sa.Column("shares", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
    )
    op.create_index("ix_servers_project_status", "servers", ["project", "status"], unique=False)

    op.create_table(
        "users",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "interfaces",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("server_uuid", sa.String(length=36), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["server_uuid"], ["servers.uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mac"),
    )
    op.create_index("ix_interfaces_server", "interfaces", ["server_uuid"], unique=False)

    op.create_table(
        "volumes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("project", sa.String(length=255), nullable=False),
        sa.Column("size_gb", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("host_uuid", sa.String(length=36), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("server_uuid", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["server_uuid"], ["servers.uuid"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_volumes_project", "volumes", ["project"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_volumes_project", table_name="volumes")

    op.drop_table("volumes")
    op.drop_index("ix_interfaces_server", table_name="interfaces")

    op.drop_table("interfaces")
    op.drop_table("users")
    op.drop_index("ix_servers_project_status", table_name="servers")

    op.drop_table("servers")
    op.drop_table("images")
    op.drop_table("flavors")
    op.drop_table("compute_hosts")
