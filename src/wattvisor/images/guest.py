"""The tiny busybox guest: Debian's cloud kernel + an initramfs of busybox and one script.

It boots in seconds under TCG, which makes it the guest of the end-to-end tests
and the ready image of ``wattvisor up``. It is built once and cached; the cache
key covers every input (kernel package and version, module list, busybox
binary, init script), so a changed input gives a new image and an unchanged one
is never rebuilt.

Cache location: ``<repo>/.cache/guest-image`` when running from a source
checkout (git-ignored), otherwise ``<data_dir>/images``. QEMU runs guests as the
unprivileged ``libvirt-qemu`` user and opens the kernel and initrd itself, so a
checkout whose parent directories that user cannot traverse (e.g. under
``/root``) falls back to ``<data_dir>/images`` too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wattvisor.images import debian_kernel
from wattvisor.images.cpio import CpioEntry, gzip_deterministic, newc_archive
from wattvisor.images.guest_init import INIT_SCRIPT, INIT_VERSION

log = logging.getLogger(__name__)

BUSYBOX = Path("/bin/busybox")
# Loaded by /init in dependency order (resolved from each module's depends=).
# virtio + virtiofs are what the share needs; the rest lets a guest read a
# config-drive cdrom: the cloud kernel has no AHCI driver, so the cdrom must sit
# on the IDE bus (pc machine, ata_piix) or on virtio-scsi (sr_mod). button + evdev
# turn the ACPI power button (``virsh shutdown``) into an input event for acpid.
# virtio_net is the server's NIC (hw_vif_model virtio, the default); Debian's cloud
# kernel ships no e1000 driver, so images asking for e1000 need another kernel.
GUEST_MODULES: tuple[str, ...] = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_net",
    "fuse",
    "virtiofs",
    "virtio_blk",
    "virtio_scsi",
    "ata_piix",
    "sd_mod",
    "sr_mod",
    "isofs",
    "evdev",
    "button",
)
BASE_CMDLINE = "console=ttyS0 panic=-1 loglevel=4"
_IMAGE_FORMAT = 1  # bump when the layout written by _build changes


class GuestImageError(RuntimeError):
    """The guest image could not be built; the message names the failing input."""


@dataclass(frozen=True)
class GuestImage:
    """A ready guest, booted by direct kernel boot (``<kernel>``, ``<initrd>``, ``<cmdline>``)."""

    kernel: Path
    initrd: Path
    kernel_version: str
    kernel_package: str
    directory: Path
    built: bool
    build_seconds: float

    def summary(self) -> str:
        """One line for the command line: where the image is and whether it was just built."""
        how = f"built in {self.build_seconds:.1f} s" if self.built else "cached"
        return (
            f"guest image {self.directory} ({how}): kernel {self.kernel_package}, "
            f"initrd {self.initrd.stat().st_size / 1e6:.1f} MB"
        )

    def cmdline(self, scenario: str = "idle", **params: str | int | float) -> str:
        """The kernel command line selecting a scenario of the guest's /init.

        ``cmdline("share", tag="wvshare", file="value", pause=2)`` gives
        ``console=ttyS0 ... wv.scenario=share wv.tag=wvshare wv.file=value wv.pause=2``.
        """
        words = [BASE_CMDLINE, f"wv.scenario={scenario}"]
        for key, value in params.items():
            text = str(value)
            if not text or any(c.isspace() for c in text):
                raise ValueError(
                    f"guest parameter {key}={text!r} must be non-empty without white space"
                )
            words.append(f"wv.{key}={text}")
        return " ".join(words)


def _repo_root() -> Path | None:
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "src" / "wattvisor").is_dir():
        return root
    return None


def _traversable_by_others(path: Path) -> bool:
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def default_cache_dir(data_dir: Path | None = None) -> Path:
    """Where the image is cached when no directory is given (see the module docstring)."""
    root = _repo_root()
    if root is not None and _traversable_by_others(root):
        return root / ".cache" / "guest-image"
    if data_dir is None:
        from wattvisor.config import load_settings

        data_dir = load_settings().data_dir
    return data_dir / "images"


def _make_traversable_dirs(path: Path) -> None:
    """mkdir -p with mode 0755 whatever the umask, so QEMU's user can reach the files."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:  # only what we created: never loosen or tighten a user's dir
        created.chmod(0o755)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _build_lock(cache_dir: Path) -> Iterator[None]:
    fd = os.open(cache_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _newest_cached_kernel(kernels: Path) -> debian_kernel.KernelPackage | None:
    candidates = []
    for package_file in kernels.glob("*/package"):
        name, _, version = package_file.read_text().strip().partition(" ")
        candidates.append((package_file.stat().st_mtime, name, version))
    if not candidates:
        return None
    _, name, version = max(candidates)
    return debian_kernel.KernelPackage(name=name, version=version)


_APT_LISTS = Path("/var/lib/apt/lists")


def _resolve_kernel(cache_dir: Path) -> debian_kernel.KernelPackage:
    # Asking apt costs most of a cached call; its answer only changes when the
    # package lists do, so remember it together with the lists' directory stamp.
    remembered = cache_dir / "kernels" / "resolved.json"
    try:
        stamp = _APT_LISTS.stat().st_mtime_ns
    except OSError:
        stamp = None
    try:
        saved = json.loads(remembered.read_text())
        if stamp is not None and saved["apt_lists"] == stamp:
            return debian_kernel.KernelPackage(name=saved["name"], version=saved["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        package = debian_kernel.resolve_kernel_package()
        if stamp is not None:
            remembered.write_text(
                json.dumps({"apt_lists": stamp, "name": package.name, "version": package.version})
            )
        return package
    except debian_kernel.KernelFetchError as exc:
        # Offline or without apt lists: an already fetched kernel still serves.
        cached = _newest_cached_kernel(cache_dir / "kernels")
        if cached is None:
            raise GuestImageError(f"cannot choose a guest kernel: {exc}") from exc
        return cached


def _initramfs(kernel: debian_kernel.UnpackedKernel, busybox: bytes) -> bytes:
    release = kernel.package.release
    entries = [
        CpioEntry.directory(d)
        for d in (
            "bin",
            "dev",
            "etc",
            "lib",
            "lib/modules",
            f"lib/modules/{release}",
            "mnt",
            "cdrom",
            "proc",
            "sbin",
            "sys",
            "tmp",
            "usr",
            "usr/bin",
            "usr/sbin",
        )
    ]
    entries += [
        CpioEntry.file("init", INIT_SCRIPT.encode(), 0o755),
        CpioEntry.file("bin/busybox", busybox, 0o755),
        CpioEntry.symlink("bin/sh", "busybox"),
        # Opened by the kernel before /init runs: without it /init has no stdout.
        CpioEntry.char_device("dev/console", 5, 1),
        CpioEntry.char_device("dev/null", 1, 3, 0o666),
        CpioEntry.file(
            f"lib/modules/{release}/load-order",
            "".join(f"{name}\n" for name, _ in kernel.modules).encode(),
        ),
    ]
    entries += [
        CpioEntry.file(f"lib/modules/{release}/{name}.ko", path.read_bytes())
        for name, path in kernel.modules
    ]
    return gzip_deterministic(newc_archive(entries))


def ensure_guest_image(cache_dir: Path | None = None) -> GuestImage:
    """Return the cached guest image, building it first when an input changed.

    Needs ``apt-get`` access to a Debian mirror the first time (the kernel) and
    ``busybox-static``; concurrent callers wait for one another's build.
    """
    started = time.perf_counter()
    cache_dir = (cache_dir or default_cache_dir()).resolve()
    try:
        busybox = BUSYBOX.read_bytes()
    except OSError as exc:
        raise GuestImageError(
            f"{BUSYBOX} is missing ({exc.strerror}); install busybox-static (`make setup`)"
        ) from exc
    _make_traversable_dirs(cache_dir / "kernels")
    with _build_lock(cache_dir):
        package = _resolve_kernel(cache_dir)
        modules_key = _sha256(" ".join(GUEST_MODULES).encode())[:12]
        kernel_dir = cache_dir / "kernels" / f"{package.name}_{package.version}_{modules_key}"
        key_inputs = {
            "format": _IMAGE_FORMAT,
            "kernel": [package.name, package.version],
            "modules": list(GUEST_MODULES),
            "busybox": _sha256(busybox),
            "init": [INIT_VERSION, _sha256(INIT_SCRIPT.encode())],
        }
        key = _sha256(json.dumps(key_inputs, sort_keys=True).encode())[:16]
        image_dir = cache_dir / f"image-{key}"
        manifest = image_dir / "manifest.json"
        if manifest.is_file():
            return _image_from(image_dir, package, built=False, started=started)
        kernel = debian_kernel.read_unpacked(package, kernel_dir)
        if kernel is None:
            try:
                kernel = debian_kernel.fetch_kernel(package, list(GUEST_MODULES), kernel_dir)
            except debian_kernel.KernelFetchError as exc:
                raise GuestImageError(f"cannot fetch the guest kernel: {exc}") from exc
        staging = cache_dir / f".image-{key}.partial"
        staging.mkdir(mode=0o755, exist_ok=True)
        (staging / "vmlinuz").write_bytes(kernel.vmlinuz.read_bytes())
        (staging / "initrd.gz").write_bytes(_initramfs(kernel, busybox))
        (staging / "manifest.json").write_text(json.dumps(key_inputs, indent=2, sort_keys=True))
        for path in staging.iterdir():
            path.chmod(0o644)
        os.replace(staging, image_dir)
        _prune(cache_dir, keep={image_dir, kernel_dir})
        return _image_from(image_dir, package, built=True, started=started)


def _prune(cache_dir: Path, keep: set[Path]) -> None:
    """Drop images and kernels of earlier inputs; a running guest keeps its open files."""
    for old in [*cache_dir.glob("image-*"), *(cache_dir / "kernels").glob("linux-image-*")]:
        if old not in keep and old.is_dir():
            try:
                shutil.rmtree(old)
            except OSError as exc:
                log.warning("could not remove the earlier guest image files %s: %s", old, exc)


def _image_from(
    image_dir: Path, package: debian_kernel.KernelPackage, built: bool, started: float
) -> GuestImage:
    return GuestImage(
        kernel=image_dir / "vmlinuz",
        initrd=image_dir / "initrd.gz",
        kernel_version=package.release,
        kernel_package=f"{package.name} {package.version}",
        directory=image_dir,
        built=built,
        build_seconds=time.perf_counter() - started,
    )
