"""Root disks of 100 servers of one 200 MiB image: a full copy each vs a qcow2 overlay each
on one cached base (host-side disk preparation only; no guest is booted).

Space of the full copies is the sum of each copy's allocated blocks; each copy is
removed once measured, so the run never holds 20 GiB on a shared disk. The
overlays are all kept: their space is the base plus every overlay, as on a host.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from wattvisor.host.image_cache import MIB, ImageCache
from wattvisor.host.instance_disks import prepare_instance_disks

SERVERS = 100
IMAGE_MIB = 200
IMAGE_ID = "bench-image"


def _image(path: Path) -> None:
    """200 MiB without holes: incompressible data, as a real root file system is not zero."""
    block = os.urandom(MIB)
    with path.open("wb") as handle:
        for n in range(IMAGE_MIB):
            handle.write(block[n:] + block[:n])


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def _full_copies(image: Path, instances: Path) -> tuple[list[float], int]:
    times, space = [], 0
    for n in range(SERVERS):
        disk = instances / f"copy-{n}" / "disk"
        disk.parent.mkdir(parents=True)
        started = time.perf_counter()
        shutil.copyfile(image, disk)
        disk.chmod(0o644)
        times.append(time.perf_counter() - started)
        space += _allocated(disk)
        disk.unlink()
    return times, space


def _overlays(image: Path, instances: Path, cache: ImageCache) -> tuple[list[float], int]:
    times, space = [], 0
    for n in range(SERVERS):
        directory = instances / f"overlay-{n}"
        directory.mkdir(parents=True)
        started = time.perf_counter()
        disks = prepare_instance_disks(
            directory, cache, image_id=IMAGE_ID, image_path=str(image), image_format="raw",
            root_gb=1, ephemeral_gb=0, swap_mb=0, root_alias="ua-root-disk",
        )  # fmt: skip
        times.append(time.perf_counter() - started)
        assert disks.root is not None
        space += _allocated(disks.root.path)
    space += sum(_allocated(base) for base in cache.bases())
    return times, space


def _line(label: str, times: list[float], space: int) -> str:
    return (
        f"   {label:<26} total {sum(times):6.2f} s, first {times[0] * 1e3:7.1f} ms, "
        f"median {statistics.median(times) * 1e3:6.1f} ms, disk {space / MIB:8.1f} MiB"
    )


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="wvbench-disks-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        image = root / "image.raw"
        _image(image)
        copy_times, copy_space = _full_copies(image, root / "instances")
        cache = ImageCache(root / "images")
        overlay_times, overlay_space = _overlays(image, root / "instances", cache)
        print(f"   {SERVERS} servers of one {IMAGE_MIB} MiB raw image, root disk preparation:")
        print(_line("full copy each (before)", copy_times, copy_space))
        print(_line("overlay on cached base", overlay_times, overlay_space))
        print(
            f"   ratio copy/overlay: time {sum(copy_times) / sum(overlay_times):.1f}x, "
            f"disk {copy_space / overlay_space:.1f}x; overlay alone "
            f"{(overlay_space - IMAGE_MIB * MIB) / SERVERS / 1024:.0f} KiB per server"
        )
