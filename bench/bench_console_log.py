"""Reading a console log: the tail of a full chain (virtlogd's default: 4 files of 2 MiB)
and a follower's poll when nothing is new, side by side with reading the files whole."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from wattvisor.compute.console import MAX_BYTES
from wattvisor.host.console_log import read_console_log

UUID = "0b7f1d0e-5c1a-4a53-9d6e-3f2a1b4c5d6e"
FILE_BYTES = 2 * 1024 * 1024
LINE = b"[  123.456789] a typical kernel console line of about eighty bytes ..........\r\n"


def _ms(action: Callable[[], object], rounds: int = 20) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def run() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        block = LINE * (FILE_BYTES // len(LINE))
        for name in ("console.log.2", "console.log.1", "console.log.0", "console.log"):
            (directory / name).write_bytes(block)
        total = sum(p.stat().st_size for p in directory.iterdir())

        def whole() -> bytes:
            return b"".join((directory / n).read_bytes() for n in sorted(
                p.name for p in directory.iterdir()))  # fmt: skip

        def tail(lines: int | None) -> Callable[[], object]:
            return lambda: read_console_log(directory, UUID, lines=lines, max_bytes=MAX_BYTES)

        cursor = read_console_log(directory, UUID, max_bytes=MAX_BYTES).next_cursor

        def poll() -> object:
            return read_console_log(directory, UUID, cursor=cursor, max_bytes=MAX_BYTES)

        print(f"   chain of 4 files, {total / 2**20:.0f} MiB, lines of {len(LINE)} bytes")
        for label, action in (
            ("read every file whole (reference)", whole),
            (f"tail, capped at {MAX_BYTES >> 10} KiB", tail(None)),
            ("tail, last 100 lines", tail(100)),
            ("follower poll, nothing new", poll),
        ):
            print(f"   {label:<36}: {_ms(action):7.2f} ms")
