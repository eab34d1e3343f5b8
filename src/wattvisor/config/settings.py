"""Settings model.

Precedence, highest first: keyword arguments, ``WATTVISOR_*`` environment
variables (nested sections joined with ``__``), the TOML file named by
``--config`` or ``WATTVISOR_CONFIG``, then the embedded defaults, so that
``wattvisor up`` works with no file at all.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path("/var/lib/wattvisor")
_MOUNT_TAG = re.compile(r"^[A-Za-z0-9_.-]{1,36}$")
_LISTEN_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


class ConfigError(ValueError):
    """A settings file or variable that cannot be used; the message says which and why."""


NetworkMode = Literal["nat", "isolated", "bridge", "network"]
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")
_BRIDGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


class HostNetworkSettings(BaseModel):
    """The network every server gets one interface on, and where its addresses come from.

    ``nat`` and ``isolated``: a libvirt network named ``name`` that wattvisor defines
    (autostarted) when the host has none of that name; ``isolated`` has no
    ``<forward>``, so guests reach the host only. ``network``: an existing libvirt
    network ``name``. ``bridge``: an existing host bridge. The subnets say which
    addresses servers get (statically, through the config drive); the first
    address of each is the gateway, i.e. the host's own address on the network.
    """

    mode: NetworkMode = Field(
        default="nat",
        description="nat | isolated (defined by wattvisor when absent) | network (an "
        "existing libvirt network) | bridge (an existing host bridge)",
    )
    name: str = Field(
        default="wattvisor",
        description="libvirt network name (nat, isolated, network); the name servers' "
        "addresses are listed under",
    )
    bridge: str | None = Field(
        default=None, description="host bridge for mode = bridge, e.g. 'br0'"
    )
    ipv4_subnet: str = Field(
        default="10.251.0.0/20",
        description="IPv4 subnet of server addresses; its first address is the gateway",
    )
    ipv6_subnet: str | None = Field(
        default="fd57:7476:6973::/64",
        description="IPv6 subnet of server addresses (unset: IPv4 only)",
    )
    ipv4_gateway: str | None = Field(
        default=None,
        description="gateway on a bridge or an existing network; default the subnet's "
        "first address",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NETWORK_NAME.match(value):
            raise ValueError(
                f"network name {value!r} is not accepted; use 1-50 characters from "
                "A-Z a-z 0-9 _ . -, starting with a letter or digit"
            )
        return value

    @field_validator("bridge")
    @classmethod
    def _check_bridge(cls, value: str | None) -> str | None:
        if value is not None and not _BRIDGE_NAME.match(value):
            raise ValueError(
                f"network bridge {value!r} is not accepted; use an interface name of "
                "1-15 characters from A-Z a-z 0-9 _ . -, e.g. 'br0'"
            )
        return value

    @field_validator("ipv4_subnet")
    @classmethod
    def _check_ipv4(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"network ipv4_subnet {value!r} is not accepted ({exc}); use an IPv4 "
                "network in CIDR form with no host bits, /16 to /29, e.g. '10.251.0.0/20'"
            ) from None
        if not 16 <= net.prefixlen <= 29:
            raise ValueError(
                f"network ipv4_subnet {value!r} is not accepted; its prefix must be /16 to "
                "/29 (room for a gateway and at least 5 servers), e.g. '10.251.0.0/20'"
            )
        return str(net)

    @field_validator("ipv6_subnet")
    @classmethod
    def _check_ipv6(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            net = ipaddress.IPv6Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"network ipv6_subnet {value!r} is not accepted ({exc}); use an IPv6 "
                "network in CIDR form with no host bits, /64 to /120, e.g. 'fd57:7476:6973::/64'"
            ) from None
        if not 64 <= net.prefixlen <= 120:
            raise ValueError(
                f"network ipv6_subnet {value!r} is not accepted; its prefix must be /64 to "
                "/120, e.g. 'fd57:7476:6973::/64'"
            )
        return str(net)

    @model_validator(mode="after")
    def _check_mode(self) -> HostNetworkSettings:
        if self.mode == "bridge" and self.bridge is None:
            raise ValueError(
                "network mode 'bridge' needs bridge = '<host bridge>', e.g. bridge = 'br0'"
            )
        if self.mode != "bridge" and self.bridge is not None:
            raise ValueError(
                f"network bridge {self.bridge!r} is set but mode is {self.mode!r}; set "
                "mode = 'bridge' or remove bridge"
            )
        subnet = ipaddress.IPv4Network(self.ipv4_subnet)
        if self.ipv4_gateway is not None:
            try:
                gateway = ipaddress.IPv4Address(self.ipv4_gateway)
            except ValueError:
                raise ValueError(
                    f"network ipv4_gateway {self.ipv4_gateway!r} is not an IPv4 address"
                ) from None
            if gateway not in subnet or gateway in (
                subnet.network_address,
                subnet.broadcast_address,
            ):
                raise ValueError(
                    f"network ipv4_gateway {self.ipv4_gateway!r} is not a host address of "
                    f"ipv4_subnet {self.ipv4_subnet!r}"
                )
            if self.mode in ("nat", "isolated"):
                raise ValueError(
                    f"network ipv4_gateway {self.ipv4_gateway!r} applies to modes bridge "
                    f"and network only; mode {self.mode!r} makes the host the gateway "
                    "(the subnet's first address)"
                )
        return self


class HostSettings(BaseModel):
    """The libvirt host this process drives."""

    libvirt_uri: str | None = Field(
        default=None,
        description="libvirt URI; unset means qemu:///system when a libvirtd answers, "
        "else the built-in test:///default hypervisor",
    )
    virt_type: Literal["kvm", "qemu"] = "kvm"
    share_local_fs: dict[str, str] = Field(
        default_factory=dict,
        description="host directory -> mount tag shared read-only with guests that ask "
        "for power metrics, e.g. {'/var/lib/libvirt/scaphandre' = 'scaphandre'}; left unset, "
        "`wattvisor up` and `wattvisor agent` share <data_dir>/power-metrics; an agent given an "
        "explicit {} shares nothing (its host does not offer COMPUTE_SHARE_LOCAL_FS)",
    )
    instance_name_template: str = "instance-%08x"
    share_tmpfs_kib: int = Field(
        default=1024,
        ge=0,
        description="each domain's share directory is a tmpfs of this size (0: a plain "
        "directory on the share directory's filesystem)",
    )
    storage_path: Path | None = Field(
        default=None, description="where instance disks live (DISK_GB inventory); default data_dir"
    )
    virtiofsd_path: Path = Path("/usr/lib/qemu/virtiofsd")
    machine_type: str | None = None
    cpu_allocation_ratio: float = Field(default=4.0, gt=0, description="vCPUs per host CPU")
    ram_allocation_ratio: float = Field(default=1.0, gt=0)
    disk_allocation_ratio: float = Field(default=1.0, gt=0)
    reserved_host_cpus: int = Field(default=0, ge=0)
    reserved_host_memory_mb: int = Field(default=512, ge=0, description="kept for the host OS")
    reserved_host_disk_gb: int = Field(default=0, ge=0)
    console_log_max_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=4096,
        le=1 << 40,
        description="a guest's console.log is rotated before a start once it is this large "
        "(virtlogd also rotates it while the guest runs, at its own max_size)",
    )
    console_log_backups: int = Field(
        default=3,
        ge=0,
        le=50,
        description="rotated console logs kept per server (console.log.0 the newest)",
    )
    network: HostNetworkSettings = Field(default_factory=HostNetworkSettings)

    @field_validator("share_local_fs")
    @classmethod
    def _check_shares(cls, value: dict[str, str]) -> dict[str, str]:
        tags: set[str] = set()
        for directory, tag in value.items():
            if not os.path.isabs(directory):
                raise ValueError(
                    f"share_local_fs directory {directory!r} is not absolute; "
                    "use an absolute host path such as '/var/lib/libvirt/scaphandre'"
                )
            if not _MOUNT_TAG.match(tag):
                raise ValueError(
                    f"share_local_fs mount tag {tag!r} for {directory!r} is not accepted; "
                    "use 1-36 characters from A-Z a-z 0-9 _ . -"
                )
            if tag in tags:
                raise ValueError(f"share_local_fs mount tag {tag!r} is used twice")
            tags.add(tag)
        return {os.path.normpath(d): t for d, t in value.items()}

    @field_validator("instance_name_template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        try:
            rendered = value % 1
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"instance_name_template {value!r} must take one integer, e.g. 'instance-%08x'"
            ) from exc
        if not re.match(r"^[A-Za-z0-9_.+-]+$", rendered):
            raise ValueError(
                f"instance_name_template {value!r} renders {rendered!r}; names may use "
                "A-Z a-z 0-9 _ . + - only"
            )
        return value


class StoreSettings(BaseModel):
    """Where the controller keeps its state."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means SQLite at <data_dir>/wattvisor.db",
    )


