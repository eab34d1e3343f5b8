"""The controller's side of image files: digests in bounded memory, a verified file
served from its descriptor, and content that changes under it never passed off as
the registered one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from wattvisor.compute.errors import InvalidRequest
from wattvisor.compute.image_files import (
    HASH_CHUNK,
    FileDigest,
    ImageFileChanged,
    ImageFileUnavailable,
    VerifiedFiles,
    check_part,
    file_digest,
)


def _file(tmp_path: Path, size: int = 3 * HASH_CHUNK + 5) -> tuple[Path, bytes]:
    path = tmp_path / "disk.raw"
    content = os.urandom(size)
    path.write_bytes(content)
    return path, content


def test_a_files_digest_is_its_sha256_and_size(tmp_path: Path) -> None:
    path, content = _file(tmp_path)
    assert file_digest(path) == FileDigest(hashlib.sha256(content).hexdigest(), len(content))


def test_a_verified_file_streams_whole_or_in_part(tmp_path: Path) -> None:
    path, content = _file(tmp_path)
    files = VerifiedFiles()
    opened = files.open("img", "disk", str(path), file_digest(path))
    assert b"".join(opened.chunks(0, len(content))) == content
    part = files.open("img", "disk", str(path), file_digest(path))
    assert b"".join(part.chunks(HASH_CHUNK - 1, HASH_CHUNK + 9)) == content[HASH_CHUNK - 1 :][:10]


def test_content_changed_while_streaming_stops_the_stream_before_its_end(tmp_path: Path) -> None:
    path, content = _file(tmp_path)
    opened = VerifiedFiles().open("img", "disk", str(path), file_digest(path))
    stream = opened.chunks(0, len(content))
    first = next(stream)
    with path.open("r+b") as handle:  # edited in place, same inode, after the check
        handle.seek(2 * HASH_CHUNK)
        handle.write(b"\xff" * 16)
    received = [first]
    with pytest.raises(ImageFileChanged, match="changed while it was served"):
        received.extend(stream)
    assert sum(len(c) for c in received) < len(content)


def test_a_missing_file_and_an_unknown_part_are_named(tmp_path: Path) -> None:
    with pytest.raises(ImageFileUnavailable, match=r"gone\.raw"):
        VerifiedFiles().open("img", "disk", str(tmp_path / "gone.raw"), FileDigest("0" * 64, 1))
    with pytest.raises(InvalidRequest, match="'rootfs' is not accepted; accepted: disk"):
        check_part("rootfs")
