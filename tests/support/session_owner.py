"""Which process a test session's leftovers belong to, told apart from a later process
that got the same pid: the pid with the process's start time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def start_ticks_of(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid, its identity."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Owner:
    """The process a session belongs to; a reused pid has another start time."""

    pid: int
    start_ticks: int | None

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), start_ticks_of(os.getpid()))

    def alive(self) -> bool:
        ticks = start_ticks_of(self.pid)
        return ticks is not None and ticks == self.start_ticks
