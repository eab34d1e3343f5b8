"""Live migrations and the tunnel resources each one holds while it runs.

Only :mod:`wattvisor.compute.migrations` reads and writes these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from wattvisor.store.models import Base

ACTIVE_MIGRATION_SQL = "state IN ('queued', 'preparing', 'migrating', 'cancelling')"


class MigrationRow(Base):
    """One live migration of one server, from its request to its outcome.

    ``state`` runs ``queued`` → ``preparing`` → ``migrating`` → ``done`` | ``failed`` |
    ``cancelled`` (``cancelling`` while an abort is asked for). At most one migration
    of a server is active at a time (partial unique index).
    """

    __tablename__ = "migrations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    server_uuid: Mapped[str] = mapped_column(String(36), nullable=False)
    source_host: Mapped[str] = mapped_column(String(36), nullable=False)
    target_host: Mapped[str | None] = mapped_column(String(36), nullable=True)
    requested_host: Mapped[str | None] = mapped_column(String(36), nullable=True)
    tunnel: Mapped[bool] = mapped_column(Boolean, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    progress: Mapped[int] = mapped_column(Integer, nullable=False)
    """Percent of the guest's memory sent so far (libvirt's job info)."""
    vni: Mapped[int | None] = mapped_column(Integer, nullable=True)
    subnet: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fault: Mapped[str | None] = mapped_column(Text, nullable=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    """What libvirt and the tunnel reported at the end: downtime, bytes, times."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        Index(
            "uq_migrations_active_server",
            "server_uuid",
            unique=True,
            postgresql_where=text(ACTIVE_MIGRATION_SQL),
            sqlite_where=text(ACTIVE_MIGRATION_SQL),
        ),
        Index("ix_migrations_server", "server_uuid", "created_at"),
    )


class TunnelReservationRow(Base):
    """The VNI and overlay subnet one migration's tunnel holds while it exists.

    Unique on each, so two migrations can never share a VNI or a subnet, whichever
    controllers reserve them; the row goes when the tunnel is torn down.
    """

    __tablename__ = "tunnel_reservations"

    migration_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    vni: Mapped[int] = mapped_column(Integer, nullable=False)
    subnet: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("vni", name="uq_tunnel_reservations_vni"),
        UniqueConstraint("subnet", name="uq_tunnel_reservations_subnet"),
    )
