"""A host-side counter file that keeps growing, rewritten atomically like the energy layer does."""

from __future__ import annotations

import threading
from pathlib import Path


class GrowingCounterFile:
    """Rewrites ``path`` every ``interval_s`` with a larger integer (temp file + rename).

    Use as a context manager; ``value`` is the last value written.
    """

    def __init__(
        self, path: Path, *, step: int = 1, interval_s: float = 0.2, newline: bool = False
    ) -> None:
        self.path = path
        self.step = step
        self.interval_s = interval_s
        self.newline = newline
        self.value = 0
        self._stop = threading.Event()
        self._write()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _write(self) -> None:
        self.value += self.step
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(f"{self.value}\n" if self.newline else str(self.value))
        tmp.replace(self.path)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write()

    def __enter__(self) -> GrowingCounterFile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