class SchedulerSettings(BaseModel):
    """How the scheduler turns a flavor and an image into a host."""

    image_metadata_prefilter: bool = Field(
        default=True,
        description="require COMPUTE_*/HW_ARCH_*/CUSTOM_* traits derived from image properties",
    )
    power_metrics_prefilter: bool = Field(
        default=True,
        description="require COMPUTE_SHARE_LOCAL_FS for hw:power_metrics / hw_power_metrics",
    )
    explicit_traits_prefilter: bool = Field(
        default=True, description="apply trait:NAME=required|forbidden extra specs/properties"
    )
    ram_weight_multiplier: float = Field(default=1.0, description="prefer hosts with free RAM")
    cpu_weight_multiplier: float = Field(default=1.0, description="prefer hosts with free vCPU")
    energy_weight_multiplier: float = Field(
        default=1.0, description="prefer hosts with the fewest measured watts per used vCPU"
    )
    max_attempts: int = Field(
        default=3, ge=1, description="hosts tried for one boot when spawning fails"
    )
    max_claim_conflicts: int = Field(
        default=20, ge=1, description="claims lost to concurrent schedulers before giving up"
    )
    disabled_hosts_prefilter: bool = Field(
        default=True,
        description="forbid COMPUTE_STATUS_DISABLED so that disabled hosts get no new servers",
    )


