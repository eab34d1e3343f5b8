"""Read-only virtiofs shares for guests that asked for power metrics.

Each configured share directory (``host.share_local_fs``: host dir -> mount
tag) gets one sub-directory per domain, ``<dir>/<domain name>``, where the
energy layer writes that domain's counters. The guest must be able to read it
and must never be able to write to it.

libvirt only accepts ``<readonly/>`` on a virtiofs filesystem from 11.0 on
(9.0 says "virtiofs does not yet support read-only mode"), and without it a
guest can create files in the host directory. So on older libvirt the share
source is not the data directory itself but a read-only bind mount of it at
``<data_dir>/shares/<mount tag>/<domain name>``: outside every share directory,
so no guest ever sees it, and read-only for virtiofsd (which runs as root, so
file permissions would not stop it). A host that can do neither must not offer
``COMPUTE_SHARE_LOCAL_FS``; :meth:`ShareManager.readonly_mode` tells which case
applies.

:meth:`ShareManager.release` removes the bind mount but keeps the data
directory: the energy layer may still finalise the counters of a stopped
domain, and removes the directory itself when the domain is deleted
(:meth:`ShareManager.discard_data`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

ReadonlyMode = Literal["flag", "bind"]
LIBVIRT_READONLY_VIRTIOFS = 11_000_000  # libvirt.getVersion() of 11.0.0

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MNT_DETACH = 2


class ShareError(ValueError):
    """A share cannot be prepared as asked; the message names the value and what is accepted."""


@dataclass(frozen=True)
class PreparedShare:
    """One virtiofs filesystem to put into a domain's XML.

    ``source_dir`` goes into ``<source dir=.../>``, ``mount_tag`` into
    ``<target dir=.../>``, and ``readonly_flag`` says whether to add ``<readonly/>``.
    ``data_dir`` is where the energy layer writes the files the guest reads.
    """

    mount_tag: str
    share_dir: Path
    data_dir: Path
    source_dir: Path
    readonly_flag: bool


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo, the fields we need."""

    mount_point: Path
    root: str
    options: frozenset[str]
    fs_type: str
    source: str

    @property
    def readonly(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_table(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[MountEntry]:
    """This process's mounts, in mount order (a later entry hides an earlier one)."""
    entries = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split(" ")
        sep = fields.index("-")
        entries.append(
            MountEntry(
                mount_point=Path(_unescape(fields[4])),
                root=_unescape(fields[3]),
                options=frozenset(fields[5].split(",")),
                fs_type=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
            )
        )
    return entries


def top_mount(path: Path) -> MountEntry | None:
    """The mount whose mount point is exactly ``path`` (the topmost if stacked), or None."""
    target = Path(os.path.realpath(path))
    found = None
    for entry in mount_table():
        if entry.mount_point == target:
            found = entry
    return found


def is_readonly_mounted(path: Path) -> bool:
    """True when ``path`` is itself a mount point and that mount is read-only."""
    entry = top_mount(path)
    return entry is not None and entry.readonly


def _same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _mount(
    source: Path | str | None,
    target: Path,
    flags: int,
    fs_type: str | None = None,
    options: str | None = None,
) -> None:
    src = os.fsencode(source) if source is not None else None
    kind = fs_type.encode() if fs_type is not None else None
    data = ctypes.c_char_p(options.encode()) if options is not None else None
    if _libc.mount(src, os.fsencode(target), kind, flags, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount({source}, {target}, flags={flags:#x}): {os.strerror(err)}")


def mount_tmpfs(target: Path, size_kib: int) -> None:
    """A small private tmpfs on ``target`` (nosuid, nodev, noexec), mode 0755."""
    _mount(
        "wattvisor-share",
        target,
        _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
        "tmpfs",
        f"size={size_kib}k,mode=0755",
    )


def bind_mount_readonly(source: Path, target: Path) -> None:
    """Bind ``source`` on ``target`` and make that mount read-only (nosuid, nodev, noexec).

    A bind mount takes the flags of its source; making it read-only needs a
    second, remounting call. If that fails the writable bind is removed again,
    so a failure never leaves a writable view behind.
    """
    _mount(source, target, _MS_BIND)
    try:
        remount_readonly(target)
    except OSError:
        _umount(target, lazy=True)
        raise


def remount_readonly(target: Path) -> None:
    _mount(None, target, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)


def _umount(target: Path, lazy: bool = False) -> None:
    if _libc.umount2(os.fsencode(target), _MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount({target}): {os.strerror(err)}")


def unmount_all(target: Path) -> int:
    """Unmount every mount stacked on ``target``; lazily when still busy. Returns how many."""
    count = 0
    while top_mount(target) is not None:
        try:
            _umount(target)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            _umount(target, lazy=True)
        count += 1
    return count


def check_domain_name(name: str) -> str:
    """``name`` if it can name a directory of its own under a share directory, else ShareError."""
    if not name or name in {".", ".."} or "/" in name or "\0" in name or len(name.encode()) > 255:
        raise ShareError(
            f"domain name {name!r} cannot name a share directory; accepted: 1-255 bytes, "
            "no '/' or NUL, and not '.' or '..'"
        )
    return name


class ShareManager:
    """Prepare, re-establish and release the read-only shares of domains on this host."""

    def __init__(
        self,
        share_local_fs: Mapping[str, str],
        data_dir: Path,
        libvirt_version: int | tuple[int, int, int],
        mount_root: Path | None = None,
        tmpfs_size_kib: int = 0,
    ) -> None:
        """``libvirt_version`` is ``getLibVersion()`` (9000000) or a (major, minor, micro) tuple."""
        self.shares: dict[Path, str] = {}
        for directory, tag in share_local_fs.items():
            if tag in {".", ".."}:
                raise ShareError(
                    f"share_local_fs mount tag {tag!r} for {directory!r} is not accepted; "
                    "use a name such as 'scaphandre' (not '.' or '..')"
                )
            self.shares[Path(os.path.normpath(directory))] = tag
        for outer in self.shares:
            for inner in self.shares:
                if inner != outer and inner.is_relative_to(outer):
                    raise ShareError(
                        f"share_local_fs directory {str(inner)!r} lies inside {str(outer)!r}: "
                        f"a domain named {inner.relative_to(outer).parts[0]!r} would see every "
                        "domain's files of the inner share; use directories side by side"
                    )
        if isinstance(libvirt_version, tuple):
            major, minor, micro = libvirt_version
            libvirt_version = major * 1_000_000 + minor * 1000 + micro
        self.libvirt_version = libvirt_version
        self.mount_root = Path(os.path.normpath(mount_root or Path(data_dir) / "shares"))
        for share_dir in self.shares:
            if self.mount_root == share_dir or self.mount_root.is_relative_to(share_dir):
                raise ShareError(
                    f"read-only mount root {str(self.mount_root)!r} lies inside share directory "
                    f"{str(share_dir)!r}, where a guest could see it; choose a data_dir outside "
                    "every share_local_fs directory"
                )
        # Counters are rewritten every sample: a per-domain tmpfs keeps that off the disk
        # (no journal flush per rename) and caps what one domain's directory can hold.
        self.tmpfs_size_kib = tmpfs_size_kib
        self._mode: ReadonlyMode | None = None
        self._probed = False
        self.unavailable_reason: str | None = None

    # -- capability -------------------------------------------------------------------

    def readonly_mode(self) -> ReadonlyMode | None:
        """How this host keeps shares read-only: libvirt's flag, a bind mount, or not at all.

        ``None`` means the host must not report ``COMPUTE_SHARE_LOCAL_FS``;
        :attr:`unavailable_reason` then says why. The bind-mount probe runs once.
        """
        if self.libvirt_version >= LIBVIRT_READONLY_VIRTIOFS:
            return "flag"
        if not self._probed:
            self._mode = "bind" if self._probe_bind_mount() else None
            self._probed = True
        return self._mode

    def _probe_bind_mount(self) -> bool:
        try:
            self.mount_root.mkdir(mode=0o755, parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".probe-", dir=self.mount_root) as tmp:
                source, target = Path(tmp, "source"), Path(tmp, "target")
                source.mkdir()
                target.mkdir()
                bind_mount_readonly(source, target)
                try:
                    try:
                        (target / "probe").touch()
                    except OSError as exc:
                        if exc.errno == errno.EROFS:
                            return True
                        raise
                    self.unavailable_reason = f"a read-only bind mount in {tmp} stayed writable"
                    return False
                finally:
                    unmount_all(target)
        except OSError as exc:
            self.unavailable_reason = (
                f"libvirt {_version_text(self.libvirt_version)} lacks <readonly/> for virtiofs "
                f"(needs 11.0) and a read-only bind mount under {self.mount_root} failed: {exc}"
            )
            return False

    # -- per domain ---------------------------------------------------------------------

    def mount_point(self, domain_name: str, mount_tag: str) -> Path:
        """Where the read-only view of a domain's data directory is mounted (bind mode)."""
        return self.mount_root / mount_tag / check_domain_name(domain_name)

    def _check_share_dir(self, share_dir: Path) -> str:
        tag = self.shares.get(Path(os.path.normpath(share_dir)))
        if tag is None:
            accepted = ", ".join(repr(str(d)) for d in self.shares) or "(none configured)"
            raise ShareError(
                f"share directory {str(share_dir)!r} is not configured in share_local_fs; "
                f"accepted: {accepted}"
            )
        return tag

    def prepare(
        self, domain_name: str, share_dirs: Iterable[Path] | None = None
    ) -> list[PreparedShare]:
        """Create the domain's data directories and their read-only sources; idempotent.

        ``share_dirs`` limits the work to some configured directories (default:
        all). Everything is validated before anything is created; when a mount
        fails, the mounts made by this call are undone.
        """
        check_domain_name(domain_name)
        chosen = list(self.shares) if share_dirs is None else [Path(d) for d in share_dirs]
        tags = [self._check_share_dir(d) for d in chosen]
        mode = self.readonly_mode()
        if mode is None:
            raise ShareError(
                f"cannot share read-only on this host, so no share for {domain_name!r}: "
                f"{self.unavailable_reason}"
            )
        prepared: list[PreparedShare] = []
        mounted_here: list[Path] = []
        try:
            for share_dir, tag in zip(chosen, tags, strict=True):
                data = share_dir / domain_name
                _make_dir(data)
                if self.tmpfs_size_kib and top_mount(data) is None:
                    mount_tmpfs(data, self.tmpfs_size_kib)
                    mounted_here.append(data)
                if mode == "flag":
                    prepared.append(PreparedShare(tag, share_dir, data, data, True))
                    continue
                target = self.mount_point(domain_name, tag)
                if self._ensure_readonly_view(data, target):
                    mounted_here.append(target)
                prepared.append(PreparedShare(tag, share_dir, data, target, False))
        except BaseException:
            for target in reversed(mounted_here):
                try:
                    unmount_all(target)
                except OSError as exc:
                    log.error("undoing the share mount %s of %s failed: %s",
                              target, domain_name, exc)  # fmt: skip
            raise
        return prepared

    def _ensure_readonly_view(self, data: Path, target: Path) -> bool:
        """Make ``target`` a read-only bind of ``data``; True when this call mounted it."""
        _make_dir(target)
        entry = top_mount(target)
        if entry is not None:
            if not _same_inode(target, data):
                raise ShareError(
                    f"{target} is already a mount point of something other than {data} "
                    f"({entry.fs_type} from {entry.source}); unmount it first"
                )
            if not entry.readonly:
                remount_readonly(target)
            return False
        bind_mount_readonly(data, target)
        if not is_readonly_mounted(target):
            unmount_all(target)
            raise ShareError(f"bind mount of {data} on {target} did not become read-only")
        return True

    def release(self, domain_name: str) -> None:
        """Remove the domain's read-only views (bind mode); keep its data directories."""
        check_domain_name(domain_name)
        for tag in self.shares.values():
            target = self.mount_point(domain_name, tag)
            unmount_all(target)
            with contextlib.suppress(FileNotFoundError):
                target.rmdir()

    def discard_data(self, domain_name: str) -> None:
        """Delete the domain's data directories, after :meth:`release` (the domain is gone)."""
        check_domain_name(domain_name)
        for share_dir, tag in self.shares.items():
            if top_mount(self.mount_point(domain_name, tag)) is not None:
                raise ShareError(
                    f"share {tag!r} of domain {domain_name!r} is still mounted; release it first"
                )
            data = share_dir / domain_name
            if data.is_dir():
                unmount_all(data)
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(data)

    def reestablish(
        self, domain_names: Iterable[str], keep: Iterable[str] = ()
    ) -> ShareRestoration:
        """Recreate the shares of ``domain_names`` after a restart or reboot, and remove
        every view, mount and data directory that no domain owns any more.

        Idempotent: a view already mounted read-only is left alone. A domain whose
        shares cannot be made is reported in ``problems`` and the others go on.
        Names in ``keep`` (other domains on the host) are left as they are; every
        other entry under the share directories and the mount root is left over from
        a crash (e.g. a build killed between preparing its share and defining its
        domain) and is unmounted and removed.
        """
        result = ShareRestoration()
        names = list(domain_names)
        for name in names:
            try:
                self.prepare(name)
            except (ShareError, OSError) as exc:
                result.problems.append(f"shares of domain {name!r} not re-established: {exc}")
                continue
            result.established.append(name)
        owned = set(names) | set(keep)
        for path, error in self.remove_unowned(owned):
            if error is None:
                result.removed.append(path)
            else:
                result.problems.append(f"left-over share {path} not removed: {error}")
        return result

    def remove_unowned(self, owned: set[str]) -> list[tuple[Path, str | None]]:
        """Unmount and remove what lies under the share directories and the mount root
        for domains not in ``owned``; each path with None or why it could not go."""
        candidates: list[Path] = []
        for share_dir in self.shares:
            if share_dir.is_dir():
                candidates += [e for e in share_dir.iterdir() if e.is_dir() or _is_mount(e)]
        for tag in self.shares.values():
            tag_root = self.mount_root / tag
            if tag_root.is_dir():
                candidates += list(tag_root.iterdir())
        if self.mount_root.is_dir():
            candidates += list(self.mount_root.glob(".probe-*"))  # a probe killed half-way
        outcome: list[tuple[Path, str | None]] = []
        for path in candidates:
            if path.name in owned:
                continue
            try:
                if path.is_symlink():
                    path.unlink()  # never follow it: it may point anywhere
                else:
                    _unmount_under(path)
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
            except OSError as exc:
                outcome.append((path, str(exc)))
                continue
            outcome.append((path, None))
        return outcome

    def mounted_views(self) -> list[Path]:
        """Every read-only view currently mounted under the mount root."""
        root = Path(os.path.realpath(self.mount_root))
        return sorted({e.mount_point for e in mount_table() if e.mount_point.is_relative_to(root)})


@dataclass
class ShareRestoration:
    """What :meth:`ShareManager.reestablish` did: domains whose shares are in place,
    what it removed as left over, and what went wrong (one line each)."""

    established: list[str] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _is_mount(path: Path) -> bool:
    return top_mount(path) is not None


def _unmount_under(path: Path) -> None:
    """Unmount every mount at or below ``path`` (not following ``path`` if it is a
    symbolic link), deepest first."""
    real = Path(os.path.realpath(path.parent)) / path.name
    points = {e.mount_point for e in mount_table() if e.mount_point.is_relative_to(real)}
    for point in sorted(points, key=lambda p: len(p.parts), reverse=True):
        unmount_all(point)


def _make_dir(path: Path) -> None:
    if path.is_symlink():
        # Bind-mounting would follow it and show the guest whatever it points to.
        raise ShareError(f"{path} is a symbolic link; a share directory must be a real directory")
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o7777 != 0o755:
        path.chmod(0o755)


def _version_text(version: int) -> str:
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"
