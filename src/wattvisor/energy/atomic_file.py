"""Replace a small file's contents atomically, without forcing a disk flush per write.

Readers must see the old or the new value, never a torn one: write a temporary
file, then rename it over the target. On ext4 a plain rename *over an existing
file* makes the kernel allocate and write the new file's blocks at once
(``auto_da_alloc``), which cost about 100 µs of CPU and 1.5 ms of wall time per
counter here; exchanging the two names with ``renameat2(RENAME_EXCHANGE)`` and
unlinking the old file is just as atomic for readers and skips that flush.
Where the call or the flag is unavailable, a plain rename is used. On tmpfs there
is no such flush, and the exchange only adds an unlink and a foreign call per
write, so callers writing many files ask :func:`exchange_pays_off` once per
directory and pass the answer.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _load_renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[..., int] = libc.renameat2
    except (OSError, AttributeError):
        return None
    return function


_renameat2 = _load_renameat2()
_exchange_works = _renameat2 is not None

# statfs(2) f_type of filesystems that keep files in memory only: no delayed block
# allocation, so nothing for RENAME_EXCHANGE to avoid.
_MEMORY_FILESYSTEMS = frozenset({0x01021994, 0x858458F6})  # TMPFS_MAGIC, RAMFS_MAGIC


def _load_statfs() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[..., int] = libc.statfs
    except (OSError, AttributeError):
        return None
    return function


_statfs = _load_statfs()


def exchange_pays_off(directory: str | bytes) -> bool:
    """Whether files in ``directory`` are cheaper to replace by exchange than by rename.

    True unless the directory is known to be on tmpfs or ramfs (and when unsure).
    """
    if _statfs is None:
        return True
    buffer = ctypes.create_string_buffer(512)  # struct statfs is 120 bytes on 64-bit Linux
    if _statfs(os.fsencode(directory), buffer) != 0:
        return True
    f_type = ctypes.c_long.from_buffer(buffer).value
    return f_type not in _MEMORY_FILESYSTEMS


def _exchange(tmp: str | bytes, path: str | bytes, dir_fd: int = _AT_FDCWD) -> bool:
    """Swap ``tmp`` and ``path``; False when the kernel or filesystem cannot."""
    global _exchange_works
    if not _exchange_works or _renameat2 is None:
        return False
    result = _renameat2(dir_fd, os.fsencode(tmp), dir_fd, os.fsencode(path), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        _exchange_works = False
        return False
    if code == errno.ENOENT:
        return False
    raise OSError(code, os.strerror(code), os.fsdecode(path))


def replace_contents(
    path: str | bytes,
    tmp: str | bytes,
    data: bytes,
    mode: int = 0o644,
    exchange: bool = True,
    dir_fd: int | None = None,
) -> None:
    """Make ``path`` hold ``data``; ``tmp`` is a scratch name in the same directory.

    ``exchange=False`` always renames (see :func:`exchange_pays_off`). With
    ``dir_fd``, both names are relative to that open directory, which spares the
    kernel walking the whole path for each of the calls.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    except FileExistsError:
        os.unlink(tmp, dir_fd=dir_fd)  # left by an interrupted earlier write
        fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        if exchange and _exchange(tmp, path, _AT_FDCWD if dir_fd is None else dir_fd):
            os.unlink(tmp, dir_fd=dir_fd)
        else:
            os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("removing the unfinished %s failed: %s", os.fsdecode(tmp), exc)
        raise