class EnergySettings(BaseModel):
    """How host power is measured."""

    source: Literal["auto", "rapl", "scaphandre", "model"] = "auto"
    powercap_root: Path = Path("/sys/class/powercap")
    interval_s: float = Field(default=2.0, gt=0)
    scaphandre_url: str | None = None
    model_idle_watts: float = Field(default=60.0, ge=0)
    model_max_watts: float = Field(default=200.0, gt=0)
    scaphandre_timeout_s: float = Field(default=1.0, gt=0)
    procfs_root: Path = Field(
        default=Path("/proc"), description="procfs mount; tests and benchmarks point it elsewhere"
    )
    state_file: Path | None = Field(
        default=None,
        description="where energy counters survive restarts; default <data_dir>/energy-state.json",
    )
    top_processes: int = Field(
        default=10, ge=0, le=1000, description="processes exported individually (by power)"
    )
    history_samples: int = Field(
        default=150, ge=1, description="samples kept in memory for recent-history endpoints"
    )
    compat_series: bool = Field(
        default=False,
        description="also export scaphandre-named series (scaph_*) and a per-VM uW gauge "
        "for existing dashboards",
    )
    push_interval_s: float = Field(
        default=10.0, gt=0, le=3600, description="how often an agent pushes its samples"
    )
    push_batch_samples: int = Field(
        default=60, ge=1, le=10_000, description="samples per push, at most"
    )
    push_backlog_samples: int = Field(
        default=1800, ge=1, le=1_000_000, description="samples an agent keeps in memory "
        "while its controllers are unreachable; beyond it the oldest are dropped",
    )  # fmt: skip
    guest_max_energy_range_uj: int = Field(
        default=262_143_328_850,
        gt=0,
        description="where the guest-visible energy_uj counter wraps, like a real RAPL package",
    )


