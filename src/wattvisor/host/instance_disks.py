"""The disk files of one server: a root overlay, and the flavor's ephemeral and swap disks.

All three are qcow2 overlays in the server's directory on bases from the host's
:class:`~wattvisor.host.image_cache.ImageCache`:

- ``disk``: the root disk, on the image's base, as large as the flavor's ``disk``
  (GiB; 0 = the image's own virtual size). A flavor disk smaller than the image is
  refused before the overlay exists.
- ``disk.eph0``: the flavor's ``ephemeral_gb``, on a blank ext4 base labelled
  ``ephemeral0`` (as Nova formats it, and the label cloud-init mounts by).
- ``disk.swap``: the flavor's ``swap_mb``, on a blank base made by ``mkswap``.

The guest tells them apart without any metadata: serial ``ephemeral0`` or
``swap`` (``/dev/disk/by-id/virtio-ephemeral0``), the file system label, the
swap signature. A server booting from a volume has no root overlay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wattvisor.guest import make_alias
from wattvisor.host.image_cache import (
    GIB,
    MIB,
    ExpectedContent,
    ImageCache,
    ImageSource,
    check_root_size,
    create_overlay,
)

EPHEMERAL_SERIAL = "ephemeral0"
SWAP_SERIAL = "swap"
_TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd"}
_TARGET_LIMIT = {"ide": 4}


class InstanceDiskError(ValueError):
    """A disk of the server cannot be laid out; the message names the value."""


@dataclass(frozen=True, slots=True)
class InstanceDisk:
    """One disk file of a server and how the guest is to see it."""

    path: Path
    format: str
    alias: str
    serial: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceDisks:
    """The root overlay (None: no image disk, or a boot volume) and the flavor's extra disks."""

    root: InstanceDisk | None
    extra: tuple[InstanceDisk, ...] = ()


def prepare_instance_disks(
    instance_dir: Path,
    cache: ImageCache,
    *,
    image_id: str,
    image_path: str | ImageSource | None,
    image_format: str | None,
    root_gb: int,
    ephemeral_gb: int,
    swap_mb: int,
    root_alias: str,
    image_expected: ExpectedContent | None = None,
) -> InstanceDisks:
    """Create the server's disk files in ``instance_dir`` (which exists); ``image_path``
    (a local path or a source such as the controller) None means no root overlay
    (direct kernel boot or a boot volume). ``image_expected``: the content the image's
    disk must have (checked before its base is used)."""
    root = None
    if image_path:
        fmt = image_format or "raw"
        source = Path(image_path) if isinstance(image_path, str) else image_path
        with cache.image_base(image_id, source, fmt, image_expected) as base:
            size = check_root_size(root_gb, base.virtual_size, what=f"image {image_id}")
            path = instance_dir / "disk"
            create_overlay(path, base, size)
        root = InstanceDisk(path, "qcow2", root_alias)
    extra = []
    if ephemeral_gb > 0:
        with cache.blank_base("ephemeral", ephemeral_gb * GIB) as base:
            create_overlay(instance_dir / "disk.eph0", base, None)
        extra.append(
            InstanceDisk(instance_dir / "disk.eph0", "qcow2", make_alias(EPHEMERAL_SERIAL),
                         EPHEMERAL_SERIAL)
        )  # fmt: skip
    if swap_mb > 0:
        with cache.blank_base("swap", swap_mb * MIB) as base:
            create_overlay(instance_dir / "disk.swap", base, None)
        extra.append(
            InstanceDisk(instance_dir / "disk.swap", "qcow2", make_alias(SWAP_SERIAL),
                         SWAP_SERIAL)
        )  # fmt: skip
    return InstanceDisks(root, tuple(extra))


def disk_targets(bus: str, taken: Iterable[str], count: int) -> list[str]:
    """``count`` free target names on ``bus`` after the root's (``vda``/``sda``/``hda``),
    which stays the root's even when the server has no root disk of its own."""
    prefix = _TARGET_PREFIX.get(bus)
    if prefix is None:
        raise InstanceDiskError(
            f"disk bus {bus!r} is not accepted; accepted: {', '.join(sorted(_TARGET_PREFIX))}"
        )
    used = set(taken) | {f"{prefix}a"}
    letters = "abcdefghijklmnopqrstuvwxyz"[: _TARGET_LIMIT.get(bus, 26)]
    free = [f"{prefix}{c}" for c in letters if f"{prefix}{c}" not in used]
    if len(free) < count:
        raise InstanceDiskError(
            f"bus {bus!r} has {len(free)} free disk targets, {count} are needed"
        )
    return free[:count]
