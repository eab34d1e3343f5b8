"""A host's cache of base images: one read-only file per image content, shared by overlays.

Every server's root disk is a qcow2 overlay whose backing file is a base here, so
100 servers of one image cost one copy of it plus a few hundred KiB each (a full
copy per server cost the whole image each time). The cache lives in
``<data_dir>/images/``:

- ``<image id>-<sha256 prefix>.<raw|qcow2>``: a base, named by the image and its
  content, mode 0444 (QEMU only reads it; it runs as its own user, so the
  directory is 0755). A changed source file gets a new name: the overlays of the
  old content keep their base.
- ``<image id>.source.json``: which base the source file became, keyed by the
  source's identity (device, inode, size, mtime, and the sha256 it had to have), so
  a cached spawn costs a stat and a small read instead of hashing the image again;
  for a file fetched from the controller, the expected sha256 and size are the key.
- ``<image id>+kernel-<sha256 prefix>``, ``<image id>+initrd-...``: the files of a
  direct kernel boot, cached and checked the same way (the guest boots these, not
  the controller's paths), with their own ``.source.json``.
- ``ephemeral-<n>G-ext4.raw``, ``swap-<n>M.raw``: formatted blank disks (Nova's
  ``ephemeral_*``/``swap_*`` bases), backing the ephemeral and swap overlays.
- ``.<key>.lock``: one ``flock`` per key, so concurrent spawns (threads or
  processes) populate a base once and a prune never removes a base while an
  overlay on it is being created.

Bytes come from an :class:`ImageSource`: a local file (the all-in-one reads the
catalog's paths) or the controller over HTTP
(:class:`wattvisor.host.image_fetch.HttpImageSource`, for an agent). A base is
written to a ``.part`` file beside it, hashed as it is written, checked against
the sha256 and size the controller recorded (:class:`ExpectedContent`), synced and
renamed only then: a corrupt or crashed copy is never taken for a base (a
mismatch deletes it and raises :class:`ContentMismatch` naming both digests). An
interrupted read resumes at the byte it stopped at, a bounded number of times.
Leftovers are removed the next time the key is locked. Overlays carry their
backing format in the qcow2 header (``-F``), which libvirt 9 needs to follow the
chain itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

log = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2
BASE_FORMATS = ("raw", "qcow2")
BOOT_PARTS = ("kernel", "initrd")
_COPY_CHUNK = 4 * MIB
_ZEROS = bytes(_COPY_CHUNK)
_IMAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_QCOW2_MAGIC = b"QFI\xfb"


class ImageCacheError(RuntimeError):
    """A base image cannot be cached or an overlay not made; the message names the value."""


class DiskTooSmall(ImageCacheError):
    """The flavor's root disk is smaller than the image's virtual size."""


class ContentMismatch(ImageCacheError):
    """A copied or fetched file is not the content recorded for the image; it was deleted."""


class SourceInterrupted(ImageCacheError):
    """A read from a source stopped early (connection lost, server error): resumable."""


@dataclass(frozen=True, slots=True)
class ExpectedContent:
    """What a file must be: its sha256 (hex) and size, as the controller recorded them."""

    sha256: str
    size: int


class ImageSource(Protocol):
    """Where the bytes of an image file come from: a local file, or the controller."""

    def describe(self) -> str:
        """Where, in words for an error message."""
        ...

    def identity(self) -> list[object] | None:
        """What identifies the current content cheaply (a local file's device, inode,
        size and mtime), or None when only the expected digest can (a remote file)."""
        ...

    def read_from(self, offset: int) -> Iterator[bytes]:
        """The bytes from ``offset`` to the end, in bounded chunks. Raises
        :class:`SourceInterrupted` when reading stops early and may be resumed,
        :class:`ImageCacheError` when it cannot succeed."""
        ...


class LocalFileSource:
    """A file on this host (the all-in-one reads the catalog's own paths)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return f"file {self.path}"

    def identity(self) -> list[object] | None:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise ImageCacheError(f"{self.describe()} cannot be read: {exc.strerror}") from exc
        return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]

    def read_from(self, offset: int) -> Iterator[bytes]:
        try:
            with self.path.open("rb") as src:
                src.seek(offset)
                while chunk := src.read(_COPY_CHUNK):
                    yield chunk
        except OSError as exc:
            raise ImageCacheError(f"{self.describe()} cannot be read: {exc.strerror}") from exc