class HistorySettings(BaseModel):
    """The fleet's energy history, kept by the controllers in the store."""

    raw_retention_s: int = Field(
        default=86400, ge=60, le=30 * 86400,
        description="samples are kept at full resolution this long, then rolled up",
    )  # fmt: skip
    rollup_bucket_s: int = Field(
        default=300, ge=10, le=86400, description="length of a rolled-up bucket (averages, "
        "joule sums); raw_retention_s should be a multiple of it",
    )  # fmt: skip
    rollup_retention_s: int = Field(
        default=30 * 86400, ge=3600, le=3650 * 86400, description="rollups are kept this long"
    )
    max_server_rows: int = Field(
        default=5_000_000, ge=1000, description="cap on per-server history rows (samples and "
        "rollups together); over it the oldest history is dropped first",
    )  # fmt: skip
    downsample_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="how often a controller tries the downsampling duty (0: never)",
    )
    downsample_buckets_per_run: int = Field(
        default=24, ge=1, le=10_000, description="buckets of raw samples rolled up per run, so "
        "one run stays short however far behind it is",
    )  # fmt: skip
    max_batch_samples: int = Field(
        default=500, ge=1, le=10_000, description="samples one push may carry"
    )
    max_future_s: float = Field(
        default=300.0, ge=0, description="samples stamped further ahead of the controller's "
        "clock are refused",
    )  # fmt: skip
    stale_after_s: float = Field(
        default=120.0, gt=0, description="a host's latest pushed sample older than this no "
        "longer counts for current watts (its joules still count)",
    )  # fmt: skip
    prometheus_file_sd: Path | None = Field(
        default=None, description="where the controller writes a Prometheus file_sd list of "
        "every joined agent's /metrics (unset: not written)",
    )  # fmt: skip
    prometheus_vm_file_sd: Path | None = Field(
        default=None, description="where the controller writes a Prometheus file_sd list of "
        "the exporters inside ACTIVE servers (prometheus_exporter_port; unset: not written)",
    )  # fmt: skip
    prometheus_vm_address: Literal["ipv4", "ipv6"] = Field(
        default="ipv4", description="which of a server's addresses Prometheus scrapes its "
        "exporter at (ipv6: in brackets; a server without one falls back to the other)",
    )  # fmt: skip
    prometheus_file_sd_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="how often a controller brings the file_sd "
        "files up to date (one controller of a fleet at a time; rewritten only on change)",
    )  # fmt: skip


class ComputeSettings(BaseModel):
    """How the controller builds, runs and removes servers."""

    workers: int = Field(
        default=4,
        ge=1,
        le=256,
        description="servers built at once (threads that schedule and spawn them), like "
        "Nova's max_concurrent_builds. A build mostly waits on libvirt and QEMU, so 4 "
        "start a burst of servers about twice as fast as 2; builds share the API's "
        "interpreter, so many more slow its requests",
    )
    stop_timeout_s: float = Field(
        default=30.0, ge=0, description="graceful shutdown wait before a server is powered off"
    )
    task_lease_s: float = Field(
        default=30.0,
        ge=2,
        le=3600,
        description="how long a controller's claim on a server task lasts unless it renews it "
        "(it does, every third of this): a controller that dies leaves its tasks to another "
        "one, or to itself restarted, after at most this long",
    )
    task_poll_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often a controller looks for server tasks queued by another one "
        "(its own start at once)",
    )
    device_wait_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="how long an attach or detach request waits for its task before it "
        "answers 202 Accepted and leaves the change to finish in the background (a "
        "volume shows attaching or detaching until then)",
    )
    interface_network: str | None = Field(
        default=None, description="libvirt network for new interfaces; unset: QEMU user networking"
    )
    interface_bridge: str | None = Field(
        default=None, description="host bridge for new interfaces (when no network is set)"
    )
    default_flavors: bool = Field(
        default=True, description="create the tiny and small flavors at start-up"
    )
    ready_image: bool = Field(
        default=True, description="offer the built-in busybox guest as image 'busybox'"
    )
    power_sync_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="how often server status follows the guests' power state (0: never)",
    )


