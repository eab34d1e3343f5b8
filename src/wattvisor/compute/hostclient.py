"""The seam between the controller and a host: everything the controller asks of a host.

The controller never imports libvirt; it holds one :class:`HostClient` per host.
:class:`wattvisor.compute.local_host.LocalHostClient` serves a host in-process
(a :class:`~wattvisor.host.driver.HostDriver` plus, on the machine the process
runs on, the energy sampler); :class:`wattvisor.compute.hostclient_http.HttpHostClient`
calls the same protocol on a host's ``wattvisor agent``. Requests and results are
plain dataclasses, so they cross the network unchanged: a method added here is put
on the wire by naming it in :data:`wattvisor.compute.hostclient_wire.WIRE_METHODS`
and giving ``HttpHostClient`` its one-line method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from wattvisor.energy.snapshot import EnergySnapshot, PowerPoint
from wattvisor.host.console_log import ConsoleLog
from wattvisor.host.driver import HostError, Inventory
from wattvisor.host.live_migration import MigrationOrder, MigrationProgress, MigrationResult
from wattvisor.host.networks import GuestNetwork, NetworkSpec
from wattvisor.host.tunnels import TunnelSpec, TunnelState


class HostOutcomeUnknown(HostError):
    """A call that may have reached the host, whose answer never came back (the agent
    died or the link broke meanwhile): the host may have done all of it, part, or none.

    Unlike a host error the host answered, nothing may be assumed undone: the caller
    asks the host again (the protocol's calls are safe to repeat) before it moves on."""


@dataclass(frozen=True, slots=True)
class SpawnFlavor:
    id: str
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    swap_mb: int
    ephemeral_gb: int
    extra_specs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpawnImage:
    """How the guest boots: direct kernel boot, or a disk file the root overlay is backed by.

    The paths are the controller's; each comes with the sha256 and size it was
    registered with, so a host that fetches the file from the controller (or copies it
    from a local path) checks it before use. A None digest: an image whose file could
    not be read when the controller recorded it.
    """

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


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """Everything a host needs to build and start one server.

    The owner is given by name (what people read) and by uuid (what stays when a name
    is given up and taken again), as the guest's metadata records it.
    """

    server_uuid: str
    display_name: str
    domain_name: str
    project: str
    user: str
    flavor: SpawnFlavor
    image: SpawnImage
    power_metrics: bool
    created_at: datetime
    user_uuid: str
    project_uuid: str
    root_volume: VolumeAttachment | None = None
    """Boot from this volume: it is the root disk, and the image gives only the kernel
    (if any) and its properties."""
    network: GuestNetwork | None = None
    """The server's interface and static addresses; None: the server gets no interface."""


@dataclass(frozen=True, slots=True)
class SpawnResult:
    """What the host built: the domain and the mount tags of its shares."""

    domain_name: str
    share_tags: tuple[str, ...]
    state: str


@dataclass(frozen=True, slots=True)
class MetadataUpdate:
    """Parts of a server's instance metadata to replace; None keeps what the domain has.

    Applied to the running guest and to its persistent definition alike, so a
    ``virsh dumpxml`` of either shows the change at once and after a restart.
    """

    display_name: str | None = None
    flavor: SpawnFlavor | None = None


@dataclass(frozen=True, slots=True)
class VolumeAttachment:
    volume_id: str
    path: str
    format: str


@dataclass(frozen=True, slots=True)
class InterfaceAttachment:
    port_id: str
    mac: str
    kind: str
    source: str | None
    model: str


@dataclass(frozen=True, slots=True)
class HostFacts:
    """Identity and capacity of a host, for registration with placement."""

    provider_uuid: str
    hostname: str
    uri: str
    traits: frozenset[str]
    inventory: Inventory


@dataclass(frozen=True, slots=True)
class IncomingShares:
    """A migrating guest's power-metrics shares, as its target host makes them.

    ``tags`` are the mount tags the guest knows (from its config drive): the target
    must offer the same ones. ``energy_joules`` is the guest's energy total on its
    source when it left, where its counter continues here; ``attach`` plugs the
    virtiofs devices into the guest (they were unplugged on the source for the move).
    """

    server_uuid: str
    domain_name: str
    project: str
    tags: tuple[str, ...]
    energy_joules: float = 0.0
    attach: bool = False


@dataclass(frozen=True, slots=True)
class MigrationEndpoint:
    """How other hosts reach this one for a live migration."""

    underlay_address: str | None
    """The address tunnels to this host end at; None: this host takes no migrations."""
    libvirt_uri: str | None
    """The URI other hosts' libvirtd reach this host's libvirtd at."""


class HostClient(Protocol):
    """One host as the controller sees it. Every method may raise ``HostError``."""

    @property
    def uri(self) -> str: ...

    @property
    def pushes_energy(self) -> bool:
        """True when the host's own agent pushes its energy samples to the controllers'
        store: its figures are read from there, not asked of the host on each request
        (which would not scale, and fails while the host is unreachable)."""
        ...

    def facts(self) -> HostFacts: ...

    def state(self) -> str:
        """``up``, or ``down: <reason>``."""
        ...

    def domain_exists(self, domain_name: str) -> bool: ...

    def domain_states(self) -> dict[str, str]:
        """Every domain's power state by uuid (``running``, ``shutoff``, ``paused``...)."""
        ...

    def spawn(self, request: SpawnRequest) -> SpawnResult:
        """Build and start the server; on failure leave nothing behind and raise."""
        ...

    def stop(self, domain_name: str, timeout_s: float) -> None: ...

    def start(self, domain_name: str) -> None: ...

    def update_metadata(self, domain_name: str, update: MetadataUpdate) -> None:
        """Replace parts of the domain's instance metadata, live (if running) and in its
        persistent config, without restarting it."""
        ...

    def resize(self, domain_name: str, flavor: SpawnFlavor, stop_timeout_s: float) -> str:
        """Give the domain ``flavor``'s vCPUs and memory (and the flavor in its metadata):
        stop it if running, redefine it, start it again. Returns the power state after.

        On failure the previous definition is restored (and started again if it was
        running) before the error is raised, so the guest is as it was.
        """
        ...

    def delete(self, server_uuid: str, domain_name: str) -> None:
        """Destroy and undefine the domain, forget its energy, remove its files."""
        ...

    def create_volume(self, volume_id: str, size_gb: int, fmt: str) -> str:
        """Create a volume in the host's storage pool; returns its path on the host."""
        ...

    def delete_volume(self, path: str) -> None: ...

    def attach_volume(self, domain_name: str, volume: VolumeAttachment) -> None: ...

    def attach_interface(self, domain_name: str, interface: InterfaceAttachment) -> None: ...

    def detach_by_alias(self, domain_name: str, alias: str) -> None: ...

    def console_log(
        self, server_uuid: str, *, lines: int | None, cursor: str | None, max_bytes: int
    ) -> ConsoleLog:
        """The server's serial console log (see :mod:`wattvisor.host.console_log`); empty
        when it has none. Raises ``CursorError`` for a cursor no answer gave."""
        ...

    def energy_source(self) -> str:
        """``rapl``, ``scaphandre``, ``estimate``, or ``none`` (not measured here)."""
        ...

    def energy_snapshot(self) -> EnergySnapshot | None: ...

    def vm_history(self, server_uuid: str) -> list[PowerPoint]: ...

    def project_history(self, project: str) -> list[PowerPoint]: ...

    def host_history(self) -> list[PowerPoint]: ...

    def migration_endpoint(self) -> MigrationEndpoint: ...

    def prepare_incoming(self, network: NetworkSpec | None) -> None:
        """Make this host ready to receive a migrating guest: the network its interface
        is plugged into exists and runs here."""
        ...

    def prepare_incoming_shares(self, shares: IncomingShares) -> None:
        """Check that this host offers the guest's power-metrics shares (the same mount
        tags, read-only) and make their directories and read-only views (idempotent);
        raises naming what is missing."""
        ...

    def plug_incoming_shares(self, shares: IncomingShares) -> list[str]:
        """The guest arrived: its counter continues from ``energy_joules`` in this host's
        share, whose devices are plugged in when ``attach``; the mount tags plugged."""
        ...

    def release_incoming_shares(self, domain_name: str) -> None:
        """Remove shares prepared for a guest that did not arrive (nothing when a domain
        of that name is defined here)."""
        ...

    def tunnel_up(self, spec: TunnelSpec) -> TunnelState:
        """Make this host's end of a migration's VXLAN tunnel (idempotent)."""
        ...

    def tunnel_down(self, migration_id: str) -> TunnelState | None:
        """Remove this host's end of the tunnel; its last counters, None if there was none."""
        ...

    def tunnels(self) -> list[TunnelState]:
        """Every migration tunnel this host has now."""
        ...

    def migrate_out(self, order: MigrationOrder, timeout_s: float) -> MigrationResult:
        """Migrate a running domain live to another host (blocks until done; on failure
        the guest runs on here and this raises)."""
        ...

    def migration_progress(self, domain_name: str) -> MigrationProgress | None: ...

    def abort_migration(self, domain_name: str) -> bool: ...

    def close(self) -> None: ...
