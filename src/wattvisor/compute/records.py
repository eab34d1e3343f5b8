"""What the compute service hands out: plain frozen dataclasses, never database rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from wattvisor.auth import Role
from wattvisor.energy.snapshot import PowerPoint
from wattvisor.energy.sources import is_meter

ServerStatus = Literal["BUILD", "ACTIVE", "SHUTOFF", "ERROR", "DELETED"]
SERVER_STATUSES: tuple[ServerStatus, ...] = ("BUILD", "ACTIVE", "SHUTOFF", "ERROR", "DELETED")
VolumeStatus = Literal["available", "attaching", "in-use", "detaching"]
VolumeFormat = Literal["raw", "qcow2"]
InterfaceKind = Literal["user", "network", "bridge"]


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    uuid: str
    project: str
    project_uuid: str
    role: Role
    public_key: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class FlavorRecord:
    """A server size: memory in MiB, disks in GiB (swap in MiB), as in Nova."""

    id: str
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    swap_mb: int = 0
    ephemeral_gb: int = 0
    extra_specs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """What a server boots: a kernel + initrd (+ cmdline), or a disk file."""

    id: str
    name: str
    properties: Mapping[str, str] = field(default_factory=dict)
    kernel_path: str | None = None
    initrd_path: str | None = None
    cmdline: str | None = None
    disk_path: str | None = None
    disk_format: str | None = None
    disk_sha256: str | None = None
    disk_size: int | None = None
    kernel_sha256: str | None = None
    kernel_size: int | None = None
    initrd_sha256: str | None = None
    initrd_size: int | None = None
    """Each file's sha256 and size as registered (None: registered before digests were
    kept; the catalog records them on first use)."""

    @property
    def boot(self) -> Literal["kernel", "disk"]:
        return "kernel" if self.kernel_path else "disk"


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One static address of a server on a network, with the MAC of its interface."""

    network: str
    version: int
    address: str
    mac: str


@dataclass(frozen=True, slots=True)
class ServerRecord:
    uuid: str
    name: str
    project: str
    user: str
    flavor_id: str
    image_id: str
    status: ServerStatus
    task: str | None
    fault: str | None
    host_uuid: str | None
    domain_name: str | None
    power_metrics: bool
    shares: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    fault_detail: str | None = None
    """``fault`` in the host's own words (host names, paths, domains): for admins only."""
    boot_volume_id: str | None = None
    """The volume that is the server's root disk; None when it boots from its image."""
    addresses: tuple[ServerAddress, ...] = ()
    """Held from the build until the delete; IPv4 before IPv6."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """The owner's key/value metadata, as given at create (checked then)."""


@dataclass(frozen=True, slots=True)
class VolumeRecord:
    id: str
    name: str
    project: str
    size_gb: int
    format: VolumeFormat
    status: VolumeStatus
    host_uuid: str
    path: str
    server_uuid: str | None
    created_at: datetime

    @property
    def alias(self) -> str:
        return f"ua-{self.id}"


@dataclass(frozen=True, slots=True)
class InterfaceRecord:
    id: str
    server_uuid: str
    mac: str
    kind: InterfaceKind
    source: str | None
    model: str
    created_at: datetime

    @property
    def alias(self) -> str:
        return f"ua-{self.id}"


@dataclass(frozen=True, slots=True)
class HostRecord:
    """A host as the controller knows it, with its placement view and its state."""

    provider_uuid: str
    name: str
    libvirt_uri: str
    enabled: bool
    disabled_reason: str | None
    local: bool
    state: str
    traits: tuple[str, ...] = ()
    inventory: Mapping[str, int] = field(default_factory=dict)
    usage: Mapping[str, int] = field(default_factory=dict)
    energy_source: str = "none"
    servers: int = 0
    unknown_domains: tuple[str, ...] = ()
    """Domains (uuids) the host runs that no server owns: reported, left alone."""
    geolocation: tuple[str, ...] = ()
    """``latitude,longitude`` pairs, one per public address found, or an admin's."""
    geolocation_source: str | None = None
    """``lookup`` or ``admin``; None before anything was looked up."""
    geolocation_reason: str | None = None
    """Why ``geolocation`` is empty (no database, no public address, ...)."""


@dataclass(frozen=True, slots=True)
class PowerView:
    """Power of a server, a project or a host: the latest sample and recent history.

    ``sampled`` is False until the energy sampler has seen the subject once;
    ``source`` is ``rapl``, ``scaphandre``, ``estimate``, ``none``, or several joined by
    ``+`` for a project spread over hosts with different sources.
    """

    subject: str
    watts: float
    joules: float
    source: str
    sampled: bool
    taken_at: float | None
    history: tuple[PowerPoint, ...] = ()
    servers: int = 0

    @property
    def measured(self) -> bool:
        """True only for figures read from a meter: an estimate is not a measurement."""
        return self.sampled and all(is_meter(s) for s in self.source.split("+"))