class ApiSettings(BaseModel):
    """The HTTP API of ``wattvisor up``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8774, ge=1, le=65535)
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=1024 * 1024 * 1024,
        description="larger request bodies are refused with 413 before they are read",
    )  # fmt: skip
    cors_allowed_origins: list[str] = Field(
        default_factory=list,
        description="origins (scheme://host[:port]) whose browser pages may call the API "
        "across origins (CORS), as Placement's [cors] allowed_origin; empty: none",
    )


class AuthSettings(BaseModel):
    """How API tokens are checked and where the admin key lives."""

    admin_key_file: Path | None = Field(
        default=None,
        description="the admin's Ed25519 private key (0600), created on first start; "
        "default <data_dir>/admin.key",
    )
    admin_user: str = Field(default="admin", description="user name of the admin key's holder")
    admin_project: str = Field(
        default="admin",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
        description="project of the admin user: 1-64 characters from A-Z a-z 0-9 . _ @ -, "
        "starting with a letter or digit (the rule every project follows)",
    )
    clock_skew_s: float = Field(
        default=60.0, ge=0, le=3600, description="token expiry tolerance for skewed clocks"
    )
    max_token_ttl_s: int = Field(
        default=30 * 86400, gt=0, description="tokens may not expire further ahead than this"
    )
    cluster_key_file: Path | None = Field(
        default=None,
        description="the cluster's Ed25519 private key (0600), shared by every controller of "
        "the cluster; it signs join tokens and calls to host agents; created on first start; "
        "default <data_dir>/cluster.key",
    )
    cluster_key_grace_s: int = Field(
        default=86400, ge=0, le=30 * 86400,
        description="how long the previous cluster key stays accepted after a rotation, so "
        "that agents learn the new one with their heartbeats",
    )  # fmt: skip
    host_key_grace_s: int = Field(
        default=300, ge=0, le=86400,
        description="how long a host's previous key stays accepted after the host rotated it "
        "(calls already signed, an answer lost on the way)",
    )  # fmt: skip
    max_join_token_ttl_s: int = Field(
        default=7 * 86400, gt=0, le=30 * 86400,
        description="join tokens may not live longer than this",
    )  # fmt: skip


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets) as ``(host, port)``; a ValueError says what is accepted."""
    accepted = (
        "use host:port, e.g. '127.0.0.1:9464', '0.0.0.0:9464' or '[::1]:9464' "
        "(IPv6 in brackets; port 0 picks a free one)"
    )
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"listen address {value!r} is not accepted; {accepted}")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ValueError(
                f"listen address {value!r} has no valid IPv6 address in brackets; {accepted}"
            ) from None
    elif not _LISTEN_HOST.match(host):
        raise ValueError(f"listen address {value!r} is not accepted; {accepted}")
    return host, int(port_text)