class ImageSources(Protocol):
    """Where a host reads the image files a spawn names (by the controller's paths)."""

    def source(
        self, image_id: str, part: str, path: str, expected: ExpectedContent | None
    ) -> ImageSource: ...


class LocalImageFiles:
    """The controller's paths are this host's (the all-in-one, ``wattvisor up``)."""

    def source(
        self, image_id: str, part: str, path: str, expected: ExpectedContent | None
    ) -> ImageSource:
        return LocalFileSource(Path(path))


@dataclass(frozen=True, slots=True)
class CachedBase:
    """A ready base file: its path, format and the disk size a guest sees."""

    path: Path
    format: str
    virtual_size: int


def image_virtual_size(path: Path, fmt: str) -> int:
    """The virtual size of an image file in bytes, read with ``qemu-img info`` in ``fmt``.

    A qcow2 image with a backing file of its own is refused: its chain would point
    at an arbitrary file on the host.
    """
    if fmt not in BASE_FORMATS:
        raise ImageCacheError(
            f"disk format {fmt!r} is not accepted; accepted: {', '.join(BASE_FORMATS)}"
        )
    result = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", fmt, str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ImageCacheError(
            f"image {path.name!r} is not a readable {fmt} image: {result.stderr.strip()}"
        )
    info = json.loads(result.stdout)
    if info.get("backing-filename"):
        raise ImageCacheError(
            f"image {path.name!r} has a backing file of its own; only self-contained raw "
            "or qcow2 images are accepted"
        )
    return int(info["virtual-size"])


def check_root_size(flavor_disk_gb: int, virtual_size: int, *, what: str) -> int | None:
    """The overlay size in bytes for a flavor's ``disk`` (None: the image's own size).

    Like Nova, disk 0 means "as large as the image", and a disk smaller than the
    image's virtual size is refused (a guest would find its file system cut short).
    """
    if flavor_disk_gb == 0:
        return None
    wanted = flavor_disk_gb * GIB
    if wanted < virtual_size:
        needed = -(-virtual_size // GIB)
        raise DiskTooSmall(
            f"flavor disk {flavor_disk_gb} GiB is smaller than {what}'s virtual size "
            f"{virtual_size / GIB:.2f} GiB ({virtual_size} bytes); use a flavor with disk "
            f">= {needed} GiB, or disk 0 for the image's own size"
        )
    return wanted


def qcow2_backing_file(path: Path) -> str | None:
    """The backing file named in a qcow2 header (None for raw files or no backing).

    Read from the header directly: a prune looks at every overlay of the host, and
    a ``qemu-img info`` per overlay would cost a process each.
    """
    try:
        with path.open("rb") as handle:
            header = handle.read(20)
            if len(header) < 20 or header[:4] != _QCOW2_MAGIC:
                return None
            offset, size = struct.unpack(">QI", header[8:20])
            if offset == 0 or size == 0 or size > 4096:
                return None
            handle.seek(offset)
            return handle.read(size).decode("utf-8", "replace")
    except OSError:
        return None


def create_overlay(overlay: Path, base: CachedBase, size: int | None) -> None:
    """A qcow2 file at ``overlay`` backed by ``base`` (format recorded, ``-F``), 0644.

    ``size`` in bytes, None for the base's own size. Refuses to shrink (a guest
    would find its data cut short).
    """
    if size is not None and size < base.virtual_size:
        raise DiskTooSmall(
            f"overlay size {size} bytes is smaller than its base's virtual size "
            f"{base.virtual_size} bytes"
        )
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base.path), "-F", base.format]
    argv += [str(overlay)] + ([str(size)] if size is not None else [])
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        with contextlib.suppress(FileNotFoundError):
            overlay.unlink()
        raise ImageCacheError(f"creating disk {overlay.name!r} failed: {result.stderr.strip()}")
    overlay.chmod(0o644)


