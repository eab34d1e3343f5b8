"""A deterministic ``newc`` cpio + gzip writer for initramfs images.

Written in Python rather than piping to ``cpio -o -H newc`` so the archive can
hold a ``/dev/console`` device node without ``mknod`` on the build host, and so
that the same inputs always give the same bytes (zero mtimes, root owner,
sorted entries, fixed inode numbers): a rebuilt image is byte-identical and a
changed one really changed.
"""

from __future__ import annotations

import gzip
import io
import stat
from dataclasses import dataclass

_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    """One archive member; ``path`` is relative (no leading ``/``)."""

    path: str
    mode: int
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0

    @staticmethod
    def directory(path: str, perm: int = 0o755) -> CpioEntry:
        return CpioEntry(path, stat.S_IFDIR | perm)

    @staticmethod
    def file(path: str, data: bytes, perm: int = 0o644) -> CpioEntry:
        return CpioEntry(path, stat.S_IFREG | perm, data)

    @staticmethod
    def symlink(path: str, target: str) -> CpioEntry:
        return CpioEntry(path, stat.S_IFLNK | 0o777, target.encode())

    @staticmethod
    def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> CpioEntry:
        return CpioEntry(path, stat.S_IFCHR | perm, b"", major, minor)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: CpioEntry, name: bytes) -> bytes:
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino,
        entry.mode,
        0,
        0,
        nlink,
        0,
        len(entry.data),
        0,
        0,
        entry.rdev_major,
        entry.rdev_minor,
        len(name) + 1,
        0,
    )
    return b"070701" + b"".join(f"{value:08x}".encode() for value in fields)


def newc_archive(entries: list[CpioEntry]) -> bytes:
    """The uncompressed archive; parents are listed before children whatever the input order."""
    seen: set[str] = set()
    for entry in entries:
        if entry.path.startswith("/") or entry.path in seen or ".." in entry.path.split("/"):
            raise ValueError(f"cpio entry path {entry.path!r} must be relative, unique, no '..'")
        seen.add(entry.path)
    out = io.BytesIO()
    ordered = sorted(entries, key=lambda e: e.path.split("/"))
    for ino, entry in enumerate([*ordered, CpioEntry(_TRAILER, 0)], start=1):
        name = entry.path.encode()
        header = _header(0 if entry.path == _TRAILER else ino, entry, name)
        out.write(header + name + b"\0")
        out.write(_pad(len(header) + len(name) + 1))
        out.write(entry.data + _pad(len(entry.data)))
    return out.getvalue()


def gzip_deterministic(data: bytes, level: int = 6) -> bytes:
    """gzip without a timestamp or file name, so equal input gives equal output."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=level) as gz:
        gz.write(data)
    return out.getvalue()
