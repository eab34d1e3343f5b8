"""Request and response bodies of the ``/v1`` API (the OpenAPI document is generated from them).

Fields marked ``json_schema_extra=ADMIN_ONLY`` (host names and uuids, host paths,
libvirt URIs, domain names) are removed from responses for members by
:func:`wattvisor.auth.redact_for`; they are optional so that both views validate.
Text a request names things with is :data:`~wattvisor.compute.names.PrintableText`
(no control or format characters) and has a length limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wattvisor.auth import ADMIN_ONLY
from wattvisor.compute import (
    FlavorRecord,
    HostRecord,
    ImageRecord,
    InterfaceRecord,
    PowerView,
    ServerRecord,
    UserRecord,
    VolumeRecord,
)
from wattvisor.compute.console import ConsoleLogView
from wattvisor.compute.identities import ProjectRecord
from wattvisor.compute.migrations import MigrationRecord
from wattvisor.compute.names import PrintableText
from wattvisor.compute.power import ServerPowerView


class _Request(BaseModel):
    # Strict: true is not a size of 1 GiB, nor "1" a count of vCPUs.
    model_config = ConfigDict(extra="forbid", strict=True)


# -- errors -------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable reason, e.g. not_found")
    message: str = Field(description="what went wrong, with the offending value")
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    """The one error shape of the API."""

    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 422, 502)
}

# -- flavors ------------------------------------------------------------------------------


class FlavorCreate(_Request):
    name: PrintableText = Field(min_length=1, max_length=255)
    vcpus: int = Field(ge=1, le=1024)
    ram_mb: int = Field(ge=16, le=16 * 1024 * 1024, description="memory in MiB")
    disk_gb: int = Field(default=0, ge=0, le=1024 * 1024, description="root disk in GiB")
    swap_mb: int = Field(default=0, ge=0, le=16 * 1024 * 1024)
    ephemeral_gb: int = Field(default=0, ge=0, le=1024 * 1024)
    extra_specs: dict[PrintableText, PrintableText] = Field(
        default_factory=dict, description="e.g. {'hw:power_metrics': 'true'}"
    )
    id: PrintableText | None = Field(default=None, min_length=1, max_length=36)


class Flavor(BaseModel):
    id: str
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    swap_mb: int
    ephemeral_gb: int
    extra_specs: dict[str, str]

    @classmethod
    def of(cls, record: FlavorRecord) -> Flavor:
        return cls(
            id=record.id, name=record.name, vcpus=record.vcpus, ram_mb=record.ram_mb,
            disk_gb=record.disk_gb, swap_mb=record.swap_mb, ephemeral_gb=record.ephemeral_gb,
            extra_specs=dict(record.extra_specs),
        )  # fmt: skip


# -- images -------------------------------------------------------------------------------


class ImageCreate(_Request):
    name: PrintableText = Field(min_length=1, max_length=255)
    properties: dict[PrintableText, PrintableText] = Field(
        default_factory=dict, description="e.g. hw_vif_model"
    )
    kernel_path: PrintableText | None = Field(
        default=None, max_length=4096, description="host path (direct kernel boot)"
    )
    initrd_path: PrintableText | None = Field(default=None, max_length=4096)
    cmdline: PrintableText | None = Field(default=None, max_length=4096)
    disk_path: PrintableText | None = Field(
        default=None, max_length=4096, description="host path of a disk image"
    )
    disk_format: Literal["raw", "qcow2"] | None = None


class ImageFileDigest(BaseModel):
    """A file of the image as registered: hosts check what they fetch against it."""

    sha256: str
    size: int


class Image(BaseModel):
    id: str
    name: str
    properties: dict[str, str]
    boot: Literal["kernel", "disk"]
    cmdline: str | None = None
    kernel_path: str | None = Field(default=None, json_schema_extra=ADMIN_ONLY)
    initrd_path: str | None = Field(default=None, json_schema_extra=ADMIN_ONLY)
    disk_path: str | None = Field(default=None, json_schema_extra=ADMIN_ONLY)
    disk_format: str | None = None
    files: dict[str, ImageFileDigest] = Field(
        default_factory=dict,
        description="sha256 and size of each file (disk, kernel, initrd) as registered; "
        "hosts fetch them from GET /v1/images/{id}/file?part= and check them",
    )

    @classmethod
    def of(cls, record: ImageRecord) -> Image:
        files = {}
        for part in ("disk", "kernel", "initrd"):
            sha256, size = getattr(record, f"{part}_sha256"), getattr(record, f"{part}_size")
            if sha256 is not None and size is not None:
                files[part] = ImageFileDigest(sha256=sha256, size=size)
        return cls(
            id=record.id, name=record.name, properties=dict(record.properties),
            boot=record.boot, cmdline=record.cmdline, kernel_path=record.kernel_path,
            initrd_path=record.initrd_path, disk_path=record.disk_path,
            disk_format=record.disk_format, files=files,
        )  # fmt: skip


# -- servers ------------------------------------------------------------------------------


class ServerCreate(_Request):
    name: PrintableText = Field(min_length=1, max_length=255)
    flavor: PrintableText = Field(min_length=1, max_length=255, description="flavor id or name")
    image: PrintableText = Field(min_length=1, max_length=255, description="image id or name")
    power_metrics: bool | None = Field(
        default=None,
        description="share the server's own energy counter with it (read-only virtiofs); "
        "default: as the flavor (hw:power_metrics) and image (hw_power_metrics) say",
    )
    boot_volume: PrintableText | None = Field(
        default=None, min_length=1, max_length=255,
        description="id or name of an available volume of your project to boot from: it "
        "becomes the root disk (in-use until the server is deleted); the image then gives "
        "only its kernel, if it has one, and its properties",
    )  # fmt: skip
    metadata: dict[PrintableText, PrintableText] | None = Field(
        default=None,
        description="key/value pairs kept with the server (Nova's server metadata); "
        "prometheus_exporter_port=<port> makes the guest's exporter a Prometheus target, "
        "service_template=<id> names the service template it was deployed from",
    )


class ServerAddressOut(BaseModel):
    """One address as Nova lists it under ``addresses.<network name>``."""

    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    addr: str
    version: Literal[4, 6]
    mac_addr: str = Field(alias="OS-EXT-IPS-MAC:mac_addr")
    type: Literal["fixed"] = Field(default="fixed", alias="OS-EXT-IPS:type")


def addresses_by_network(record: ServerRecord) -> dict[str, list[ServerAddressOut]]:
    """``{"<network name>": [{"addr", "version", "OS-EXT-IPS-MAC:mac_addr", ...}]}``."""
    grouped: dict[str, list[ServerAddressOut]] = {}
    for a in record.addresses:
        grouped.setdefault(a.network, []).append(
            ServerAddressOut(addr=a.address, version=4 if a.version == 4 else 6, mac_addr=a.mac)
        )
    return grouped


class ServerUpdate(_Request):
    name: PrintableText = Field(
        min_length=1, max_length=255,
        description="the new display name; the domain on the host keeps its own name",
    )  # fmt: skip


class ServerResize(_Request):
    flavor: PrintableText = Field(
        min_length=1, max_length=255,
        description="flavor id or name; the server stays on its host, which must fit it",
    )  # fmt: skip


class ServerMigrate(_Request):
    host: PrintableText | None = Field(
        default=None, min_length=1, max_length=255,
        description="target host id or name; unset: the scheduler picks one (not the source)",
    )  # fmt: skip
    tunnel: bool = Field(
        default=True,
        description="send the memory over a VXLAN tunnel made for this migration only",
    )


class Migration(BaseModel):
    id: str
    server_id: str
    source_host: str
    target_host: str | None
    tunnel: bool
    state: str = Field(description="queued, preparing, migrating, cancelling, done, failed "
                       "or cancelled")  # fmt: skip
    progress: int = Field(description="percent of the guest's memory sent (libvirt job info)")
    vni: int | None
    subnet: str | None
    fault: str | None
    stats: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: MigrationRecord) -> Migration:
        return cls(
            id=record.id, server_id=record.server_id, source_host=record.source_host,
            target_host=record.target_host, tunnel=record.tunnel, state=record.state,
            progress=record.progress, vni=record.vni, subnet=record.subnet, fault=record.fault,
            stats=dict(record.stats), created_at=record.created_at,
            updated_at=record.updated_at,
        )  # fmt: skip


class Server(BaseModel):
    id: str
    name: str
    project: str
    user: str
    flavor_id: str
    image_id: str
    status: Literal["BUILD", "ACTIVE", "SHUTOFF", "ERROR", "DELETED"]
    task: str | None
    fault: str | None = Field(
        description="why the server is in ERROR or its last task failed: for members in "
        "words without host names, paths or domains; for admins the host's own message"
    )
    power_metrics: bool
    mount_tags: list[str] = Field(description="virtiofs tags the guest can mount")
    boot_volume_id: str | None = Field(
        default=None, description="the volume that is the root disk; null: booted from the image"
    )
    addresses: dict[str, list[ServerAddressOut]] = Field(
        default_factory=dict,
        description="static addresses by network name, as Nova shows them; held from the "
        "build until the delete, and reached on the guest's config drive",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, description="the key/value pairs given at create"
    )
    created_at: datetime
    updated_at: datetime
    host: str | None = Field(default=None, json_schema_extra=ADMIN_ONLY)
    host_id: str | None = Field(default=None, json_schema_extra=ADMIN_ONLY)
    domain_name: str | None = Field(default=None, json_schema_extra=ADMIN_ONLY)
    host_status: Literal["up", "down"] | None = Field(
        default=None,
        description="down: the server's host stopped answering (its agent sends no "
        "heartbeat); the server keeps its status and is not rebuilt elsewhere",
    )

    @classmethod
    def of(
        cls,
        record: ServerRecord,
        host_name: str | None,
        fault: str | None,
        host_down: bool = False,
    ) -> Server:
        return cls(
            id=record.uuid, name=record.name, project=record.project, user=record.user,
            flavor_id=record.flavor_id, image_id=record.image_id, status=record.status,
            task=record.task, fault=fault, power_metrics=record.power_metrics,
            mount_tags=list(record.shares), addresses=addresses_by_network(record),
            metadata=dict(record.metadata), created_at=record.created_at,
            updated_at=record.updated_at, host=host_name, host_id=record.host_uuid,
            domain_name=record.domain_name, boot_volume_id=record.boot_volume_id,
            host_status=None if record.host_uuid is None else ("down" if host_down else "up"),
        )  # fmt: skip


# -- volumes and interfaces ---------------------------------------------------------------


class VolumeCreate(_Request):
    name: PrintableText = Field(min_length=1, max_length=255)
    size_gb: int = Field(ge=1, le=16384)
    format: Literal["raw", "qcow2"] = "qcow2"
    server_id: PrintableText | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="create the volume on this server's host, so that it can be attached "
        "to it (volumes are local to their host); default: the controller's own host",
    )


class VolumeAttach(_Request):
    volume_id: PrintableText = Field(min_length=1, max_length=255)


class Volume(BaseModel):
    id: str
    name: str
    project: str
    size_gb: int
    format: str
    status: Literal["available", "attaching", "in-use", "detaching"] = Field(
        description="attaching and detaching: a device change is under way (an attach or "
        "detach that outlasted its request's wait finishes in the background)"
    )
    server_id: str | None
    alias: str = Field(description="the device alias while attached: ua-<volume id>")
    created_at: datetime
    host: str | None = Field(default=None, json_schema_extra=ADMIN_ONLY)
    host_id: str | None = Field(default=None, json_schema_extra=ADMIN_ONLY)
    host_path: str | None = Field(default=None, json_schema_extra=ADMIN_ONLY)

    @classmethod
    def of(cls, record: VolumeRecord, host_name: str | None) -> Volume:
        return cls(
            id=record.id, name=record.name, project=record.project, size_gb=record.size_gb,
            format=record.format, status=record.status, server_id=record.server_uuid,
            alias=record.alias, created_at=record.created_at, host=host_name,
            host_id=record.host_uuid, host_path=record.path,
        )  # fmt: skip


class InterfaceCreate(_Request):
    model: Literal["virtio", "e1000", "e1000e", "rtl8139"] | None = Field(
        default=None, description="default: the image's hw_vif_model, else virtio"
    )


class Interface(BaseModel):
    id: str
    server_id: str
    mac: str
    kind: str
    model: str
    alias: str
    created_at: datetime
    source: str | None = Field(default=None, json_schema_extra=ADMIN_ONLY)

    @classmethod
    def of(cls, record: InterfaceRecord) -> Interface:
        return cls(
            id=record.id, server_id=record.server_uuid, mac=record.mac, kind=record.kind,
            model=record.model, alias=record.alias, created_at=record.created_at,
            source=record.source,
        )  # fmt: skip


# -- users --------------------------------------------------------------------------------


class UserCreate(_Request):
    name: PrintableText = Field(min_length=1, max_length=64)
    project: PrintableText = Field(min_length=1, max_length=255)
    role: Literal["admin", "member"] = "member"
    public_key: str = Field(
        max_length=200, description="Ed25519 public key: 'ed25519/<64 hex>' or bare hex"
    )


class UserUpdate(_Request):
    project: PrintableText = Field(min_length=1, max_length=255)
    role: Literal["admin", "member"] = "member"
    public_key: str = Field(max_length=200)


class User(BaseModel):
    name: str
    uuid: str = Field(description="the user's stable id: given at registration, never changed")
    project: str
    project_uuid: str = Field(description="the project's stable id, recorded on its first use")
    role: str
    public_key: str
    created_at: datetime

    @classmethod
    def of(cls, record: UserRecord) -> User:
        return cls(
            name=record.name, uuid=record.uuid, project=record.project,
            project_uuid=record.project_uuid, role=record.role,
            public_key=record.public_key, created_at=record.created_at,
        )  # fmt: skip


class Project(BaseModel):
    name: str
    uuid: str = Field(description="the project's stable id, recorded on its first use")
    created_at: datetime

    @classmethod
    def of(cls, record: ProjectRecord) -> Project:
        return cls(name=record.name, uuid=record.uuid, created_at=record.created_at)


class Me(BaseModel):
    user: str
    project: str
    role: str


# -- hosts --------------------------------------------------------------------------------


class HostDisable(_Request):
    reason: PrintableText | None = Field(default=None, max_length=255)


class HostUpdate(_Request):
    """What an admin may change on a host."""

    model_config = ConfigDict(extra="forbid", strict=False)

    geolocation: list[Any] | None = Field(
        default=None,
        description="'latitude,longitude' pairs in decimal degrees (e.g. ['48.8566,2.3522']); "
        "kept until cleared, never replaced by a lookup. null clears it: the host returns to "
        "the geolocation looked up from its addresses",
        max_length=64,
    )


class Host(BaseModel):
    id: str
    name: str
    libvirt_uri: str
    enabled: bool
    disabled_reason: str | None
    local: bool
    state: str
    traits: list[str]
    inventory: dict[str, int]
    usage: dict[str, int]
    energy_source: str
    servers: int
    unknown_domains: list[str] = Field(
        default_factory=list,
        description="uuids of domains the host runs that no server owns; left alone",
    )
    geolocation: list[str] = Field(
        default_factory=list,
        description="'latitude,longitude' pairs, one per public address of the host found "
        "in the controller's geolocation database, or as an admin set them",
    )
    geolocation_source: Literal["lookup", "admin"] | None = Field(
        default=None,
        description="lookup: from the host's addresses (refreshed when they change); admin: "
        "set with PATCH /v1/hosts/{id} and kept until cleared with null",
    )
    geolocation_reason: str | None = Field(
        default=None,
        description="why geolocation is empty: no database configured, no public address, "
        "address not in database, lookup failed: ...",
    )

    @classmethod
    def of(cls, record: HostRecord) -> Host:
        return cls(
            id=record.provider_uuid, name=record.name, libvirt_uri=record.libvirt_uri,
            enabled=record.enabled, disabled_reason=record.disabled_reason, local=record.local,
            state=record.state, traits=list(record.traits), inventory=dict(record.inventory),
            usage=dict(record.usage), energy_source=record.energy_source,
            servers=record.servers, unknown_domains=list(record.unknown_domains),
            geolocation=list(record.geolocation),
            geolocation_source=record.geolocation_source,
            geolocation_reason=record.geolocation_reason,
        )  # fmt: skip


# -- power --------------------------------------------------------------------------------


class PowerSample(BaseModel):
    taken_at: float
    watts: float
    joules: float


class Power(BaseModel):
    subject: str = Field(description="server id, project or host id")
    watts: float = Field(description="average power over the last sample interval")
    joules: float = Field(description="energy since the subject was first measured")
    source: str = Field(
        description="rapl, scaphandre, estimate (CPU-utilisation model), or none; several "
        "joined by '+' when a project's hosts use different sources"
    )
    sampled: bool = Field(description="the energy sampler has a figure for the subject")
    measured: bool = Field(
        description="the figure was read from a meter (rapl, scaphandre); false for an "
        "estimate and before the first sample"
    )
    taken_at: float | None = Field(description="Unix time of the sample")
    servers: int
    history: list[PowerSample]

    @classmethod
    def of(cls, view: PowerView) -> Power:
        return cls(
            subject=view.subject, watts=view.watts, joules=view.joules, source=view.source,
            sampled=view.sampled, measured=view.measured, taken_at=view.taken_at,
            servers=view.servers,
            history=[
                PowerSample(taken_at=p.taken_at, watts=p.power_watts, joules=p.energy_joules_total)
                for p in view.history
            ],
        )  # fmt: skip


class ServerPower(BaseModel):
    """A server's latest power figures, one row of ``GET /v1/power/servers``."""

    id: str
    name: str
    project: str
    status: str
    watts: float = Field(description="average power over the last sample interval")
    joules: float = Field(description="energy since the server was first measured")
    source: str = Field(description="rapl, scaphandre, estimate (CPU-utilisation model), or none")
    sampled: bool = Field(description="the host's sampler has a figure for the server")
    measured: bool = Field(
        description="the figure was read from a meter (rapl, scaphandre); false for an "
        "estimate and before the first sample"
    )
    taken_at: float | None = Field(description="Unix time of the sample")

    @classmethod
    def of(cls, view: ServerPowerView) -> ServerPower:
        return cls(
            id=view.server_uuid, name=view.name, project=view.project, status=view.status,
            watts=view.watts, joules=view.joules, source=view.source, sampled=view.sampled,
            measured=view.measured, taken_at=view.taken_at,
        )  # fmt: skip


# -- console log --------------------------------------------------------------------------


class ConsoleLog(BaseModel):
    """Part of a server's serial console log, earlier boots included (rotated, capped)."""

    server_id: str
    text: str = Field(
        description="the guest's output: CRLF as LF, invalid UTF-8 replaced, control "
        "characters as the guest wrote them (escape them before showing them on a terminal)"
    )
    lines: int = Field(description="how many lines text holds")
    truncated: bool = Field(
        description="earlier output exists that is not in text (lines, or the size cap)"
    )
    more: bool = Field(
        description="read from a cursor: later output exists already; ask again at once"
    )
    reset: bool = Field(
        description="the cursor's place was rotated away: text starts at the oldest output "
        "kept and some output in between is lost"
    )
    next_cursor: str = Field(
        description="pass as cursor to get only what the guest writes after this answer"
    )

    @classmethod
    def of(cls, view: ConsoleLogView) -> ConsoleLog:
        return cls(
            server_id=view.server_uuid, text=view.text, lines=view.lines,
            truncated=view.truncated, more=view.more, reset=view.reset,
            next_cursor=view.next_cursor,
        )  # fmt: skip
