"""Lifecycle of the guests on one libvirt host.

Guests are identified by libvirt UUID. Devices are detached by their stable
``ua-`` alias: ``virDomainDetachDeviceAlias`` where the driver has it, else the
device's own XML found through the alias (or, for domains written before
aliases, disk serial / target dev / interface MAC).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
from lxml import etree

from wattvisor.config import HostSettings, Settings
from wattvisor.guest import (
    METADATA_KEY,
    METADATA_NS,
    Device,
    Domain,
    Filesystem,
    FlavorMeta,
    GuestXMLError,
    InstanceMetadata,
    make_alias,
    upgrade_domain_xml,
    validate_domain_xml,
)
from wattvisor.host.connection import HostConnection, choose_uri
from wattvisor.host.shares import PreparedShare, ShareManager
from wattvisor.host.traits import (
    DomainCapabilities,
    HostCapabilities,
    compute_traits,
    host_uuid_from_capabilities,
    merge_domain_capabilities,
    parse_capabilities,
    parse_domain_capabilities,
    static_domain_capabilities,
)

log = logging.getLogger(__name__)

SHUTDOWN_RETRY_S = 10.0
"""How often a graceful stop presses the guest's power button again (as Nova does)."""

_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
_SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN: "unknown",
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
    libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: "from-snapshot",
    libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "daemon",
}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


class HostError(RuntimeError):
    """A host operation that failed; the message names the guest and the cause."""


class DomainNotFound(HostError, LookupError):
    pass


class DeviceNotFound(HostError, LookupError):
    pass


class DetachTimeout(HostError):
    """The guest has not released the device yet; the persistent config no longer has it."""


@dataclass(frozen=True)
class DomainState:
    name: str
    uuid: str
    state: str
    active: bool
    persistent: bool
    reason: str = ""
    """Why a shut-off guest is off: ``shutdown`` (it powered off by itself),
    ``destroyed``, ``crashed``, ...; empty for other states."""


@dataclass(frozen=True)
class Inventory:
    """Placement inventory of the host (standard resource classes)."""

    vcpu: int
    memory_mb: int
    disk_gb: int


@dataclass(frozen=True)
class DetachResult:
    alias: str
    method: str  # "alias" (virDomainDetachDeviceAlias), "device-xml" or "redefine"
    live: bool
    config: bool


@dataclass(frozen=True)
class UpgradeReport:
    domain: str
    uuid: str
    added_aliases: tuple[str, ...]


@dataclass
class StartupReport:
    uri: str
    uri_reason: str
    upgraded: list[UpgradeReport] = field(default_factory=list)
    shares_reestablished: list[str] = field(default_factory=list)
    shares_removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def is_managed_domain_xml(xml: str) -> bool:
    """Whether a domain's XML carries wattvisor's instance metadata (wattvisor made it)."""
    try:
        root = etree.fromstring(xml.encode())
    except etree.XMLSyntaxError:
        return False
    return root.find(f"metadata/{{{METADATA_NS}}}instance") is not None


