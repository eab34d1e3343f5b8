"""The base image cache with real files and the real qemu-img: one base per image content,
small overlays, sizes from the flavor, concurrent spawns, crashed copies never used."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from wattvisor.host.image_cache import (
    GIB,
    MIB,
    ContentMismatch,
    DiskTooSmall,
    ExpectedContent,
    ImageCache,
    ImageCacheError,
    create_overlay,
    image_virtual_size,
    qcow2_backing_file,
)
from wattvisor.host.instance_disks import (
    InstanceDiskError,
    InstanceDisks,
    disk_targets,
    prepare_instance_disks,
)

IMAGE_ID = "2f1b7c9e-5d7a-4d8e-9a55-0c3d4e5f6a7b"


def _qemu_info(path: Path) -> dict[str, object]:
    argv = ["qemu-img", "info", "--output=json", str(path)]
    info = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert isinstance(info, dict)
    return info


def _raw_image(path: Path, size: int = 16 * MIB, data: bytes = b"root file system") -> Path:
    with path.open("wb") as handle:
        handle.write((data * (MIB // len(data) + 1))[:MIB])  # 1 MiB of data, then a hole
        handle.truncate(size)
    return path


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def _spawn_disks(
    cache: ImageCache, instance: Path, image: Path, fmt: str = "raw", *, root_gb: int = 0,
    ephemeral_gb: int = 0, swap_mb: int = 0, image_id: str = IMAGE_ID,
) -> InstanceDisks:  # fmt: skip
    instance.mkdir(parents=True, exist_ok=True)
    return prepare_instance_disks(
        instance, cache, image_id=image_id, image_path=str(image), image_format=fmt,
        root_gb=root_gb, ephemeral_gb=ephemeral_gb, swap_mb=swap_mb, root_alias="ua-root-disk",
    )  # fmt: skip


def test_twenty_servers_of_one_image_share_one_base_and_each_overlay_is_small(
    tmp_path: Path,
) -> None:
    image = _raw_image(tmp_path / "image.raw", 64 * MIB, os.urandom(MIB))
    cache = ImageCache(tmp_path / "images")
    roots = []
    for n in range(20):
        disks = _spawn_disks(cache, tmp_path / "instances" / str(n), image, root_gb=1)
        assert disks.root is not None
        roots.append(disks.root.path)
    [base] = cache.bases()
    assert base.read_bytes() == image.read_bytes()
    assert base.stat().st_mode & 0o777 == 0o444
    assert cache.root.stat().st_mode & 0o777 == 0o755
    for root in roots:
        assert qcow2_backing_file(root) == str(base)
        assert _allocated(root) < 512 * 1024, (root, _allocated(root))
        assert root.stat().st_mode & 0o777 == 0o644
    info = _qemu_info(roots[0])
    assert info["backing-filename-format"] == "raw" and info["format"] == "qcow2"


def test_flavor_disk_sets_the_virtual_size_and_zero_keeps_the_images(tmp_path: Path) -> None:
    image = _raw_image(tmp_path / "image.raw", 48 * MIB)
    cache = ImageCache(tmp_path / "images")
    sized = _spawn_disks(cache, tmp_path / "a", image, root_gb=3)
    own = _spawn_disks(cache, tmp_path / "b", image, root_gb=0)
    assert sized.root is not None and own.root is not None
    assert _qemu_info(sized.root.path)["virtual-size"] == 3 * GIB
    assert _qemu_info(own.root.path)["virtual-size"] == 48 * MIB


def test_flavor_disk_smaller_than_the_image_is_refused_before_the_overlay_exists(
    tmp_path: Path,
) -> None:
    image = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "3G"], check=True)
    cache = ImageCache(tmp_path / "images")
    with pytest.raises(DiskTooSmall) as refused:
        _spawn_disks(cache, tmp_path / "i", image, fmt="qcow2", root_gb=2)
    message = str(refused.value)
    assert "flavor disk 2 GiB" in message and "3.00 GiB" in message and ">= 3 GiB" in message
    assert not (tmp_path / "i" / "disk").exists()


def test_a_qcow2_base_serves_overlays_with_its_format_recorded(tmp_path: Path) -> None:
    image = tmp_path / "image.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    cache = ImageCache(tmp_path / "images")
    disks = _spawn_disks(cache, tmp_path / "i", image, fmt="qcow2", root_gb=2)
    assert disks.root is not None
    info = _qemu_info(disks.root.path)
    assert info["backing-filename-format"] == "qcow2" and info["virtual-size"] == 2 * GIB
    [base] = cache.bases()
    assert base.suffix == ".qcow2" and str(base) == info["backing-filename"]


def test_an_image_with_a_backing_file_of_its_own_is_refused(tmp_path: Path) -> None:
    secret = _raw_image(tmp_path / "host-file.raw")
    chained = tmp_path / "chained.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw",
                    str(chained)], check=True)  # fmt: skip
    with pytest.raises(ImageCacheError, match="backing file of its own"):
        _spawn_disks(ImageCache(tmp_path / "images"), tmp_path / "i", chained, fmt="qcow2")
    assert ImageCache(tmp_path / "images").bases() == []
    assert image_virtual_size(secret, "raw") == 16 * MIB


def test_concurrent_spawns_of_one_image_copy_it_once(tmp_path: Path) -> None:
    image = _raw_image(tmp_path / "image.raw", 32 * MIB, os.urandom(MIB))
    cache = ImageCache(tmp_path / "images")
    copies = 0
    original = ImageCache._fill
    guard = threading.Lock()

    def counting(self: ImageCache, *args: Any) -> tuple[str, int]:
        nonlocal copies
        with guard:
            copies += 1
        return original(self, *args)

    ImageCache._fill = counting  # type: ignore[method-assign]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(
                lambda n: _spawn_disks(cache, tmp_path / "i" / str(n), image, root_gb=1),
                range(16),
            ))  # fmt: skip
    finally:
        ImageCache._fill = original  # type: ignore[method-assign]
    assert copies == 1
    [base] = cache.bases()
    assert {qcow2_backing_file(r.root.path) for r in results if r.root} == {str(base)}
    assert not list(cache.root.glob(".*.part"))


def test_a_copy_cut_short_is_never_used_and_is_cleaned_up(tmp_path: Path) -> None:
    image = _raw_image(tmp_path / "image.raw", 8 * MIB, os.urandom(MIB))
    cache = ImageCache(tmp_path / "images")
    cache.root.mkdir(parents=True)
    # What a crash mid-copy leaves: an unfinished file under the image's key.
    partial = cache.root / f".{IMAGE_ID}.0123456789ab.part"
    partial.write_bytes(image.read_bytes()[:MIB])
    disks = _spawn_disks(cache, tmp_path / "i", image)
    assert disks.root is not None
    [base] = cache.bases()
    assert qcow2_backing_file(disks.root.path) == str(base)
    assert base.read_bytes() == image.read_bytes()
    assert not partial.exists()


def test_a_damaged_base_is_copied_again_and_never_used(tmp_path: Path) -> None:
    image = _raw_image(tmp_path / "image.raw", 8 * MIB, os.urandom(MIB))
    cache = ImageCache(tmp_path / "images")
    _spawn_disks(cache, tmp_path / "a", image)
    [base] = cache.bases()
    base.chmod(0o644)
    with base.open("r+b") as handle:
        handle.truncate(MIB)  # cut short behind the cache's back
    disks = _spawn_disks(cache, tmp_path / "b", image)
    assert disks.root is not None
    [again] = cache.bases()
    assert again.read_bytes() == image.read_bytes()
    assert qcow2_backing_file(disks.root.path) == str(again)


def test_a_changed_image_file_gets_a_new_base_and_old_overlays_keep_theirs(
    tmp_path: Path,
) -> None:
    image = _raw_image(tmp_path / "image.raw", 8 * MIB, b"first")
    cache = ImageCache(tmp_path / "images")
    old = _spawn_disks(cache, tmp_path / "a", image)
    _raw_image(image, 8 * MIB, b"second")
    os.utime(image, ns=(1, 1))
    new = _spawn_disks(cache, tmp_path / "b", image)
    assert old.root is not None and new.root is not None
    old_base, new_base = qcow2_backing_file(old.root.path), qcow2_backing_file(new.root.path)
    assert old_base != new_base and len(cache.bases()) == 2
    assert Path(str(old_base)).read_bytes().startswith(b"first")
    assert Path(str(new_base)).read_bytes().startswith(b"second")


def test_prune_removes_only_bases_no_overlay_uses(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "images")
    used = _raw_image(tmp_path / "used.raw", 8 * MIB, b"used")
    unused = _raw_image(tmp_path / "unused.raw", 8 * MIB, b"unused")
    kept = _spawn_disks(cache, tmp_path / "a", used, image_id="used")
    gone = _spawn_disks(cache, tmp_path / "b", unused, image_id="unused")
    assert kept.root is not None and gone.root is not None
    gone.root.path.unlink()  # its server was deleted
    overlays = [kept.root.path]
    assert cache.prune(lambda: overlays) == []  # both were used within the minimum age
    [removed] = cache.prune(lambda: overlays, min_age_s=0)
    assert removed.name.startswith("unused-")
    assert [b.name.split("-")[0] for b in cache.bases()] == ["used"]


def test_ephemeral_and_swap_disks_are_overlays_on_formatted_bases(tmp_path: Path) -> None:
    image = _raw_image(tmp_path / "image.raw")
    cache = ImageCache(tmp_path / "images")
    first = _spawn_disks(cache, tmp_path / "a", image, ephemeral_gb=1, swap_mb=64)
    _spawn_disks(cache, tmp_path / "b", image, ephemeral_gb=1, swap_mb=64)
    eph, swap = first.extra
    assert (eph.alias, eph.serial, swap.alias, swap.serial) == (
        "ua-ephemeral0", "ephemeral0", "ua-swap", "swap")  # fmt: skip
    assert _qemu_info(eph.path)["virtual-size"] == GIB
    assert _qemu_info(swap.path)["virtual-size"] == 64 * MIB
    assert _allocated(eph.path) < 512 * 1024 and _allocated(swap.path) < 512 * 1024
    eph_base = Path(str(qcow2_backing_file(eph.path)))
    swap_base = Path(str(qcow2_backing_file(swap.path)))
    assert len(cache.bases()) == 3  # the image, one ephemeral and one swap base for both
    with eph_base.open("rb") as handle:
        handle.seek(1024 + 56)
        assert handle.read(2) == b"\x53\xef"  # the ext4 superblock magic
        handle.seek(1024 + 120)
        assert handle.read(16).rstrip(b"\0") == b"ephemeral0"
    with swap_base.open("rb") as handle:
        handle.seek(4096 - 10)
        assert handle.read(10) == b"SWAPSPACE2"


def test_overlay_creation_refuses_to_shrink_a_base(tmp_path: Path) -> None:
    image = _raw_image(tmp_path / "image.raw", 32 * MIB)
    cache = ImageCache(tmp_path / "images")
    with cache.image_base(IMAGE_ID, image, "raw") as base, pytest.raises(DiskTooSmall):
        create_overlay(tmp_path / "disk", base, 16 * MIB)
    assert not (tmp_path / "disk").exists()


def test_disk_targets_follow_the_roots_bus_and_keep_its_slot() -> None:
    assert disk_targets("virtio", {"vda"}, 2) == ["vdb", "vdc"]
    assert disk_targets("virtio", set(), 1) == ["vdb"]  # vda stays the root's
    assert disk_targets("sata", {"sda", "sdc"}, 2) == ["sdb", "sdd"]
    assert disk_targets("ide", {"hda", "hdc"}, 1) == ["hdb"]
    with pytest.raises(InstanceDiskError, match="3 are needed"):
        disk_targets("ide", {"hda", "hdc"}, 3)
    with pytest.raises(InstanceDiskError, match="'floppy' is not accepted"):
        disk_targets("floppy", set(), 1)


def _content_of(path: Path) -> ExpectedContent:
    data = path.read_bytes()
    return ExpectedContent(hashlib.sha256(data).hexdigest(), len(data))


def test_a_local_image_is_checked_against_its_recorded_digest_before_use(tmp_path: Path) -> None:
    image = _raw_image(tmp_path / "image.raw", 8 * MIB, os.urandom(MIB))
    registered = _content_of(image)
    # The file changed after registration, same size (an edit in place).
    with image.open("r+b") as handle:
        handle.seek(100)
        handle.write(b"X")
    cache = ImageCache(tmp_path / "images")
    with (
        pytest.raises(ContentMismatch) as refused,
        cache.image_base(IMAGE_ID, image, "raw", registered),
    ):
        pytest.fail("a changed local image was used")
    assert registered.sha256 in str(refused.value)
    assert _content_of(image).sha256 in str(refused.value)
    assert IMAGE_ID in str(refused.value)
    assert cache.bases() == [] and not list(cache.root.glob(".*.part"))
    with cache.image_base(IMAGE_ID, image, "raw", _content_of(image)) as base:
        assert base.path.read_bytes() == image.read_bytes()


def test_a_kernel_is_cached_once_per_content_and_checked(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(100_000))
    cache = ImageCache(tmp_path / "images")
    first = cache.boot_file(IMAGE_ID, "kernel", kernel, _content_of(kernel))
    assert first.read_bytes() == kernel.read_bytes()
    assert first.stat().st_mode & 0o777 == 0o444
    assert cache.boot_file(IMAGE_ID, "kernel", kernel, _content_of(kernel)) == first
    wrong = ExpectedContent("0" * 64, kernel.stat().st_size)
    with pytest.raises(ContentMismatch, match=r"0{64}"):
        cache.boot_file(IMAGE_ID, "kernel", kernel, wrong)
    with pytest.raises(ImageCacheError, match="'bootloader' is not accepted"):
        cache.boot_file(IMAGE_ID, "bootloader", kernel, None)
