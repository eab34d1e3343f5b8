"""The domain XML of a new server, from a spawn request and what the host prepared.

Every attachable device gets a ``ua-`` alias so it can be found and detached later;
the instance metadata records owner, flavor, image and share tags (never host
paths) so the XML alone says what the guest is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wattvisor import __version__
from wattvisor.compute.hostclient import SpawnRequest
from wattvisor.compute.image_properties import apply_guest_shape, guest_shape
from wattvisor.guest import (
    Disk,
    Domain,
    Filesystem,
    FlavorMeta,
    ImageMeta,
    InstanceMetadata,
    MemoryBacking,
    OwnerMeta,
    RootMeta,
    Serial,
    ShareMeta,
    make_alias,
)
from wattvisor.host.configdrive import config_drive_device
from wattvisor.host.instance_disks import InstanceDisk, disk_targets

ROOT_DISK_ALIAS = make_alias("root-disk")
POWER_METRICS_PURPOSE = "power_metrics"


@dataclass(frozen=True, slots=True)
class GuestFiles:
    """Host files of one server: its console log, config drive, (disk images) root disk
    and the flavor's ephemeral and swap disks."""

    console_log: Path
    config_drive: Path
    root_disk: Path | None = None
    root_format: str | None = None
    """Format of ``root_disk`` (a qcow2 overlay); None: the image's own format."""
    extra_disks: tuple[InstanceDisk, ...] = ()


def instance_metadata(request: SpawnRequest, share_tags: Sequence[str]) -> InstanceMetadata:
    """wattvisor's ``<metadata>`` element for the server."""
    flavor = request.flavor
    return InstanceMetadata(
        package_version=__version__,
        display_name=request.display_name,
        creation_time=request.created_at,
        flavor=FlavorMeta(
            name=flavor.name, id=flavor.id, memory_mib=flavor.ram_mb, disk_gib=flavor.disk_gb,
            swap_mib=flavor.swap_mb, ephemeral_gib=flavor.ephemeral_gb, vcpus=flavor.vcpus,
            extra_specs=dict(flavor.extra_specs),
        ),
        image=ImageMeta(uuid=request.image.id, properties=dict(request.image.properties)),
        owner=OwnerMeta(
            user_uuid=request.user_uuid, user_name=request.user,
            project_uuid=request.project_uuid, project_name=request.project,
        ),
        root=_root_meta(request),
        shares=tuple(ShareMeta(tag=tag, purpose=POWER_METRICS_PURPOSE) for tag in share_tags),
    )  # fmt: skip


def _root_meta(request: SpawnRequest) -> RootMeta:
    volume = request.root_volume
    if volume is not None:
        return RootMeta(type="volume", uuid=volume.volume_id)
    return RootMeta(type="image", uuid=request.image.id)


def build_domain(
    request: SpawnRequest,
    files: GuestFiles,
    shares: Sequence[Filesystem],
    *,
    virt_type: str,
    machine: str | None,
) -> Domain:
    """The complete guest: direct kernel or disk boot, config drive, shares, file console."""
    image = request.image
    machine = machine or "pc"
    share_tags = [fs.mount_tag or "" for fs in shares]
    domain = Domain(
        name=request.domain_name,
        uuid=request.server_uuid,
        memory_mib=request.flavor.ram_mb,
        vcpus=request.flavor.vcpus,
        virt_type=virt_type,
        machine=machine,
        kernel=image.kernel_path,
        initrd=image.initrd_path,
        cmdline=image.cmdline,
        boot_devs=() if image.kernel_path else ("hd",),
        # ACPI: the power button of a graceful stop, and PCI hot-unplug of devices.
        features=("acpi", "apic"),
        memory_backing=MemoryBacking() if shares else None,
        instance_metadata=instance_metadata(request, share_tags),
    )
    root_bus = "virtio"
    taken = set()
    volume = request.root_volume
    if volume is not None:
        domain.add_device(
            Disk(
                source_file=volume.path, target_dev="vda", bus=root_bus,
                driver_type=volume.format, serial=volume.volume_id,
                alias=make_alias(volume.volume_id),
            )
        )  # fmt: skip
        taken.add("vda")
    elif files.root_disk is not None:
        domain.add_device(
            Disk(
                source_file=str(files.root_disk), target_dev="vda", bus=root_bus,
                driver_type=files.root_format or image.disk_format or "raw",
                alias=ROOT_DISK_ALIAS,
            )
        )  # fmt: skip
        taken.add("vda")
    bus = "ide" if machine.startswith("pc") and "q35" not in machine else "sata"
    drive = config_drive_device(files.config_drive, bus=bus)
    taken.add(drive.target_dev or "")
    targets = disk_targets(root_bus, taken, len(files.extra_disks))
    for extra, target in zip(files.extra_disks, targets, strict=True):
        domain.add_device(
            Disk(
                source_file=str(extra.path), target_dev=target, bus=root_bus,
                driver_type=extra.format, serial=extra.serial, alias=extra.alias,
            )
        )  # fmt: skip
    domain.add_device(drive)
    for share in shares:
        domain.add_device(share)
    # Appended across boots; virtlogd rotates it (wattvisor.host.console_log).
    console = Serial(type="file", source_path=str(files.console_log))
    console.source_append = True
    domain.add_device(console)
    # The image's hw_* properties (disk and cdrom bus, NIC and video model, firmware...).
    shape = guest_shape(request.image.properties, request.flavor.extra_specs)
    apply_guest_shape(domain, shape, root_disk_alias=ROOT_DISK_ALIAS)
    return domain