class HostDriver:
    """One libvirt host, as the rest of wattvisor sees it."""

    def __init__(
        self,
        settings: HostSettings,
        data_dir: Path,
        *,
        uri: str | None = None,
        uri_reason: str = "",
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        if uri is None:
            uri, uri_reason = choose_uri(settings.libvirt_uri)
        self.uri = uri
        self.uri_reason = uri_reason
        self.connection = HostConnection(uri)
        self._capabilities: HostCapabilities | None = None
        self._shares: ShareManager | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HostDriver:
        return cls(settings.host, settings.data_dir)

    # -- facts -------------------------------------------------------------------------

    def libvirt_version(self) -> tuple[int, int, int]:
        version = int(self.connection.call(lambda c: c.getLibVersion()))
        return version // 1_000_000, (version // 1000) % 1000, version % 1000

    @property
    def shares(self) -> ShareManager:
        if self._shares is None:
            self._shares = ShareManager(
                self.settings.share_local_fs,
                self.data_dir,
                libvirt_version=self.libvirt_version(),
                tmpfs_size_kib=self.settings.share_tmpfs_kib,
            )
        return self._shares

    def capabilities(self, refresh: bool = False) -> HostCapabilities:
        """Host and domain capabilities, fetched once (they change only with upgrades)."""
        if self._capabilities is not None and not refresh:
            return self._capabilities
        conn = self.connection.get()
        host_arch, guests = parse_capabilities(conn.getCapabilities())
        notes: list[str] = []
        domcaps: list[DomainCapabilities] = []
        arches = sorted({g.arch for g in guests if self.settings.virt_type in g.domain_types})
        available = True
        for arch in arches or [host_arch]:
            try:
                xml = conn.getDomainCapabilities(
                    None, arch, self.settings.machine_type, self.settings.virt_type, 0
                )
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                    available = False
                    break
                notes.append(f"no domain capabilities for {arch}: {exc.get_error_message()}")
                continue
            domcaps.append(parse_domain_capabilities(xml))
        if not available:
            notes.append(
                f"{self.uri} cannot report domain capabilities; disk buses and video models "
                "come from the static qemu/kvm table"
            )
            merged = static_domain_capabilities()
        else:
            merged = merge_domain_capabilities(domcaps)
        self._capabilities = HostCapabilities(
            host_arch=host_arch,
            hypervisor_type=str(conn.getType()),
            guests=guests,
            disk_buses=merged.disk_buses,
            video_models=merged.video_models,
            filesystem_drivers=merged.filesystem_drivers,
            memory_backing_sources=merged.memory_backing_sources,
            domain_caps_available=available,
            notes=tuple(notes),
        )
        return self._capabilities

    def traits(self) -> frozenset[str]:
        share_ok = bool(self.settings.share_local_fs) and self.shares.readonly_mode() is not None
        return compute_traits(
            self.capabilities(), self.settings.virt_type, share_local_fs_readonly=share_ok
        )

    def host_uuid(self) -> str:
        """The stable identity of this host: libvirt's host UUID (SMBIOS or machine-id)."""
        conn = self.connection.get()
        found = host_uuid_from_capabilities(conn.getCapabilities())
        if found:
            return found
        # Drivers without one (test:///default): stable for this URI on this machine.
        return str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, f"{self.uri}#{conn.getHostname()}"))

    def inventory(self) -> Inventory:
        info = self.connection.call(lambda c: c.getInfo())
        return Inventory(
            vcpu=int(info[2]), memory_mb=self._memory_mb(int(info[1])), disk_gb=self._disk_gb()
        )

    def _memory_mb(self, from_node_info: int) -> int:
        # Node info sums NUMA cells, which can miss hot-plugged memory; the node memory
        # statistics report what the kernel really manages.
        try:
            stats = self.connection.call(
                lambda c: c.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
            )
        except libvirt.libvirtError:
            return from_node_info
        total_kib = int(stats.get("total", 0))
        return total_kib // 1024 if total_kib else from_node_info

    def _disk_gb(self) -> int:
        path = self.settings.storage_path or self.data_dir
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        stat = os.statvfs(probe)
        return int(stat.f_blocks * stat.f_frsize // (1024**3))

    def instance_name(self, index: int) -> str:
        return self.settings.instance_name_template % index

    # -- lookups -----------------------------------------------------------------------

    def _lookup(self, ident: str) -> libvirt.virDomain:
        def find(conn: libvirt.virConnect) -> libvirt.virDomain:
            if _UUID.match(ident):
                return conn.lookupByUUIDString(ident)
            return conn.lookupByName(ident)

        try:
            return self.connection.call(find)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(f"no domain {ident!r} on {self.uri}") from exc
            raise

    @staticmethod
    def _state(dom: libvirt.virDomain) -> DomainState:
        state, reason = dom.state()
        return DomainState(
            name=dom.name(),
            uuid=dom.UUIDString(),
            state=_STATE_NAMES.get(state, str(state)),
            active=bool(dom.isActive()),
            persistent=bool(dom.isPersistent()),
            reason=_SHUTOFF_REASONS.get(reason, str(reason))
            if state == libvirt.VIR_DOMAIN_SHUTOFF
            else "",
        )

    def list_domains(self) -> list[DomainState]:
        states = []
        for dom in self.connection.call(lambda c: c.listAllDomains(0)):
            try:
                states.append(self._state(dom))
            except libvirt.libvirtError as exc:
                # A transient domain that ended between listing and asking is not an error.
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return sorted(states, key=lambda s: s.name)

    def domain_state(self, ident: str) -> DomainState:
        return self._state(self._lookup(ident))

    def domain_xml(self, ident: str, *, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_SECURE
        if inactive:
            flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
        return str(self._lookup(ident).XMLDesc(flags))

    def domain(self, ident: str, *, inactive: bool = False) -> Domain:
        return Domain.parse(self.domain_xml(ident, inactive=inactive))

    # -- lifecycle ---------------------------------------------------------------------

    def define(self, domain: Domain | str) -> DomainState:
        """Define (persist) a guest; the XML is checked by our model before libvirt sees it."""
        parsed = domain if isinstance(domain, Domain) else Domain.parse(domain)
        xml = parsed.to_xml()
        validate_domain_xml(xml)
        try:
            dom = self.connection.call(lambda c: c.defineXML(xml))
        except libvirt.libvirtError as exc:
            raise HostError(
                f"libvirt rejected domain {parsed.name!r}: {exc.get_error_message()}"
            ) from exc
        return self._state(dom)

    def start(self, ident: str) -> DomainState:
        """Start the guest; one that is running already (or started meanwhile) is fine."""
        dom = self._lookup(ident)
        name = dom.name()
        self._settle(
            dom, name, "start", dom.create, lambda: self._is_active(dom, gone=None),
            failure=f"domain {name!r} failed to start",
        )  # fmt: skip
        return self._state_or_gone(dom, name)

    def shutdown(self, ident: str, *, timeout_s: float = 60.0) -> DomainState:
        """Ask the guest to power off; destroy it if it has not after ``timeout_s``.

        A guest that is off already, or powers off while we ask, is simply off. The
        power button is pressed again every ``SHUTDOWN_RETRY_S``: a press that lands
        while the guest is still booting (firmware, kernel, before its ACPI handler
        runs) is lost, and one press would then cost the whole timeout.
        """
        dom = self._lookup(ident)
        name = dom.name()
        deadline = time.monotonic() + timeout_s
        next_press = time.monotonic()
        while self._is_active(dom) and time.monotonic() < deadline:
            if time.monotonic() >= next_press:
                next_press = time.monotonic() + SHUTDOWN_RETRY_S
                try:
                    dom.shutdown()
                except libvirt.libvirtError as exc:
                    if self._is_active(dom):
                        log.warning(
                            "graceful shutdown of %s refused: %s", name, exc.get_error_message()
                        )
            time.sleep(0.2)
        if self._is_active(dom):
            log.warning("%s did not power off within %.0f s; destroying", name, timeout_s)
            self._destroy(dom, name)
        return self._state_or_gone(dom, name)

    def destroy(self, ident: str) -> DomainState:
        """Power the guest off at once; one that is off already (or meanwhile) is fine."""
        dom = self._lookup(ident)
        name = dom.name()
        self._destroy(dom, name)
        return self._state_or_gone(dom, name)

    def undefine(self, ident: str) -> None:
        """Stop and remove a guest, then take down its share mounts.

        Every step tolerates the guest getting there by itself meanwhile (a guest
        powering off, a transient domain vanishing when it stops).
        """
        dom = self._lookup(ident)
        name = dom.name()
        self._destroy(dom, name)
        self._remove_definition(dom, name)
        self.release_shares(name)

    def release_shares(self, domain_name: str) -> None:
        """Remove a domain's share mounts and data directories, whatever of them exists.

        Safe to call when the domain is gone or never got that far (an interrupted
        build); both steps are tried even if the first fails.
        """
        if not self.settings.share_local_fs:
            return
        failures: list[str] = []
        for step, action in (
            ("read-only views", self.shares.release),
            ("data directories", self.shares.discard_data),
        ):
            try:
                action(domain_name)
            except (OSError, ValueError) as exc:
                log.error("removing the share %s of %s failed: %s", step, domain_name, exc)
                failures.append(f"{step}: {exc}")
        if failures:
            raise HostError(
                f"shares of domain {domain_name!r} not fully removed: {'; '.join(failures)}"
            )

    # Lifecycle calls act first and look afterwards: asking "is it running?" and then
    # acting leaves a window in which the guest can change state by itself.

    @staticmethod
    def _is_active(dom: libvirt.virDomain, gone: bool | None = False) -> bool:
        """Whether the domain runs; a domain that no longer exists counts as ``gone``
        (``None``: raise DomainNotFound)."""
        try:
            return bool(dom.isActive())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            if gone is None:
                raise DomainNotFound(f"domain {dom.UUIDString()} vanished") from exc
            return gone

    @staticmethod
    def _settle(
        dom: libvirt.virDomain,
        name: str,
        action: str,
        call: Callable[[], object],
        reached: Callable[[], bool],
        failure: str = "",
    ) -> None:
        """Run ``call``; when libvirt refuses it because the domain is already where
        ``call`` would take it (``reached`` after the refusal), that is success.
        Otherwise HostError, starting with ``failure``."""
        try:
            call()
        except libvirt.libvirtError as exc:
            if reached():
                log.info("%s of %s: already done (%s)", action, name, exc.get_error_message())
                return
            failure = failure or f"{action} of domain {name!r} failed"
            raise HostError(f"{failure}: {exc.get_error_message()}") from exc

    def _destroy(self, dom: libvirt.virDomain, name: str, attempts: int = 3) -> None:
        # While a guest is powering off by itself libvirt can refuse a destroy that
        # comes too early ("process busy", "state change lock"); the guest is then
        # still active, so ask again a few times before giving up.
        for attempt in range(1, attempts + 1):
            try:
                self._settle(dom, name, "destroy", dom.destroy, lambda: not self._is_active(dom))
                return
            except HostError:
                if attempt == attempts:
                    raise
                time.sleep(0.5 * attempt)

    @staticmethod
    def _remove_definition(dom: libvirt.virDomain, name: str) -> None:
        try:
            persistent = bool(dom.isPersistent())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return  # a transient domain ends when it stops
            raise HostError(f"cannot look at domain {name!r}: {exc.get_error_message()}") from exc
        if not persistent:
            return
        flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return
            log.info("undefine of %s with flags refused (%s); plain undefine",
                     name, exc.get_error_message())  # fmt: skip
        try:
            dom.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return
            message = exc.get_error_message()
            raise HostError(f"undefine of domain {name!r} failed: {message}") from exc

    def _state_or_gone(self, dom: libvirt.virDomain, name: str) -> DomainState:
        """The domain's state; a transient one that vanished on stopping is shut off."""
        try:
            return self._state(dom)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            return DomainState(
                name=name, uuid=dom.UUIDString(), state="shutoff", active=False,
                persistent=False, reason="gone",
            )  # fmt: skip

    # -- devices -----------------------------------------------------------------------

    @staticmethod
    def _affect_flags(dom: libvirt.virDomain) -> tuple[int, bool, bool]:
        try:
            live = bool(dom.isActive())
            config = bool(dom.isPersistent())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(f"domain {dom.UUIDString()} vanished") from exc
            raise
        flags = 0
        if live:
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        if config:
            flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
        return flags, live, config

    def _on_current_state(
        self, dom: libvirt.virDomain, what: str, call: Callable[[int], object], attempts: int = 3
    ) -> None:
        """``call(flags)`` for the guest as it is (live and/or config), asked again when
        libvirt refused because the guest started or stopped meanwhile."""
        for attempt in range(1, attempts + 1):
            flags, _live, _config = self._affect_flags(dom)
            try:
                call(flags)
                return
            except libvirt.libvirtError as exc:
                if attempt < attempts and self._affect_flags(dom)[0] != flags:
                    log.info("%s %s: the guest changed state meanwhile; again", what, dom.name())
                    continue
                raise HostError(f"cannot {what} {dom.name()!r}: {exc.get_error_message()}") from exc

    def attach_device(self, ident: str, device_xml: str) -> None:
        """Attach to the running guest and its persistent config (whichever exist)."""
        dom = self._lookup(ident)
        self._on_current_state(
            dom, "attach device to", lambda flags: dom.attachDeviceFlags(device_xml, flags)
        )

    def detach_device(
        self,
        ident: str,
        alias: str,
        *,
        serial: str | None = None,
        target_dev: str | None = None,
        mac: str | None = None,
        wait_s: float = 30.0,
        attempts: int = 3,
    ) -> DetachResult:
        """Detach the device named ``alias`` from the live guest and its persistent config.

        ``serial``/``target_dev``/``mac`` find the device in XML written before aliases
        existed. A live detach needs the guest's cooperation; we wait up to ``wait_s``
        for it to release the device. A guest that starts or stops meanwhile is
        looked at again (up to ``attempts`` times); a device that went with the
        first attempt is detached.
        """
        dom = self._lookup(ident)
        for attempt in range(1, attempts + 1):
            flags, live, config = self._affect_flags(dom)
            current = Domain.parse(
                str(
                    dom.XMLDesc(
                        libvirt.VIR_DOMAIN_XML_SECURE
                        | (0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE)
                    )
                )
            )
            device = current.find_device(alias=alias, serial=serial, target_dev=target_dev, mac=mac)
            if device is None:
                if attempt > 1:
                    return DetachResult(alias=alias, method="alias", live=live, config=config)
                present = sorted(a for a in (d.alias for d in current.devices) if a)
                raise DeviceNotFound(
                    f"domain {dom.name()!r} has no device with alias {alias!r}"
                    + (f" (aliases present: {', '.join(present)})" if present else "")
                )
            try:
                method = self._detach(dom, current, device, alias, flags, live)
            except libvirt.libvirtError as exc:
                if attempt < attempts and self._affect_flags(dom)[0] != flags:
                    log.info("detach %s from %s: the guest changed state meanwhile; again",
                             alias, dom.name())  # fmt: skip
                    continue
                raise HostError(
                    f"cannot detach {alias!r} from {dom.name()!r}: {exc.get_error_message()}"
                ) from exc
            if live:
                self._wait_released(
                    dom, alias, wait_s, serial=serial, target_dev=target_dev, mac=mac
                )
            return DetachResult(alias=alias, method=method, live=live, config=config)
        raise AssertionError("unreachable")  # pragma: no cover

    def _detach(
        self,
        dom: libvirt.virDomain,
        current: Domain,
        device: Device,
        alias: str,
        flags: int,
        live: bool,
    ) -> str:
        """One detach attempt; returns the method that worked, raises libvirtError."""
        if device.alias == alias:
            try:
                dom.detachDeviceAlias(alias, flags)
                return "alias"
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                ):
                    raise
        try:
            dom.detachDeviceFlags(device.to_xml(), flags)
            return "device-xml"
        except libvirt.libvirtError as exc:
            if live or exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
        # A stopped guest on a driver without detach: its definition is all there
        # is, so removing the device from it is the whole detach.
        current.remove_device(device)
        self.connection.call(lambda c: c.defineXML(current.to_xml()))
        return "redefine"

    @staticmethod
    def _wait_released(
        dom: libvirt.virDomain,
        alias: str,
        wait_s: float,
        **fallback: str | None,
    ) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                live_doc = Domain.parse(str(dom.XMLDesc(0)))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return  # a transient guest that stopped took the device with it
                raise
            if live_doc.find_device(alias=alias, **fallback) is None:
                return
            if time.monotonic() >= deadline:
                raise DetachTimeout(
                    f"domain {dom.name()!r} has not released device {alias!r} after "
                    f"{wait_s:.0f} s; it is gone from the persistent config and will be "
                    "gone from the guest at its next restart"
                )
            time.sleep(0.25)

    # -- metadata ----------------------------------------------------------------------

    def set_instance_metadata(self, ident: str, metadata: InstanceMetadata) -> None:
        dom = self._lookup(ident)
        xml = metadata.to_xml()
        self._on_current_state(
            dom,
            "set the instance metadata of",
            lambda flags: dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, METADATA_KEY, METADATA_NS, flags
            ),
        )

    def resize_domain(
        self,
        ident: str,
        *,
        vcpus: int,
        memory_mib: int,
        flavor: FlavorMeta,
        stop_timeout_s: float = 60.0,
    ) -> DomainState:
        """Give a guest new vCPUs and memory (and ``flavor`` in its metadata): power it off
        if running, redefine it, start it again.

        If the new definition is refused or the guest does not start with it, the previous
        definition is put back (and started if it was running) before HostError is
        raised: a failed resize leaves the guest as it was.
        """
        dom = self._lookup(ident)
        name = dom.name()
        was_running = self._is_active(dom)
        old_xml = self.domain_xml(ident, inactive=True)
        domain = Domain.parse(old_xml)
        domain.vcpus = vcpus
        domain.memory_mib = memory_mib
        domain.current_memory_kib = memory_mib * 1024
        metadata = domain.instance_metadata
        if metadata is None:
            raise HostError(f"domain {name!r} carries no wattvisor metadata; not resized")
        domain.instance_metadata = dataclasses.replace(metadata, flavor=flavor)
        if was_running:
            self.shutdown(ident, timeout_s=stop_timeout_s)
        try:
            self.define(domain)
            if was_running:
                self.start(ident)
        except (HostError, libvirt.libvirtError) as exc:
            log.warning("resizing %s failed (%s); restoring its previous definition", name, exc)
            self._redefine(old_xml)
            if was_running:
                self.start(ident)
            if isinstance(exc, HostError):
                raise
            raise HostError(f"resizing {name!r} failed: {exc.get_error_message()}") from exc
        return self._state_or_gone(dom, name)

    def update_instance_metadata(
        self, ident: str, change: Callable[[InstanceMetadata], InstanceMetadata]
    ) -> InstanceMetadata:
        """Rewrite the guest's metadata with ``change``, live and in its persistent config.

        The persistent definition's metadata is the one changed (the running guest's is
        the same unless someone edited one of them by hand), and the result is written to
        both: ``virDomainSetMetadata`` with AFFECT_LIVE | AFFECT_CONFIG, or CONFIG alone
        for a guest that is off.
        """
        dom = self._lookup(ident)
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                raise HostError(f"domain {dom.name()!r} carries no wattvisor metadata") from exc
            raise
        updated = change(InstanceMetadata.from_xml(str(xml)))
        self.set_instance_metadata(ident, updated)
        return updated

    def instance_metadata(self, ident: str) -> InstanceMetadata | None:
        dom = self._lookup(ident)
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise
        return InstanceMetadata.from_xml(str(xml))

    # -- shares ------------------------------------------------------------------------

    def prepare_shares(self, domain_name: str) -> list[PreparedShare]:
        """Per-domain share directories and their read-only sources, before the guest starts."""
        if not self.settings.share_local_fs:
            return []
        return self.shares.prepare(domain_name)

    def share_devices(self, prepared: Iterable[PreparedShare]) -> list[Filesystem]:
        """The virtiofs devices for prepared shares: read-only source, stable ``ua-`` alias."""
        return [
            Filesystem(
                source_dir=str(share.source_dir),
                target_dir=share.mount_tag,
                driver_type="virtiofs",
                binary_path=str(self.settings.virtiofsd_path),
                readonly=share.readonly_flag,
                alias=make_alias(f"share-{share.mount_tag}"),
            )
            for share in prepared
        ]

    def _uses_shares(self, domain: Domain) -> bool:
        roots = [self.shares.mount_root, *self.shares.shares]
        for fs in domain.devices.of_type(Filesystem):
            source = fs.source_dir
            if (
                fs.driver_type == "virtiofs"
                and source
                and any(Path(source).is_relative_to(root) for root in roots)
            ):
                return True
        return False

    # -- start-up ----------------------------------------------------------------------

    def _persistent_definitions(
        self, names: Iterable[str] | None = None
    ) -> list[tuple[libvirt.virDomain, str]]:
        """Each persistent domain (of ``names``, if given) with its inactive XML, read once."""
        wanted = set(names) if names is not None else None
        persistent = libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
        definitions = []
        for dom in self.connection.call(lambda c: c.listAllDomains(persistent)):
            if wanted is not None and dom.name() not in wanted:
                continue
            try:
                definitions.append((dom, str(dom.XMLDesc(flags))))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise  # else undefined between listing and asking: nothing to upgrade
        return definitions

    def upgrade_existing_domains(
        self,
        names: Iterable[str] | None = None,
        *,
        definitions: list[tuple[libvirt.virDomain, str]] | None = None,
    ) -> list[UpgradeReport]:
        """Give every persistent domain of wattvisor's stable ``ua-`` aliases, without
        restarting it. Domains without wattvisor's instance metadata are not ours to
        rewrite and are left alone.

        ``definitions`` are ones :meth:`startup` has read already."""
        reports: list[UpgradeReport] = []
        if definitions is None:
            definitions = self._persistent_definitions(names)
        for dom, xml in definitions:
            if not is_managed_domain_xml(xml):
                continue
            try:
                result = upgrade_domain_xml(xml)
            except GuestXMLError as exc:
                log.error("cannot upgrade %s: %s", dom.name(), exc)
                continue
            if not result.changed:
                continue
            self._redefine(result.xml)
            added = tuple(change.alias for change in result.changes)
            log.info("gave %s device aliases: %s", dom.name(), ", ".join(added))
            reports.append(
                UpgradeReport(domain=dom.name(), uuid=dom.UUIDString(), added_aliases=added)
            )
        return reports

    def _redefine(self, xml: str) -> None:
        self.connection.call(lambda c: c.defineXML(xml))

    def startup(self) -> StartupReport:
        """What a host does when wattvisor starts: re-mount shares, upgrade old domains,
        remove share mounts and folders no domain owns any more.

        Only domains carrying wattvisor's instance metadata are touched: another
        tool's domains on the same libvirtd stay exactly as they are. A domain whose
        shares cannot be re-established is a problem of that domain alone.
        """
        report = StartupReport(uri=self.uri, uri_reason=self.uri_reason)
        definitions = self._persistent_definitions()
        managed = [(dom, xml) for dom, xml in definitions if is_managed_domain_xml(xml)]
        if self.settings.share_local_fs:
            try:
                if self.shares.readonly_mode() is None:
                    report.problems.append(
                        "share_local_fs is set but read-only shares cannot be guaranteed here; "
                        "COMPUTE_SHARE_LOCAL_FS is not reported"
                    )
                else:
                    names = []
                    for dom, xml in managed:
                        try:
                            if self._uses_shares(Domain.parse(xml)):
                                names.append(dom.name())
                        except GuestXMLError as exc:
                            report.problems.append(f"cannot read domain {dom.name()}: {exc}")
                    # Every domain on the host keeps its folder (also transient and foreign
                    # ones, and those of another wattvisor sharing this libvirtd).
                    present = {d.name for d in self.list_domains()}
                    restored = self.shares.reestablish(names, keep=present)
                    report.shares_reestablished = restored.established
                    report.shares_removed = [str(p) for p in restored.removed]
                    for path in report.shares_removed:
                        log.warning("removed left-over share %s: no domain owns it", path)
                    report.problems += restored.problems
            except OSError as exc:
                report.problems.append(f"share mounts not re-established: {exc}")
        report.upgraded = self.upgrade_existing_domains(definitions=managed)
        return report

    def close(self) -> None:
        self.connection.close()
