"""A guest's serial console log on its host: read the tail or what is new, rotate it.

The guest's ``<serial type='file' append='on'>`` makes every boot add to one file,
``console.log``. With QEMU's default ``stdio_handler = "logd"`` libvirt lets
``virtlogd`` write that file, and virtlogd rotates it by itself: when a write
would pass its ``max_size`` (2 MiB by default) the file becomes ``console.log.0``,
older backups move up (``.0`` → ``.1`` ...) and those past ``max_backups`` (3)
are deleted; a rotation can fall in the middle of a line or of a character. So
the log is the chain ``console.log.N`` ... ``console.log.0``, ``console.log``, oldest
first, and is read as one stream.

Where QEMU writes the file itself (``stdio_handler = "file"``) nothing rotates it
while the guest runs; :func:`rotate_console_log`, called before every start, then
keeps each boot's growth within ``max_bytes`` per file and ``backups`` files, in the
same naming, so readers need not know who wrote the log.

A position in the log is a *cursor*: the identity of one file of the chain (a hash
of the server's uuid with the file's device and inode, which a rename by a rotation
keeps) and a byte offset in it. A follower passes the cursor of its last answer and
gets exactly what came after it, even when the log rotated in between; if its file
was rotated away altogether it restarts at the oldest file kept and is told so.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

CONSOLE_LOG_NAME = "console.log"
START_CURSOR = "0" * 16 + ".0"
"""The cursor of an empty log: its first byte, in whichever file holds it later."""
_CURSOR = re.compile(r"^([0-9a-f]{16})\.([0-9]{1,18})$")
_BACKUP = re.compile(r"^" + re.escape(CONSOLE_LOG_NAME) + r"\.([0-9]{1,4})$")
_MAX_FILES = 64
_PREFIX_BYTES = 64
_LISTING_ATTEMPTS = 5


class CursorError(ValueError):
    """A cursor that no answer of this API gave; the message shows it and the accepted shape."""


@dataclass(frozen=True, slots=True)
class ConsoleLog:
    """Part of a console log as text (CRLF as LF, invalid UTF-8 replaced), and where it ends.

    ``truncated``: earlier output exists that is not in ``text`` (``lines`` or the size
    cap left it out). ``more``: later output exists already (a read from a cursor hit
    the size cap); ask again at once with ``next_cursor``. ``reset``: the cursor's
    place was rotated away, so ``text`` starts at the oldest output kept and some
    output in between is lost.
    """

    text: str
    next_cursor: str
    truncated: bool = False
    more: bool = False
    reset: bool = False

    @property
    def line_count(self) -> int:
        if not self.text:
            return 0
        return self.text.count("\n") + (0 if self.text.endswith("\n") else 1)


@dataclass(frozen=True, slots=True)
class Cursor:
    file_id: str
    offset: int

    def __str__(self) -> str:
        return f"{self.file_id}.{self.offset}"


def parse_cursor(text: str) -> Cursor:
    """The cursor in ``text``, or CursorError naming it (cut short) and the accepted shape."""
    found = _CURSOR.match(text) if isinstance(text, str) else None
    if found is None:
        shown = text[:40] + ("..." if len(text) > 40 else "")
        raise CursorError(
            f"cursor {shown!r} is not one this API gives; pass the next_cursor of an earlier "
            "answer (16 hex digits, a dot, a byte offset), or leave it out"
        )
    return Cursor(found.group(1), int(found.group(2)))


@dataclass(frozen=True, slots=True)
class _File:
    inode: tuple[int, int]
    size: int
    fd: int

    def identity(self, server_uuid: str, offset: int) -> str:
        """The file's id as a cursor at ``offset`` names it: its inode, and its first bytes up
        to the offset (at most 64), which never change once written: a new file that
        reuses a deleted one's inode is not mistaken for it."""
        prefix = os.pread(self.fd, min(_PREFIX_BYTES, offset), 0) if offset else b""
        key = f"{server_uuid.lower()}:{self.inode[0]}:{self.inode[1]}:".encode() + prefix
        return hashlib.sha256(key).hexdigest()[:16]


def _names_oldest_first(directory: Path) -> list[str]:
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    backups = sorted(
        ((int(m.group(1)), name) for name in names if (m := _BACKUP.match(name))), reverse=True
    )
    chain = [name for _, name in backups][-(_MAX_FILES - 1) :]
    if CONSOLE_LOG_NAME in names:
        chain.append(CONSOLE_LOG_NAME)
    return chain


def _open_chain(directory: Path, server_uuid: str) -> list[_File]:
    """Every file of the log, oldest first, opened (a rotation after this changes nothing
    read here). A listing that a rotation crossed (one file seen twice) is taken again."""
    for _ in range(_LISTING_ATTEMPTS):
        files: list[_File] = []
        seen: set[tuple[int, int]] = set()
        crossed = False
        for name in _names_oldest_first(directory):
            try:
                fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except (FileNotFoundError, OSError):
                continue  # rotated away meanwhile
            st = os.fstat(fd)
            inode = (st.st_dev, st.st_ino)
            if inode in seen:
                os.close(fd)
                crossed = True
                break
            seen.add(inode)
            files.append(_File(inode, st.st_size, fd))
        if not crossed:
            return files
        _close(files)
    return files  # pragma: no cover - five rotations during one listing


def _close(files: list[_File]) -> None:
    for f in files:
        with contextlib.suppress(OSError):
            os.close(f.fd)


