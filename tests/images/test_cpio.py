"""The initramfs archive writer, checked against the real cpio and gzip tools."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest

from wattvisor.images.cpio import CpioEntry, gzip_deterministic, newc_archive

ENTRIES = [
    CpioEntry.directory("bin"),
    CpioEntry.file("bin/busybox", b"\x7fELF" + b"x" * 1001, 0o755),
    CpioEntry.symlink("bin/sh", "busybox"),
    CpioEntry.directory("dev"),
    CpioEntry.char_device("dev/console", 5, 1),
    CpioEntry.file("init", b"#!/bin/sh\necho hi\n", 0o755),
]


def _cpio_list(archive: bytes) -> list[str]:
    result = subprocess.run(
        ["cpio", "-t", "-v", "--quiet"], input=archive, capture_output=True, check=True
    )
    return result.stdout.decode().splitlines()


def test_cpio_tool_reads_every_member_with_its_type() -> None:
    listing = _cpio_list(newc_archive(ENTRIES))
    by_name = {line.split(" -> ")[0].split()[-1]: line for line in listing}
    assert set(by_name) == {"bin", "bin/busybox", "bin/sh", "dev", "dev/console", "init"}
    assert by_name["bin"].startswith("drwxr-xr-x")
    assert by_name["bin/busybox"].startswith("-rwxr-xr-x")
    assert by_name["bin/sh"].startswith("lrwxrwxrwx") and by_name["bin/sh"].endswith("-> busybox")
    assert by_name["dev/console"].startswith("crw-------")
    assert re.search(r"\b5,\s+1\b", by_name["dev/console"])


def test_cpio_tool_extracts_file_contents(tmp_path: Path) -> None:
    archive = newc_archive([e for e in ENTRIES if e.path != "dev/console"])
    subprocess.run(["cpio", "-i", "-d", "--quiet"], input=archive, cwd=tmp_path, check=True)
    assert (tmp_path / "init").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_same_entries_in_any_order_give_identical_bytes() -> None:
    assert newc_archive(ENTRIES) == newc_archive(list(reversed(ENTRIES)))
    assert gzip_deterministic(newc_archive(ENTRIES)) == gzip_deterministic(
        newc_archive(list(reversed(ENTRIES)))
    )


def test_gzip_output_is_plain_gzip() -> None:
    data = newc_archive(ENTRIES)
    assert gzip.decompress(gzip_deterministic(data)) == data


@pytest.mark.parametrize("path", ["/init", "../init", "a/../../b"])
def test_paths_outside_the_archive_root_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="relative"):
        newc_archive([CpioEntry.file(path, b"x")])


def test_duplicate_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        newc_archive([CpioEntry.file("init", b"a"), CpioEntry.file("init", b"b")])
