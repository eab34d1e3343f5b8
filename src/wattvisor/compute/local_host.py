"""A host served in-process: a :class:`HostDriver` and, where the process runs, the sampler.

Per-server files live in ``<data_dir>/instances/<server uuid>/`` (console log,
config drive, qcow2 overlays for the root, ephemeral and swap disks); the bases of
those overlays in ``<data_dir>/images/`` (:mod:`wattvisor.host.image_cache`);
volumes in a libvirt ``dir`` pool at ``<data_dir>/volumes``, named
``wattvisor-volumes-<hash of that path>`` because pools are global
to a libvirtd that several data directories may share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import libvirt

from wattvisor.compute.guest_build import (
    POWER_METRICS_PURPOSE,
    ROOT_DISK_ALIAS,
    GuestFiles,
    build_domain,
)
from wattvisor.compute.guest_network import server_interface
from wattvisor.compute.hostclient import (
    HostFacts,
    IncomingShares,
    InterfaceAttachment,
    MetadataUpdate,
    MigrationEndpoint,
    SpawnFlavor,
    SpawnRequest,
    SpawnResult,
    VolumeAttachment,
)
from wattvisor.compute.image_properties import check_host_support, fetch_guest_support, guest_shape
from wattvisor.compute.metadata_update import apply_update, flavor_meta
from wattvisor.energy import EnergySampler
from wattvisor.energy.inventory import VMRecord
from wattvisor.energy.snapshot import EnergySnapshot, PowerPoint
from wattvisor.guest import Disk, Domain, Filesystem, Interface, ShareMeta, make_alias
from wattvisor.host.configdrive import ConfigDriveMetadata, build_config_drive
from wattvisor.host.connection import libvirt_error_summary
from wattvisor.host.console_log import ConsoleLog, read_console_log, rotate_console_log
from wattvisor.host.driver import (
    DetachTimeout,
    DeviceNotFound,
    DomainNotFound,
    HostDriver,
    HostError,
)
from wattvisor.host.image_cache import (
    ExpectedContent,
    ImageCache,
    ImageCacheError,
    ImageSources,
    LocalImageFiles,
)
from wattvisor.host.instance_disks import InstanceDisks, prepare_instance_disks
from wattvisor.host.live_migration import (
    HostMigrations,
    MigrationOrder,
    MigrationProgress,
    MigrationResult,
    virtiofs_migrates_natively,
)
from wattvisor.host.networks import HostNetworks, NetworkError, NetworkSpec
from wattvisor.host.shares import PreparedShare, ShareError
from wattvisor.host.tunnels import (
    TunnelError,
    TunnelSpec,
    TunnelState,
    list_tunnels,
    tunnel_down,
    tunnel_up,
)

log = logging.getLogger(__name__)

VOLUME_POOL_PREFIX = "wattvisor-volumes"
IMAGE_CACHE_KEEP_S = 24 * 3600.0
"""How long a base no server uses stays cached (a respawn of the image is then cheap)."""
_VIRTIO_TARGETS = tuple(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz")


class LocalHostClient:
    """Implements :class:`wattvisor.compute.hostclient.HostClient` over a ``HostDriver``."""

    def __init__(
        self,
        driver: HostDriver,
        sampler: EnergySampler | None = None,
        *,
        data_dir: Path | None = None,
        image_sources: ImageSources | None = None,
        endpoint: MigrationEndpoint | None = None,
    ) -> None:
        self.driver = driver
        self.endpoint = endpoint or MigrationEndpoint(underlay_address=None, libvirt_uri=None)
        """How other hosts reach this one for migrations (an agent's settings say; the
        all-in-one takes none)."""
        self.migrations = HostMigrations(driver)
        self.sampler = sampler
        self.data_dir = data_dir or driver.data_dir
        self.instances_dir = self.data_dir / "instances"
        self.volumes_dir = self.data_dir / "volumes"
        digest = hashlib.sha256(str(self.volumes_dir.resolve()).encode()).hexdigest()[:10]
        self.volume_pool = f"{VOLUME_POOL_PREFIX}-{digest}"
        self._pool_lock = threading.Lock()
        self.image_cache = ImageCache(self.data_dir / "images")
        self.image_sources: ImageSources = image_sources or LocalImageFiles()
        """Where image files come from: this machine's paths (the all-in-one), or the
        controller over HTTP (an agent: :class:`wattvisor.host.image_fetch.ControllerImages`)."""
        self.networks = HostNetworks(driver.connection)

    # -- identity ------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return self.driver.uri

    @property
    def pushes_energy(self) -> bool:
        """The sampler runs in this process: its figures are read directly."""
        return False

    def facts(self) -> HostFacts:
        hostname = str(self.driver.connection.call(lambda c: c.getHostname()))
        return HostFacts(
            provider_uuid=self.driver.host_uuid(),
            hostname=hostname,
            uri=self.driver.uri,
            traits=self.driver.traits(),
            inventory=self.driver.inventory(),
        )

    def state(self) -> str:
        """``up``, or ``down:`` with libvirt's error code and domain (its message is logged)."""
        try:
            self.driver.libvirt_version()
        except Exception as exc:
            log.warning("host %s does not answer: %s", self.driver.uri, exc)
            return f"down: {libvirt_error_summary(exc)}"
        return "up"

    def domain_exists(self, domain_name: str) -> bool:
        try:
            self.driver.domain_state(domain_name)
        except DomainNotFound:
            return False
        return True

    def domain_states(self) -> dict[str, str]:
        return {d.uuid.lower(): d.state for d in self.driver.list_domains()}

    # -- lifecycle -----------------------------------------------------------------------

    def spawn(self, request: SpawnRequest) -> SpawnResult:
        """Build and start the server, once per server uuid: a repeated spawn (a build
        task run again after its controller died) adopts the domain the first one
        defined instead of defining a second, and starts it if it is not running."""
        adopted = self._adopt(request)
        if adopted is not None:
            return adopted
        instance_dir = self.instances_dir / request.server_uuid
        name = request.domain_name
        shares_prepared = False
        defined = False
        try:
            _make_traversable(instance_dir)
            request = self._with_cached_boot_files(request)
            prepared = self.driver.prepare_shares(name) if request.power_metrics else []
            shares_prepared = bool(prepared)
            if request.power_metrics and not prepared:
                raise HostError(
                    f"server {request.server_uuid} asks for power metrics but host "
                    f"{self.driver.uri} has no share_local_fs directory configured"
                )
            tags = tuple(share.mount_tag for share in prepared)
            self._ensure_network(request)
            if self.sampler is not None and prepared:
                self.sampler.prepare_guest_share(self._vm_record(request, prepared))
            drive = build_config_drive(
                instance_dir / "config-drive.iso",
                ConfigDriveMetadata(
                    uuid=request.server_uuid, name=request.display_name,
                    project_id=request.project,
                    shares=tuple(ShareMeta(tag=t, purpose=POWER_METRICS_PURPOSE) for t in tags),
                    network=request.network,
                ),
            )  # fmt: skip
            disks = self._disks(request, instance_dir)
            console = instance_dir / "console.log"
            domain = build_domain(
                request,
                GuestFiles(
                    console_log=console,
                    config_drive=drive,
                    root_disk=disks.root.path if disks.root else None,
                    root_format=disks.root.format if disks.root else None,
                    extra_disks=disks.extra,
                ),
                self.driver.share_devices(prepared),
                virt_type=self.driver.settings.virt_type,
                machine=self.driver.settings.machine_type,
            )
            if (nic := server_interface(request)) is not None:
                domain.add_device(nic)
            self._check_guest_support(request, domain)
            self.driver.define(domain)
            defined = True
            state = self.driver.start(request.server_uuid)
            return SpawnResult(domain_name=name, share_tags=tags, state=state.state)
        except BaseException:
            self._cleanup(request, defined=defined, shares_prepared=shares_prepared)
            self.networks.forget()  # the next spawn checks the network again
            raise

    def _adopt(self, request: SpawnRequest) -> SpawnResult | None:
        """The result of an earlier spawn of the same server, if its domain exists here.

        A domain of this uuid under another name is refused without touching it (its
        files are keyed by the uuid: a cleanup here would remove them from under it).
        """
        try:
            state = self.driver.domain_state(request.server_uuid)
        except DomainNotFound:
            return None
        if state.name != request.domain_name:
            raise HostError(
                f"server {request.server_uuid} already has domain {state.name!r} on "
                f"{self.driver.uri}; not defining {request.domain_name!r} as a second one"
            )
        domain = self.driver.domain(request.server_uuid, inactive=True)
        tags = tuple(
            fs.target_dir
            for fs in domain.devices.of_type(Filesystem)
            if fs.driver_type == "virtiofs" and fs.target_dir
        )
        if not state.active:
            state = self.driver.start(request.server_uuid)
        log.info("server %s: adopted domain %s from an earlier spawn", request.server_uuid,
                 state.name)  # fmt: skip
        return SpawnResult(domain_name=state.name, share_tags=tags, state=state.state)

    def _disks(self, request: SpawnRequest, instance_dir: Path) -> InstanceDisks:
        """Root overlay (unless booting from a volume), ephemeral and swap disks."""
        flavor, image = request.flavor, request.image
        try:
            source = None
            expected = _expected(image.disk_sha256, image.disk_size)
            if image.disk_path and request.root_volume is None:
                source = self.image_sources.source(image.id, "disk", image.disk_path, expected)
            return prepare_instance_disks(
                instance_dir, self.image_cache, image_id=image.id, image_path=source,
                image_format=image.disk_format, root_gb=flavor.disk_gb,
                ephemeral_gb=flavor.ephemeral_gb, swap_mb=flavor.swap_mb,
                root_alias=ROOT_DISK_ALIAS, image_expected=expected,
            )  # fmt: skip
        except (ImageCacheError, ValueError) as exc:
            raise HostError(f"server {request.server_uuid}: {exc}") from exc

    def _with_cached_boot_files(self, request: SpawnRequest) -> SpawnRequest:
        """The request with its kernel and initrd replaced by the host's checked copies
        in the image cache (fetched from the controller or copied from a local path,
        once per content), so the guest boots exactly the registered files."""
        image = request.image
        changes: dict[str, Any] = {}
        try:
            for part, path, sha256, size in (
                ("kernel", image.kernel_path, image.kernel_sha256, image.kernel_size),
                ("initrd", image.initrd_path, image.initrd_sha256, image.initrd_size),
            ):
                if not path:
                    continue
                expected = _expected(sha256, size)
                source = self.image_sources.source(image.id, part, path, expected)
                cached = self.image_cache.boot_file(image.id, part, source, expected)
                changes[f"{part}_path"] = str(cached)
        except ImageCacheError as exc:
            raise HostError(f"server {request.server_uuid}: {exc}") from exc
        if not changes:
            return request
        return dataclasses.replace(request, image=dataclasses.replace(image, **changes))

    def _ensure_network(self, request: SpawnRequest) -> None:
        if request.network is None:
            return
        try:
            self.networks.ensure(request.network.spec)
        except NetworkError as exc:
            raise HostError(
                f"server {request.server_uuid} cannot be plugged into its network: {exc}"
            ) from exc

    def _check_guest_support(self, request: SpawnRequest, domain: Domain) -> None:
        """The late check: what the image asks of the guest, held against this host's
        domain capabilities before anything is defined (raises HostError naming it)."""
        shape = guest_shape(request.image.properties, request.flavor.extra_specs)
        support = fetch_guest_support(self.driver, domain, shape)
        if support is not None:
            check_host_support(domain, shape, support)

    def _vm_record(self, request: SpawnRequest, prepared: list[PreparedShare]) -> VMRecord:
        return VMRecord(
            uuid=request.server_uuid,
            domain=request.domain_name,
            project=request.project,
            power_metrics=True,
            share_dirs=tuple(share.share_dir for share in prepared),
        )

    def _cleanup(self, request: SpawnRequest, *, defined: bool, shares_prepared: bool) -> None:
        """Undo a failed spawn: every step is tried, and each failure is logged with what
        it was cleaning, so a step that fails never hides or skips the next one."""
        name, uuid = request.domain_name, request.server_uuid
        steps: list[tuple[str, Callable[[], object]]] = []
        if defined:
            steps.append((f"undefining domain {name}", lambda: self.driver.undefine(uuid)))
        if shares_prepared or defined:
            steps.append((f"removing the shares of {name}",
                          lambda: self.driver.release_shares(name)))  # fmt: skip
        if self.sampler is not None and request.power_metrics:
            sampler = self.sampler
            steps.append((f"forgetting the energy of {uuid}", lambda: sampler.forget_vm(uuid)))
        steps.append((f"removing {self.instances_dir / uuid}",
                      lambda: _remove_tree(self.instances_dir / uuid)))  # fmt: skip
        _run_all(f"cleaning up the failed spawn of server {uuid}", steps)

    def stop(self, domain_name: str, timeout_s: float) -> None:
        self.driver.shutdown(domain_name, timeout_s=timeout_s)

    def start(self, domain_name: str) -> None:
        self._rotate_console_log(self.driver.domain_state(domain_name).uuid)
        self.driver.start(domain_name)

    def _rotate_console_log(self, server_uuid: str) -> None:
        """Keep the appended console log within its cap (virtlogd rotates it only while the
        guest runs, and not at all where QEMU writes it itself)."""
        settings = self.driver.settings
        try:
            for line in rotate_console_log(
                self.instances_dir / server_uuid.lower(),
                max_bytes=settings.console_log_max_bytes, backups=settings.console_log_backups,
            ):  # fmt: skip
                log.info("console log of server %s: %s", server_uuid, line)
        except OSError as exc:
            log.warning("cannot rotate the console log of server %s: %s", server_uuid, exc)

    def console_log(
        self, server_uuid: str, *, lines: int | None, cursor: str | None, max_bytes: int
    ) -> ConsoleLog:
        try:
            canonical = str(uuid.UUID(server_uuid)) == server_uuid.lower()
        except ValueError:
            canonical = False
        if not canonical:  # it names a directory: never a path
            raise HostError(f"server uuid {server_uuid[:40]!r} is not a canonical uuid")
        try:
            return read_console_log(
                self.instances_dir / server_uuid, server_uuid,
                lines=lines, cursor=cursor, max_bytes=max_bytes,
            )  # fmt: skip
        except OSError as exc:
            raise HostError(f"cannot read the console log of server {server_uuid}: {exc}") from exc

    def update_metadata(self, domain_name: str, update: MetadataUpdate) -> None:
        self.driver.update_instance_metadata(domain_name, lambda meta: apply_update(meta, update))

    def resize(self, domain_name: str, flavor: SpawnFlavor, stop_timeout_s: float) -> str:
        state = self.driver.resize_domain(
            domain_name, vcpus=flavor.vcpus, memory_mib=flavor.ram_mb,
            flavor=flavor_meta(flavor), stop_timeout_s=stop_timeout_s,
        )  # fmt: skip
        return state.state

    def delete(self, server_uuid: str, domain_name: str) -> None:
        """Remove the domain and whatever else of the server exists on this host.

        A domain that is gone already (a build interrupted before it was defined, a
        second try after a failure) still leaves shares, energy and files to clean.
        """
        try:
            self.driver.undefine(server_uuid)
        except DomainNotFound:
            log.info("domain %s of server %s was already gone", domain_name, server_uuid)
        steps: list[tuple[str, Callable[[], object]]] = [
            (f"removing the shares of {domain_name}",
             lambda: self.driver.release_shares(domain_name)),
        ]  # fmt: skip
        if self.sampler is not None:
            sampler = self.sampler
            steps.append((f"forgetting the energy of {server_uuid}",
                          lambda: sampler.forget_vm(server_uuid)))  # fmt: skip
        steps.append((f"removing {self.instances_dir / server_uuid}",
                      lambda: _remove_tree(self.instances_dir / server_uuid)))  # fmt: skip
        failures = _run_all(f"deleting server {server_uuid}", steps)
        if failures:
            raise HostError(f"server {server_uuid} not fully removed: {'; '.join(failures)}")
        try:
            self.prune_images()
        except Exception as exc:  # the server is gone all the same; a later delete retries
            log.warning("pruning the image cache of %s failed: %s", self.driver.uri, exc)

    def prune_images(self, min_age_s: float = IMAGE_CACHE_KEEP_S) -> list[Path]:
        """Remove the cached bases no disk of this host's servers is backed by and no
        spawn used for ``min_age_s``; returns their paths."""
        return self.image_cache.prune(self._overlays, min_age_s)

    def _overlays(self) -> list[Path]:
        if not self.instances_dir.is_dir():
            return []
        return [disk for server in self.instances_dir.iterdir() for disk in server.glob("disk*")]

    # -- volumes -------------------------------------------------------------------------

    def _pool(self) -> libvirt.virStoragePool:
        with self._pool_lock:

            def ensure(conn: libvirt.virConnect) -> libvirt.virStoragePool:
                try:
                    pool = conn.storagePoolLookupByName(self.volume_pool)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                        raise
                    _make_traversable(self.volumes_dir)
                    pool = conn.storagePoolDefineXML(
                        f"<pool type='dir'><name>{self.volume_pool}</name><target>"
                        f"<path>{self.volumes_dir}</path></target></pool>"
                    )
                    with contextlib.suppress(libvirt.libvirtError):
                        pool.setAutostart(1)
                if not pool.isActive():
                    _make_traversable(self.volumes_dir)
                    try:
                        pool.create(0)
                    except libvirt.libvirtError:
                        if not pool.isActive():  # else started meanwhile: what was asked
                            raise
                return pool

            return self.driver.connection.call(ensure)

    def create_volume(self, volume_id: str, size_gb: int, fmt: str) -> str:
        xml = (
            f"<volume><name>{volume_id}.{fmt}</name><capacity unit='GiB'>{size_gb}</capacity>"
            f"<allocation>0</allocation><target><format type='{fmt}'/>"
            "<permissions><mode>0644</mode></permissions></target></volume>"
        )
        try:
            volume = self._pool().createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise HostError(f"cannot create volume {volume_id}: {exc.get_error_message()}") from exc
        return str(volume.path())

    def delete_volume(self, path: str) -> None:
        pool = self._pool()
        try:
            volume = pool.storageVolLookupByName(Path(path).name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return
            raise HostError(f"cannot find volume {path}: {exc.get_error_message()}") from exc
        try:
            volume.delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return  # deleted meanwhile: what was asked
            raise HostError(f"cannot delete volume {path}: {exc.get_error_message()}") from exc

    # -- devices -------------------------------------------------------------------------

    def attach_volume(self, domain_name: str, volume: VolumeAttachment) -> None:
        """Idempotent by alias: a volume the domain has already is not attached twice (an
        attach task may run again after its controller died)."""
        used = set()
        alias = make_alias(volume.volume_id)
        for inactive in (False, True):
            with contextlib.suppress(HostError):
                domain = self.driver.domain(domain_name, inactive=inactive)
                if domain.find_device(alias=alias) is not None:
                    return
                used |= {d.target_dev for d in domain.devices.of_type(Disk)}
        free = [t for t in _VIRTIO_TARGETS if t not in used]
        if not free:
            raise HostError(f"domain {domain_name!r} has no free virtio disk target left")
        disk = Disk(
            source_file=volume.path, target_dev=free[0], driver_type=volume.format,
            serial=volume.volume_id, alias=make_alias(volume.volume_id),
        )  # fmt: skip
        self.driver.attach_device(domain_name, disk.to_xml())

    def attach_interface(self, domain_name: str, interface: InterfaceAttachment) -> None:
        """Idempotent by alias, as :meth:`attach_volume`."""
        for inactive in (False, True):
            with contextlib.suppress(HostError):
                domain = self.driver.domain(domain_name, inactive=inactive)
                if domain.find_device(alias=make_alias(interface.port_id)) is not None:
                    return
        nic = Interface(
            type=interface.kind,
            source_network=interface.source if interface.kind == "network" else None,
            source_bridge=interface.source if interface.kind == "bridge" else None,
            mac=interface.mac,
            model=interface.model,
            alias=make_alias(interface.port_id),
        )
        self.driver.attach_device(domain_name, nic.to_xml())

    def detach_by_alias(self, domain_name: str, alias: str) -> None:
        """Idempotent: a device the domain no longer has is detached, as asked (a detach
        task may run again after its controller died)."""
        try:
            self.driver.detach_device(domain_name, alias)
        except DeviceNotFound:
            log.info("%s has no device %s any more: nothing to detach", domain_name, alias)
        except DetachTimeout as exc:
            # Gone from the persistent definition; the guest drops it at its next start.
            log.warning("%s", exc)

    # -- energy --------------------------------------------------------------------------

    def energy_source(self) -> str:
        return self.sampler.source_label if self.sampler is not None else "none"

    def energy_snapshot(self) -> EnergySnapshot | None:
        return self.sampler.latest() if self.sampler is not None else None

    def vm_history(self, server_uuid: str) -> list[PowerPoint]:
        return self.sampler.vm_history(server_uuid) if self.sampler is not None else []

    def project_history(self, project: str) -> list[PowerPoint]:
        return self.sampler.project_history(project) if self.sampler is not None else []

    def host_history(self) -> list[PowerPoint]:
        return self.sampler.host_history() if self.sampler is not None else []

    # -- live migration ------------------------------------------------------------------

    def migration_endpoint(self) -> MigrationEndpoint:
        return self.endpoint

    def prepare_incoming(self, network: NetworkSpec | None) -> None:
        if network is None:
            return
        try:
            self.networks.ensure(network)
        except NetworkError as exc:
            raise HostError(f"this host cannot take the guest's network: {exc}") from exc

    def tunnel_up(self, spec: TunnelSpec) -> TunnelState:
        try:
            return tunnel_up(spec)
        except TunnelError as exc:
            raise HostError(str(exc)) from exc

    def tunnel_down(self, migration_id: str) -> TunnelState | None:
        try:
            return tunnel_down(migration_id)
        except TunnelError as exc:
            raise HostError(str(exc)) from exc

    def tunnels(self) -> list[TunnelState]:
        return list_tunnels()

    def _incoming_prepared(self, shares: IncomingShares) -> list[PreparedShare]:
        """This host's shares for an arriving guest: the same mount tags, read-only."""
        offered = dict(self.driver.settings.share_local_fs)
        if not offered:
            raise HostError(
                f"host {self.driver.uri} has no power-metrics share (host.share_local_fs is "
                f"empty), so it cannot take server {shares.server_uuid} with its share(s) "
                f"{', '.join(shares.tags)}"
            )
        missing = sorted(set(shares.tags) - set(offered.values()))
        if missing:
            raise HostError(
                f"host {self.driver.uri} offers no share with mount tag(s) "
                f"{', '.join(missing)} that server {shares.server_uuid} reads; it offers: "
                f"{', '.join(sorted(offered.values()))}"
            )
        if "COMPUTE_SHARE_LOCAL_FS" not in self.driver.traits():
            raise HostError(
                f"host {self.driver.uri} lacks COMPUTE_SHARE_LOCAL_FS (it cannot share "
                f"read-only: {self.driver.shares.unavailable_reason}), so it cannot take "
                f"server {shares.server_uuid} with its power-metrics share"
            )
        chosen = [Path(d) for d, tag in offered.items() if tag in shares.tags]
        try:
            return self.driver.shares.prepare(shares.domain_name, chosen)
        except (ShareError, OSError) as exc:
            raise HostError(f"the power-metrics share of {shares.domain_name!r} cannot be "
                            f"made here: {exc}") from exc  # fmt: skip

    def prepare_incoming_shares(self, shares: IncomingShares) -> None:
        prepared = self._incoming_prepared(shares)
        if self.sampler is not None:
            self.sampler.prepare_guest_share(self._incoming_record(shares, prepared))

    def _incoming_record(self, shares: IncomingShares, prepared: list[PreparedShare]) -> VMRecord:
        return VMRecord(
            uuid=shares.server_uuid, domain=shares.domain_name, project=shares.project,
            power_metrics=True, share_dirs=tuple(share.share_dir for share in prepared),
        )  # fmt: skip

    def plug_incoming_shares(self, shares: IncomingShares) -> list[str]:
        prepared = self._incoming_prepared(shares)
        if self.sampler is not None:
            self.sampler.arrive_vm(self._incoming_record(shares, prepared), shares.energy_joules)
        if not shares.attach:
            return [share.mount_tag for share in prepared]
        present = {
            fs.alias for fs in self.driver.domain(shares.domain_name).devices.of_type(Filesystem)
        }
        for device in self.driver.share_devices(prepared):
            if device.alias in present:
                continue  # plugged by an earlier try
            try:
                self.driver.attach_device(shares.domain_name, device.to_xml())
            except HostError as exc:
                raise HostError(f"plugging the power-metrics share {device.target_dir!r} "
                                f"into {shares.domain_name!r} failed: {exc}") from exc  # fmt: skip
        return [share.mount_tag for share in prepared]

    def release_incoming_shares(self, domain_name: str) -> None:
        if self.domain_exists(domain_name):
            return  # the guest is here after all: its share stays
        self.driver.release_shares(domain_name)

    def migrate_out(self, order: MigrationOrder, timeout_s: float) -> MigrationResult:
        if not order.unplug_shares:
            return self.migrations.migrate_out(order)
        domain = self.driver.domain(order.domain_name)
        server_uuid = domain.uuid or ""
        shares = [
            fs for fs in domain.devices.of_type(Filesystem)
            if fs.driver_type == "virtiofs" and fs.alias
        ]  # fmt: skip
        emulator = ElementTree.fromstring(domain.to_xml()).findtext("devices/emulator")
        if not shares or (emulator and virtiofs_migrates_natively(emulator.strip())):
            result = self.migrations.migrate_out(order)
            path = "native" if shares else None
        else:
            self._unplug_shares(order, shares)
            try:
                result = self.migrations.migrate_out(order)
            except BaseException as exc:
                self._replug_shares(order.domain_name, shares)
                if isinstance(exc, HostError):
                    raise HostError(f"{exc}; the power-metrics share is plugged back into "
                                    "the guest on its source") from exc  # fmt: skip
                raise
            path = "unplug"
        joules = self.sampler.vm_total(server_uuid) if self.sampler is not None else None
        with contextlib.suppress(HostError):
            self.driver.release_shares(order.domain_name)  # the guest reads the target's now
        return dataclasses.replace(result, share_path=path, energy_joules=joules)

    def _unplug_shares(self, order: MigrationOrder, shares: list[Filesystem]) -> None:
        """Unplug every share, or plug back what went and raise saying why."""
        done: list[Filesystem] = []
        for fs in shares:
            assert fs.alias is not None
            try:
                self.driver.detach_device(
                    order.domain_name, fs.alias, wait_s=order.unplug_timeout_s
                )
            except (DetachTimeout, DeviceNotFound, HostError) as exc:
                self._replug_shares(order.domain_name, [*done, fs])
                reason = (
                    f"the guest did not acknowledge the unplug within "
                    f"migration.share_unplug_timeout_s = {order.unplug_timeout_s:g} s"
                    if isinstance(exc, DetachTimeout) else str(exc)
                )  # fmt: skip
                raise HostError(
                    f"the power-metrics share {fs.target_dir!r} of {order.domain_name!r} could "
                    f"not be unplugged for the move ({reason}); it is plugged back and the "
                    "guest stays here"
                ) from exc
            done.append(fs)

    def _replug_shares(self, domain_name: str, shares: list[Filesystem]) -> None:
        """Plug shares back into the guest here, to the live guest where it lost them and
        to its definition (a detach that timed out left the live device in place)."""
        try:
            dom = self.driver.connection.get().lookupByName(domain_name)
            live = Domain.parse(str(dom.XMLDesc(0)))
            persistent = Domain.parse(str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        except libvirt.libvirtError as exc:
            log.error("cannot plug the shares of %s back: %s", domain_name, exc)
            return
        for fs in shares:
            flags = 0
            if live.find_device(alias=fs.alias) is None:
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            if persistent.find_device(alias=fs.alias) is None:
                flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if not flags:
                continue
            try:
                dom.attachDeviceFlags(fs.to_xml(), flags)
            except libvirt.libvirtError as exc:
                log.error("plugging share %s back into %s failed: %s", fs.alias, domain_name,
                          exc)  # fmt: skip

    def migration_progress(self, domain_name: str) -> MigrationProgress | None:
        return self.migrations.progress(domain_name)

    def abort_migration(self, domain_name: str) -> bool:
        return self.migrations.abort(domain_name)

    def close(self) -> None:
        self.driver.close()


def _run_all(purpose: str, steps: list[tuple[str, Callable[[], object]]]) -> list[str]:
    """Run every step even when one fails; log each failure with what it was doing.
    Returns one line per failed step."""
    failures = []
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            log.error("%s: %s failed: %s", purpose, what, exc)
            failures.append(f"{what}: {exc}")
    return failures


def _remove_tree(path: Path) -> None:
    """Remove a directory tree; one that does not exist is fine, any other error raises."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def _make_traversable(path: Path) -> None:
    """mkdir -p 0755 whatever the umask: QEMU runs as its own user and must reach the files.

    Only the missing tail of the path is looked at (every build creates one directory
    under an existing one; a stat per ancestor was a measurable share of a build).
    """
    missing = []
    probe = path
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:
        created.chmod(0o755)


def _expected(sha256: str | None, size: int | None) -> ExpectedContent | None:
    return ExpectedContent(sha256, size) if sha256 is not None and size is not None else None
