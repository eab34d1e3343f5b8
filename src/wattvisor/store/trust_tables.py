"""Tables of the trust between controllers and host agents.

``cluster_keys`` holds the public halves of the key the controllers share (the private
half is a file on each controller); ``join_tokens`` makes each join token single-use;
``host_credentials`` holds each joined host's own public keys; ``host_agents`` what a
joined host reported about itself. Only :mod:`wattvisor.compute.host_trust` reads and
writes them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from wattvisor.store.models import Base


class ClusterKeyRow(Base):
    """A public key of the cluster; ``retired_at`` NULL for the current one, else the moment
    it stops being accepted (in the future while a rotation's grace period runs)."""

    __tablename__ = "cluster_keys"

    public_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(36), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JoinTokenRow(Base):
    """A join token handed out by an admin; ``used_at`` is set once, by the redemption."""

    __tablename__ = "join_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    used_by_host: Mapped[str | None] = mapped_column(String(36), nullable=True)


class HostCredentialRow(Base):
    """A public key a joined host signs its calls with; ``revoked_at`` NULL while current,
    else the moment it stops being accepted (in the future during a rotation's grace)."""

    __tablename__ = "host_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host_uuid: Mapped[str] = mapped_column(
        ForeignKey("compute_hosts.provider_uuid", ondelete="CASCADE"), nullable=False
    )
    public_key: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_host_credentials_host", "host_uuid"),)


class HostAgentRow(Base):
    """What a host that joined through its agent reported: where to reach it, what meters it."""

    __tablename__ = "host_agents"

    host_uuid: Mapped[str] = mapped_column(
        ForeignKey("compute_hosts.provider_uuid", ondelete="CASCADE"), primary_key=True
    )
    addresses: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    ip_addresses: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """The host's IP addresses as its agent last reported them (join or heartbeat)."""
    energy_source: Mapped[str] = mapped_column(String(32), nullable=False)
    join_token_id: Mapped[str] = mapped_column(String(36), nullable=False)
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    domain_states: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    """The host's domains (lower-case uuid -> libvirt state) as its agent last reported
    them with a heartbeat; the power sync reads them instead of asking the host."""
    domain_states_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    """When the controller received :attr:`domain_states`."""