class MetricsSettings(BaseModel):
    """The Prometheus listener: its own address, apart from the API, optionally behind a token."""

    listen: str = Field(
        default="127.0.0.1:9464",
        description="host:port of the /metrics listener (IPv6 in brackets); loopback by default",
    )
    bearer_token_file: Path | None = Field(
        default=None,
        description="file holding the token scrapes must send as 'Authorization: Bearer "
        "<token>' (Prometheus: authorization.credentials_file); unset: no token asked",
    )
    process_pids: bool = Field(
        default=False,
        description="label wattvisor_process_power_watts with each process's pid; off, the "
        "top processes are summed by command name",
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of :attr:`listen`."""
        return parse_listen_address(self.listen)


class AgentSettings(BaseModel):
    """``wattvisor agent`` on a host, and how controllers reach and judge agents."""

    listen: str = Field(
        default="127.0.0.1:8775",
        description="host:port the agent serves the host protocol on (IPv6 in brackets); "
        "controllers must reach it",
    )
    advertise_url: str | None = Field(
        default=None,
        description="the URL controllers call the agent at; default http(s)://<listen>",
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate the agent serves HTTPS with (with tls_key)"
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    ca_file: Path | None = Field(
        default=None,
        description="controller side: PEM bundle that agents' certificates are checked "
        "against; unset: the system's trusted authorities",
    )
    data_dir: Path | None = Field(
        default=None,
        description="where the agent keeps its host key and cluster trust; "
        "default <data_dir>/agent",
    )
    controller: str | None = Field(
        default=None, description="URL of the controller the agent joins and heartbeats to"
    )
    heartbeat_s: float = Field(
        default=10.0, gt=0, le=3600, description="seconds between an agent's heartbeats"
    )
    down_after_s: float = Field(
        default=60.0, gt=0, le=86400,
        description="controller side: a host whose agent has not sent a heartbeat for this "
        "long is down (not scheduled to; its servers show host_status down)",
    )  # fmt: skip
    call_timeout_s: float = Field(
        default=120.0, gt=0, le=3600,
        description="controller side: how long one call to an agent may take",
    )  # fmt: skip

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @field_validator("controller", "advertise_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError(
                f"URL {value!r} is not accepted; use http://host:port or https://host:port"
            )
        return value

    @model_validator(mode="after")
    def _check_tls_pair(self) -> AgentSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            given = "tls_cert" if self.tls_cert is not None else "tls_key"
            raise ValueError(
                f"agent.{given} is set alone; accepted: both agent.tls_cert and "
                "agent.tls_key, or neither"
            )
        return self

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen_address(self.listen)

    @property
    def url(self) -> str:
        """Where controllers call this agent."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://{self.listen}"


class GeoSettings(BaseModel):
    """Host geolocation, looked up on the controller in a local database (no address is
    sent anywhere)."""

    database: Path | None = Field(
        default=None,
        description="MaxMind-format database (.mmdb, e.g. GeoLite2-City) the controller "
        "places hosts' public addresses with; unset: hosts get no looked-up geolocation "
        "(an admin may still set one)",
    )


class MigrationSettings(BaseModel):
    """Live migration: the pools each migration's tunnel takes its VNI and addresses from.

    Controller side: ``vni_pool``, ``ipv4_pool``, ``ipv6_pool``, ``overlay``, ``timeout_s``,
    ``max_bandwidth_mib_s``. Agent side: ``underlay_address`` and ``libvirt_uri``.
    """

    vni_pool: str = Field(
        default="10000-19999",
        description="VXLAN network identifiers migrations take one of each, as first-last",
    )
    ipv4_pool: str = Field(
        default="100.100.0.0/22",
        description="network the point-to-point /30 of each migration's tunnel is cut from",
    )
    ipv6_pool: str = Field(
        default="fd77:7761:7474::/112",
        description="network the /127 of each migration's tunnel is cut from (overlay ipv6)",
    )
    overlay: Literal["ipv4", "ipv6"] = Field(
        default="ipv4", description="which pool tunnels take their addresses from"
    )
    ovs: bool = Field(
        default=False,
        description="make tunnels with Open vSwitch instead of Linux VXLAN links "
        "(not supported: refused)",
    )
    timeout_s: float = Field(
        default=600.0, gt=0, le=86400,
        description="a migration still running after this long is aborted (the VM stays "
        "on its source)",
    )  # fmt: skip
    max_bandwidth_mib_s: int = Field(
        default=0, ge=0, description="memory stream limit in MiB/s; 0: no limit"
    )
    share_unplug_timeout_s: float = Field(
        default=30.0, gt=0, le=600,
        description="a guest whose power-metrics share is unplugged for the move must "
        "acknowledge it within this time, or the migration fails and the share is "
        "plugged back",
    )  # fmt: skip
    underlay_address: str | None = Field(
        default=None,
        description="agent side: the address other hosts reach this host at for tunnels; "
        "default: the host of agent.advertise_url or agent.listen",
    )
    libvirt_uri: str | None = Field(
        default=None,
        description="agent side: the libvirt URI other hosts' libvirtd reach this host's "
        "at; default qemu+tcp://<underlay_address>/system",
    )

    @field_validator("vni_pool")
    @classmethod
    def _check_vni_pool(cls, value: str) -> str:
        parse_vni_pool(value)
        return value

    @field_validator("ipv4_pool", "ipv6_pool")
    @classmethod
    def _check_pool(cls, value: str, info: ValidationInfo) -> str:
        version = 4 if info.field_name == "ipv4_pool" else 6
        try:
            network = ipaddress.ip_network(value)
        except ValueError as exc:
            raise ValueError(f"{info.field_name} {value!r} is not a network: {exc}") from exc
        if network.version != version:
            raise ValueError(f"{info.field_name} {value!r} is not an IPv{version} network")
        if network.prefixlen > (30 if version == 4 else 127):
            raise ValueError(
                f"{info.field_name} {value!r} is smaller than one "
                f"{'/30' if version == 4 else '/127'}"
            )
        return value

    @field_validator("ovs")
    @classmethod
    def _refuse_ovs(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "migration.ovs = true is not supported: tunnels are Linux VXLAN links made "
                "over netlink; accepted: false"
            )
        return value


def parse_vni_pool(value: str) -> tuple[int, int]:
    """``first-last`` as two VNIs, 1 <= first <= last < 2**24; ValueError naming the value."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
    if match is None:
        raise ValueError(f"vni_pool {value!r} is not accepted; use first-last, e.g. 10000-19999")
    first, last = int(match.group(1)), int(match.group(2))
    if not 1 <= first <= last <= (1 << 24) - 1:
        raise ValueError(f"vni_pool {value!r}: VNIs must be 1-{(1 << 24) - 1} and first <= last")
    return first, last


class Settings(BaseSettings):
    """All of wattvisor's settings."""

    model_config = SettingsConfigDict(
        env_prefix="WATTVISOR_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = DEFAULT_DATA_DIR
    host: HostSettings = Field(default_factory=HostSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    energy: EnergySettings = Field(default_factory=EnergySettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    geo: GeoSettings = Field(default_factory=GeoSettings)

    migration: MigrationSettings = Field(default_factory=MigrationSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path_var.get("path")
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_dir / 'wattvisor.db'}"

    @property
    def storage_path(self) -> Path:
        return self.host.storage_path or self.data_dir

    @property
    def admin_key_path(self) -> Path:
        return self.auth.admin_key_file or self.data_dir / "admin.key"

    @property
    def cluster_key_path(self) -> Path:
        return self.auth.cluster_key_file or self.data_dir / "cluster.key"

    @property
    def agent_data_dir(self) -> Path:
        return self.agent.data_dir or self.data_dir / "agent"


# The TOML path has to reach settings_customise_sources, a classmethod without arguments.
_config_path_var: dict[str, Path | None] = {"path": None}


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``config_file`` (or ``$WATTVISOR_CONFIG``) and the environment."""
    raw = config_file if config_file is not None else os.environ.get("WATTVISOR_CONFIG")
    path = Path(raw) if raw else None
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist or is not a file")
        try:
            with path.open("rb") as handle:
                tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    _config_path_var["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        where = (
            f"config file {str(path)!r} or WATTVISOR_* variables"
            if path
            else ("WATTVISOR_* variables")
        )
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            + (
                f" (got {err['input']!r})"
                if "input" in err and not isinstance(err["input"], dict)
                else ""
            )
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings in {where}: {problems}") from exc
    finally:
        _config_path_var["path"] = None