class ImageCache:
    """The base files of one host (see the module text for the layout)."""

    def __init__(self, root: Path, *, retries: int = 5, retry_delay_s: float = 0.2) -> None:
        self.root = root
        self.retries = retries
        """How many interruptions one fetch survives (each resumes where it stopped)."""
        self.retry_delay_s = retry_delay_s

    # -- bases ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def image_base(
        self,
        image_id: str,
        source: Path | ImageSource,
        fmt: str,
        expected: ExpectedContent | None = None,
    ) -> Iterator[CachedBase]:
        """The base holding ``source``'s content, copied into the cache on first use.

        With ``expected``, the content must have that sha256 and size: a copy that does
        not is deleted before it could be used and :class:`ContentMismatch` names both
        digests. A source that is not on this host (:class:`ImageSource` over HTTP)
        needs ``expected``. The base cannot be pruned while the block runs: create its
        overlay in it.
        """
        _check_image_id(image_id)
        if fmt not in BASE_FORMATS:
            raise ImageCacheError(
                f"disk format {fmt!r} of image {image_id} is not accepted; accepted: "
                f"{', '.join(BASE_FORMATS)}"
            )
        src = LocalFileSource(source) if isinstance(source, Path) else source
        with self.locked(image_id):
            yield self._cached_locked(image_id, image_id, "disk", src, fmt, expected)

    def boot_file(
        self, image_id: str, part: str, source: Path | ImageSource, expected: ExpectedContent | None
    ) -> Path:
        """The image's kernel or initrd (``part``) in the cache, copied and checked as
        :meth:`image_base` does (direct kernel boot reads them from the host's disk).

        Kept as ``<image id>+<part>-<sha256 prefix>``, 0444; never pruned (a few MiB
        each, and a running guest may be rebooted from them at any time).
        """
        _check_image_id(image_id)
        if part not in BOOT_PARTS:
            raise ImageCacheError(
                f"boot file part {part!r} is not accepted; accepted: {', '.join(BOOT_PARTS)}"
            )
        src = LocalFileSource(source) if isinstance(source, Path) else source
        key = f"{image_id}+{part}"
        with self.locked(key):
            return self._cached_locked(key, image_id, part, src, None, expected).path

    def _cached_locked(
        self,
        key: str,
        image_id: str,
        part: str,
        source: ImageSource,
        fmt: str | None,
        expected: ExpectedContent | None,
    ) -> CachedBase:
        """The cached copy of ``source`` under ``key`` (the caller holds its lock)."""
        identity = source.identity()
        if identity is None:
            if expected is None:
                raise ImageCacheError(
                    f"the {part} of image {image_id} from {source.describe()} has no recorded "
                    "sha256 to check it against; it is not fetched (record the image's "
                    "digests on the controller first)"
                )
            identity = ["sha256", expected.sha256, expected.size]
        elif expected is not None:
            identity = [*identity, expected.sha256]
        index_path = self.root / f"{key}.source.json"
        known = self._read_index(index_path)
        if known is not None and known.get("source") == identity:
            cached = self.root / str(known["base"])
            with contextlib.suppress(OSError):
                if cached.stat().st_size == known["size"] and known["format"] == fmt:
                    os.utime(cached)  # last use: what a prune goes by
                    return CachedBase(cached, fmt or "raw", int(known["virtual_size"]))
            log.warning("cached %s %s of image %s is missing or damaged; fetching again",
                        part, cached.name, image_id)  # fmt: skip
        part_path = self._part_path(key)
        try:
            digest, size = self._fill(part_path, image_id, part, source, expected)
            if fmt is not None:
                virtual_size = image_virtual_size(part_path, fmt)
                cached = self.root / f"{key}-{digest[:16]}.{fmt}"
            else:
                virtual_size = size
                cached = self.root / f"{key}-{digest[:16]}"
            os.replace(part_path, cached)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                part_path.unlink()
            raise
        _fsync_dir(self.root)
        self._write_index(
            index_path,
            {"source": identity, "base": cached.name, "format": fmt, "size": size,
             "virtual_size": virtual_size, "sha256": digest},
        )  # fmt: skip
        return CachedBase(cached, fmt or "raw", virtual_size)

    def _fill(
        self,
        part_path: Path,
        image_id: str,
        part: str,
        source: ImageSource,
        expected: ExpectedContent | None,
    ) -> tuple[str, int]:
        """Copy ``source`` into the new file ``part_path``; returns (sha256, size).

        An interrupted read (:class:`SourceInterrupted`) resumes at the byte it
        stopped at, up to :attr:`retries` times; the hash runs over every byte as
        written, so the result is checked whole before anyone may use it.
        """
        digest = hashlib.sha256()
        position = 0
        failures = 0
        with _exclusive_file(part_path) as dst:
            while True:
                try:
                    for chunk in source.read_from(position):
                        if expected is not None and position + len(chunk) > expected.size:
                            raise ContentMismatch(
                                f"the {part} of image {image_id} from {source.describe()} "
                                f"is longer than its recorded {expected.size} bytes; it is "
                                f"not used (recorded sha256 {expected.sha256})"
                            )
                        digest.update(chunk)
                        if chunk == _ZEROS[: len(chunk)]:
                            dst.seek(len(chunk), os.SEEK_CUR)  # keep holes: raw is sparse
                        else:
                            dst.write(chunk)
                        position += len(chunk)
                    if expected is not None and position < expected.size:
                        raise SourceInterrupted(
                            f"{source.describe()} ended at byte {position} of {expected.size}"
                        )
                    break
                except SourceInterrupted as exc:
                    failures += 1
                    if failures > self.retries:
                        raise ImageCacheError(
                            f"fetching the {part} of image {image_id} from "
                            f"{source.describe()} gave up: interrupted {failures}x, resumed "
                            f"at most {self.retries}x; last: {exc}"
                        ) from exc
                    log.warning("fetching the %s of image %s was interrupted at byte %d "
                                "(%s); resuming", part, image_id, position, exc)  # fmt: skip
                    time.sleep(min(self.retry_delay_s * failures, 5.0))
            dst.truncate()
        got = digest.hexdigest()
        if expected is not None and (got != expected.sha256 or position != expected.size):
            raise ContentMismatch(
                f"the {part} of image {image_id} from {source.describe()} does not match its "
                f"recorded content: got sha256 {got} ({position} bytes), expected sha256 "
                f"{expected.sha256} ({expected.size} bytes); the copy was deleted, not used"
            )
        return got, position

    @contextlib.contextmanager
    def blank_base(self, kind: str, size_bytes: int) -> Iterator[CachedBase]:
        """A formatted blank raw disk: ``ephemeral`` (ext4, label ``ephemeral0``) or ``swap``.

        Formatting costs a journal's worth of writes; done once per size per host,
        every ephemeral or swap disk of that size is an overlay on it. Like
        :meth:`image_base`, the base stays while the block runs.
        """
        if kind == "ephemeral":
            name = f"ephemeral-{_size_tag(size_bytes)}-ext4.raw"
        elif kind == "swap":
            name = f"swap-{_size_tag(size_bytes)}.raw"
        else:
            raise ImageCacheError(f"blank disk kind {kind!r} is not accepted; use ephemeral, swap")
        base = self.root / name
        with self.locked(name):
            if base.is_file() and base.stat().st_size == size_bytes:
                os.utime(base)  # last use: what a prune goes by
            else:
                self._make_blank(base, kind, size_bytes)
            yield CachedBase(base, "raw", size_bytes)

    def _make_blank(self, base: Path, kind: str, size_bytes: int) -> None:
        part = self._part_path(base.name)
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.truncate(size_bytes)
            _format_blank(part, kind)
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            part.chmod(0o444)
            os.replace(part, base)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise
        _fsync_dir(self.root)

    # -- cleanup -------------------------------------------------------------------------

    def bases(self) -> list[Path]:
        """Every base file in the cache (not the index, lock or unfinished files)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix in (".raw", ".qcow2")
        )  # fmt: skip

    def prune(
        self, overlays: Callable[[], Iterable[Path]], min_age_s: float = 24 * 3600
    ) -> list[Path]:
        """Remove the bases no overlay is backed by and no spawn used for ``min_age_s``.

        A spawn touches the base it uses, so the age is the time since its last use
        (Nova's image cache keeps unused bases a day too). ``overlays`` lists every
        overlay of the host; it is called under each candidate's lock, the lock a
        spawn holds from finding a base to creating its overlay, so an overlay made
        meanwhile is seen and a base is never removed while used. Returns the
        removed paths.
        """
        removed = []
        now = time.time()
        for base in self.bases():
            if now - base.stat().st_mtime < min_age_s:
                continue
            with self.locked(_key_of(base)):
                if not base.exists() or now - base.stat().st_mtime < min_age_s:
                    continue
                if str(base) in {qcow2_backing_file(p) for p in overlays()}:
                    continue
                base.unlink()
                removed.append(base)
                log.info("removed the unused base image %s", base.name)
        return removed

    # -- locking -------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the cache's lock of ``key`` (an image id or a blank disk's name).

        ``flock`` on a file opened per call: it excludes other threads of this
        process as well as other processes, and the kernel drops it when a holder dies.
        """
        self._ensure_root()
        lock_path = self.root / f".{key}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._remove_leftovers(key)
            yield
        finally:
            os.close(fd)

    def _remove_leftovers(self, key: str) -> None:
        """Unfinished copies of ``key`` (a crash mid-copy); only the lock holder writes them."""
        for part in self.root.glob(f".{key}.*.part"):
            log.warning("removing the unfinished base %s", part.name)
            with contextlib.suppress(FileNotFoundError):
                part.unlink()

    def _part_path(self, key: str) -> Path:
        return self.root / f".{key}.{secrets.token_hex(6)}.part"

    def _ensure_root(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
        if self.root.stat().st_mode & 0o777 != 0o755:
            self.root.chmod(0o755)

    @staticmethod
    def _read_index(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _write_index(path: Path, data: dict[str, object]) -> None:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


@contextlib.contextmanager
def _exclusive_file(path: Path) -> Iterator[BinaryIO]:
    """A new file opened for writing, synced and made 0444 (a base is never written again)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        os.fchmod(handle.fileno(), 0o444)


def _check_image_id(image_id: str) -> None:
    if not _IMAGE_ID.fullmatch(image_id):
        raise ImageCacheError(
            f"image id {image_id[:80]!r} is not accepted; use 1-64 of A-Z a-z 0-9 _ -"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - some file systems refuse it
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _format_blank(path: Path, kind: str) -> None:
    if kind == "ephemeral":
        argv = ["mkfs.ext4", "-F", "-q", "-L", "ephemeral0", str(path)]
    else:
        argv = ["mkswap", "-L", "swap", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageCacheError(f"formatting the {kind} disk failed: {result.stderr.strip()}")


def _size_tag(size_bytes: int) -> str:
    return f"{size_bytes // GIB}G" if size_bytes % GIB == 0 else f"{size_bytes // MIB}M"


def _key_of(base: Path) -> str:
    """The lock key of a base: its image id, or the blank disk's own name."""
    if base.name.startswith(("ephemeral-", "swap-")):
        return base.name
    return base.name.rsplit("-", 1)[0]
