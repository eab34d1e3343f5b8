"""The files of an image on the controller: their recorded digests, checked before serving.

An image's disk, kernel and initrd are files on the controller's disk; hosts fetch
them (``GET /v1/images/{id}/file?part=``) and cache them. The catalog records each
file's sha256 and size when the image is registered, so

- a host checks what it downloaded against the digest the controller gave before it
  uses a byte of it (a corrupt download is deleted, never used), and
- the controller refuses to serve a file whose content no longer matches what was
  registered (someone replaced or edited it in place): serving it would hand every
  host a different image under the same id.

Hashing a large image costs seconds, so the controller remembers, per file, the
identity (device, inode, size, mtime) it last verified: a file unchanged since then
is served without hashing again; a changed identity means a full re-hash, then a
refusal (:class:`ImageFileChanged`) if the digest differs. The bytes streamed are
hashed as they go too, and a stream whose digest turns out wrong is cut short (the
host sees a short, unverifiable download), so a file edited while it is being served
is not delivered as if it were the registered one either.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wattvisor.compute.errors import Conflict, InvalidRequest, NotFound

ImagePart = Literal["disk", "kernel", "initrd"]
IMAGE_PARTS: tuple[ImagePart, ...] = ("disk", "kernel", "initrd")
HASH_CHUNK = 1024 * 1024
"""Bytes read per step when hashing or serving: memory stays bounded whatever the size."""


class ImageFileChanged(Conflict):
    """The file's content is not what the image was registered with: it is not served."""

    code = "image_file_changed"
    host_detail = True

    @property
    def public_message(self) -> str:
        """The digests without the controller's path: a host checks them, a member may read them."""
        d = self.details
        return (
            f"the {d.get('part', '?')} file of image {d.get('image', '?')!r} changed after it "
            f"was registered: now sha256 {d.get('actual_sha256', '?')}, registered sha256 "
            f"{d.get('registered_sha256', '?')}; it is not served (ask an admin)"
        )


class ImageFileUnavailable(Conflict):
    """The image's file cannot be read on the controller (moved, deleted, unreadable)."""

    code = "image_file_unavailable"
    host_detail = True

    @property
    def public_message(self) -> str:
        image = self.details.get("image", "?")
        return f"a file of image {image!r} cannot be read on the controller; ask an admin"


@dataclass(frozen=True, slots=True)
class FileDigest:
    """A file's content as the catalog records it: its sha256 (hex) and size in bytes."""

    sha256: str
    size: int


def check_part(part: str) -> ImagePart:
    """``part`` as an image part, or :class:`InvalidRequest` naming it and the accepted ones."""
    if part not in IMAGE_PARTS:
        raise InvalidRequest(
            f"image file part {part[:40]!r} is not accepted; accepted: {', '.join(IMAGE_PARTS)}",
            part=part[:40],
        )
    return part


def fd_digest(fd: int) -> FileDigest:
    """The sha256 and size of the whole file open at ``fd``, read in bounded chunks
    (``pread``: the descriptor's offset is left alone for whoever reads it next)."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, HASH_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return FileDigest(digest.hexdigest(), offset)


def file_digest(path: Path) -> FileDigest:
    """The sha256 and size of the file at ``path`` (see :func:`fd_digest`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return fd_digest(fd)
    finally:
        os.close(fd)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class OpenImageFile:
    """An image file open for serving, its content checked against the recorded digest.

    Served from the descriptor opened before the check, so a file renamed over the
    path afterwards does not change what this answer sends.
    """

    def __init__(self, image_id: str, part: ImagePart, fd: int, digest: FileDigest) -> None:
        self.image_id = image_id
        self.part = part
        self.digest = digest
        self._fd = fd
        self._lock = threading.Lock()

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError(f"the {self.part} file of image {self.image_id} is closed")
        return self._fd

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) in bounded chunks, then the descriptor is
        closed. A whole-file stream whose bytes do not hash to the recorded digest stops
        with :class:`ImageFileChanged` before its last chunk (the file changed meanwhile)."""
        whole = start == 0 and end == self.digest.size
        digest = hashlib.sha256() if whole else None
        offset = start
        try:
            while offset < end:
                chunk = os.pread(self.fd, min(HASH_CHUNK, end - offset), offset)
                if not chunk:
                    raise ImageFileChanged(
                        f"the {self.part} file of image {self.image_id} is shorter than its "
                        f"registered {self.digest.size} bytes (it ended at byte {offset})",
                        image=self.image_id, part=self.part,
                        registered_sha256=self.digest.sha256,
                    )  # fmt: skip
                offset += len(chunk)
                if digest is not None:
                    digest.update(chunk)
                    if offset >= end and digest.hexdigest() != self.digest.sha256:
                        raise ImageFileChanged(
                            f"the {self.part} file of image {self.image_id} changed while it "
                            f"was served: sha256 {digest.hexdigest()}, registered "
                            f"{self.digest.sha256}",
                            image=self.image_id, part=self.part,
                            registered_sha256=self.digest.sha256,
                            actual_sha256=digest.hexdigest(),
                        )  # fmt: skip
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        """Close the descriptor once (a second close could hit a reused number)."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class VerifiedFiles:
    """Which file identities have been hashed and found to match their recorded digest.

    Per process: another controller keeps its own, and hashes a file once itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[tuple[int, int, int, int], FileDigest]] = {}

    def open(
        self, image_id: str, part: ImagePart, path: str, recorded: FileDigest
    ) -> OpenImageFile:
        """The file at ``path`` open for reading, checked against ``recorded``.

        Raises :class:`ImageFileUnavailable` when it cannot be read and
        :class:`ImageFileChanged` (naming both digests) when its content differs.
        """
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise ImageFileUnavailable(
                f"the {part} file {path} of image {image_id} cannot be read: {exc.strerror}",
                image=image_id, part=part,
            ) from exc  # fmt: skip
        try:
            identity = _identity(os.fstat(fd))
            with self._lock:
                known = self._known.get(path)
            if known is None or known != (identity, recorded):
                actual = fd_digest(fd)
                if actual != recorded:
                    raise ImageFileChanged(
                        f"the {part} file {path} of image {image_id} changed after it was "
                        f"registered: now sha256 {actual.sha256} and {actual.size} bytes, "
                        f"registered sha256 {recorded.sha256} and {recorded.size} bytes; it is not "
                        "served (register the image again to use the new content)",
                        image=image_id, part=part, registered_sha256=recorded.sha256,
                        actual_sha256=actual.sha256,
                    )  # fmt: skip
                with self._lock:
                    self._known[path] = (identity, recorded)
        except BaseException:
            os.close(fd)
            raise
        return OpenImageFile(image_id, part, fd, recorded)


def image_part_path(image_id: str, part: ImagePart, paths: dict[ImagePart, str | None]) -> str:
    """The controller path of ``part``, or :class:`NotFound` saying which parts it has."""
    path = paths.get(part)
    if not path:
        has = ", ".join(p for p in IMAGE_PARTS if paths.get(p)) or "(none)"
        raise NotFound(
            f"image {image_id} has no {part} file; it has: {has}", image=image_id, part=part
        )
    return path
