"""Tables of the compute service: users, projects, flavors, images, hosts, servers, volumes,
interfaces, server addresses, the domains hosts run that no server owns.

Only :mod:`wattvisor.compute` reads and writes them; it hands dataclasses, never rows,
to the rest of the system. JSON columns hold small string maps (extra specs, image
properties, share tags) that are always read and written whole.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from wattvisor.store.models import Base


class UserRow(Base):
    """Who may hold tokens: the registry behind the API's token check."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    """Given at registration and never changed (a new key, role or project keeps it)."""
    project: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    public_key: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ProjectRow(Base):
    """A project's stable uuid, recorded the first time the project name is used.

    Projects are names people choose (``compute.identifiers``); the uuid is what the
    guest's metadata and other systems hold on to, as Nova's owner element does.
    """

    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class FlavorRow(Base):
    __tablename__ = "flavors"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    vcpus: Mapped[int] = mapped_column(Integer, nullable=False)
    ram_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    disk_gb: Mapped[int] = mapped_column(Integer, nullable=False)
    swap_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    ephemeral_gb: Mapped[int] = mapped_column(Integer, nullable=False)
    extra_specs: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)


class ImageRow(Base):
    """An image: kernel + initrd + cmdline (direct kernel boot) or a disk file."""

    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    properties: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)
    kernel_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    initrd_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    cmdline: Mapped[str | None] = mapped_column(Text, nullable=True)
    disk_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    disk_format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    disk_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    disk_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    kernel_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kernel_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    initrd_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    initrd_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class HostRow(Base):
    """A libvirt host the controller drives; ``next_index`` numbers its domain names."""

    __tablename__ = "compute_hosts"

    provider_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    libvirt_uri: Mapped[str] = mapped_column(Text, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_index: Mapped[int] = mapped_column(Integer, nullable=False)
    local: Mapped[bool] = mapped_column(Boolean, nullable=False)
    geolocation: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """``latitude,longitude`` pairs, one per public address found (or as an admin set them)."""
    geolocation_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """``lookup`` or ``admin`` (an admin's value is never replaced by a lookup)."""
    geolocation_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why a looked-up geolocation is empty."""


class UnknownDomainRow(Base):
    """A domain a joined host runs that no server owns: reported to admins, left alone.
    The rows of a host are replaced whenever its domains are looked at."""

    __tablename__ = "host_unknown_domains"

    host_uuid: Mapped[str] = mapped_column(
        ForeignKey("compute_hosts.provider_uuid", ondelete="CASCADE"), primary_key=True
    )
    domain_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ServerRow(Base):
    __tablename__ = "servers"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    project: Mapped[str] = mapped_column(String(255), nullable=False)
    user_name: Mapped[str] = mapped_column(String(64), nullable=False)
    flavor_id: Mapped[str] = mapped_column(String(36), nullable=False)
    image_id: Mapped[str] = mapped_column(String(36), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    task: Mapped[str | None] = mapped_column(String(32), nullable=True)
    fault: Mapped[str | None] = mapped_column(Text, nullable=True)
    """What went wrong, in words any member may read (no host names, paths or domains)."""
    fault_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The same failure in the host's own words, for admins; None when ``fault`` says all."""
    host_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    domain_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    power_metrics: Mapped[bool] = mapped_column(Boolean, nullable=False)
    shares: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    boot_volume_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    """The volume the server boots from (its root disk), None when it boots from its image."""
    server_metadata: Mapped[dict[str, str]] = mapped_column(
        JSON, nullable=False, server_default="{}"
    )
    """The owner's key/value metadata (Nova's server metadata), checked when saved."""

    __table_args__ = (Index("ix_servers_project_status", "project", "status"),)


class VolumeRow(Base):
    __tablename__ = "volumes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    project: Mapped[str] = mapped_column(String(255), nullable=False)
    size_gb: Mapped[int] = mapped_column(Integer, nullable=False)
    format: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    host_uuid: Mapped[str] = mapped_column(String(36), nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    server_uuid: Mapped[str | None] = mapped_column(
        ForeignKey("servers.uuid", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_volumes_project", "project"),)


class InterfaceRow(Base):
    __tablename__ = "interfaces"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    server_uuid: Mapped[str] = mapped_column(
        ForeignKey("servers.uuid", ondelete="CASCADE"), nullable=False
    )
    mac: Mapped[str] = mapped_column(String(17), nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    source: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_interfaces_server", "server_uuid"),)


class ServerAddressRow(Base):
    """A server's place on a network: slot ``n`` is the subnet's ``n``-th address.

    One row per server and network. ``slot`` picks the IPv4 address (and the IPv6
    address at the same offset in its subnet); the primary key makes two servers
    holding one address impossible, whichever controller allocates.
    """

    __tablename__ = "server_addresses"

    network: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_uuid: Mapped[str] = mapped_column(
        ForeignKey("servers.uuid", ondelete="CASCADE"), nullable=False
    )
    mac: Mapped[str] = mapped_column(String(17), nullable=False)
    ipv4: Mapped[str] = mapped_column(String(15), nullable=False)
    ipv6: Mapped[str | None] = mapped_column(String(39), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("network", "mac", name="uq_server_addresses_mac"),
        Index("ix_server_addresses_server", "server_uuid"),
    )