def _read(files: list[_File], start: tuple[int, int], length: int) -> bytes:
    """``length`` bytes of the chain from (file index, offset)."""
    parts = []
    index, offset = start
    while length > 0 and index < len(files):
        f = files[index]
        take = min(length, f.size - offset)
        if take > 0:
            parts.append(os.pread(f.fd, take, offset))
            length -= take
        index, offset = index + 1, 0
    return b"".join(parts)


def _position(files: list[_File], absolute: int) -> tuple[int, int]:
    """(file index, offset) of a byte position in the chain read as one stream."""
    for index, f in enumerate(files):
        if absolute < f.size or index == len(files) - 1:
            return index, min(absolute, f.size)
        absolute -= f.size
    return 0, 0


def _cursor_at(files: list[_File], server_uuid: str, absolute: int) -> str:
    if not files:
        return START_CURSOR
    index, offset = _position(files, absolute)
    return str(Cursor(files[index].identity(server_uuid, offset), offset))


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` to keep for the next read: a lone CR (its LF may
    follow) or the start of a UTF-8 sequence whose remaining bytes were not written yet."""
    keep = 0
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead
        if byte >= 0xC0:
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if needed > back:
                keep = back
        break
    if keep == 0 and data.endswith(b"\r"):
        keep = 1
    return keep


def _text(data: bytes) -> str:
    return data.replace(b"\r\n", b"\n").decode("utf-8", errors="replace")


def _last_lines(data: bytes, lines: int) -> tuple[bytes, bool]:
    """The last ``lines`` lines of ``data`` (a last line without newline counts)."""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    cut = end
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data, False
    return data[cut + 1 :], True


def read_console_log(
    directory: Path,
    server_uuid: str,
    *,
    lines: int | None = None,
    cursor: str | None = None,
    max_bytes: int,
) -> ConsoleLog:
    """The log in ``directory`` (``console.log`` and its rotated backups) of ``server_uuid``.

    Without a cursor: the end of the log, its last ``lines`` lines (all when None),
    at most ``max_bytes`` of it. With a cursor and no ``lines``: what follows the
    cursor, its first ``max_bytes``. With both: the last ``lines`` lines of what
    follows the cursor. A text cut by ``max_bytes`` starts at a line start when it
    holds a newline. Raises CursorError for a cursor no answer gave.
    """
    wanted = parse_cursor(cursor) if cursor is not None else None
    files = _open_chain(directory, server_uuid)
    try:
        total = sum(f.size for f in files)
        start, reset = 0, False
        if wanted is not None:
            start, reset = _cursor_start(files, server_uuid, wanted)
        available = total - start
        if wanted is not None and lines is None:
            data = _read(files, _position(files, start), min(available, max_bytes))
            more = available > max_bytes
            keep = _incomplete_tail(data)
            data = data[: len(data) - keep]
            return ConsoleLog(
                text=_text(data), next_cursor=_cursor_at(files, server_uuid, start + len(data)),
                more=more, reset=reset,
            )  # fmt: skip
        length = min(available, max_bytes)
        begin = total - length
        data = _read(files, _position(files, begin), length)
        keep = _incomplete_tail(data)
        data = data[: len(data) - keep]
        truncated = begin > start
        if truncated:
            newline = data.find(b"\n")
            if 0 <= newline < len(data) - 1:
                data = data[newline + 1 :]  # no partial first line
        if lines is not None:
            data, dropped = _last_lines(data, lines)
            truncated = truncated or dropped
        return ConsoleLog(
            text=_text(data), next_cursor=_cursor_at(files, server_uuid, total - keep),
            truncated=truncated, reset=reset,
        )  # fmt: skip
    finally:
        _close(files)


def _cursor_start(files: list[_File], server_uuid: str, cursor: Cursor) -> tuple[int, bool]:
    """The cursor as a position in the chain, and whether its file was rotated away."""
    before = 0
    for f in files:
        if cursor.offset <= f.size and f.identity(server_uuid, cursor.offset) == cursor.file_id:
            return before + cursor.offset, False
        before += f.size
    if cursor.file_id == START_CURSOR.split(".")[0] and cursor.offset == 0:
        return 0, False
    return 0, True


def rotate_console_log(directory: Path, *, max_bytes: int, backups: int) -> list[str]:
    """Before a start: rotate ``console.log`` if it reached ``max_bytes``, keep ``backups``.

    Uses virtlogd's naming (``console.log.0`` the newest backup), so a log rotated by
    virtlogd and one rotated here read the same. Backups past ``backups`` are removed
    either way. Returns what was done, one line per file, for the log.
    """
    done: list[str] = []
    current = directory / CONSOLE_LOG_NAME
    try:
        size = current.stat().st_size
    except FileNotFoundError:
        size = -1
    numbered = sorted(
        (int(m.group(1)), name)
        for name in (os.listdir(directory) if directory.is_dir() else [])
        if (m := _BACKUP.match(name))
    )
    if size >= max_bytes > 0:
        for number, name in reversed(numbered):
            if number + 1 < backups:
                os.replace(directory / name, directory / f"{CONSOLE_LOG_NAME}.{number + 1}")
        if backups > 0:
            os.replace(current, directory / f"{CONSOLE_LOG_NAME}.0")
            done.append(f"rotated {current.name} ({size} bytes)")
        else:
            current.unlink()
            done.append(f"removed {current.name} ({size} bytes)")
        numbered = sorted(
            (int(m.group(1)), name) for name in os.listdir(directory) if (m := _BACKUP.match(name))
        )
    for number, name in numbered:
        if number >= backups:
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
                done.append(f"removed {name}")
    return done
