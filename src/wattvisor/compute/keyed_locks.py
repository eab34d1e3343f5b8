"""One lock per key (a server, a volume) that exists only while someone holds or awaits it.

A plain ``dict[key, Lock]`` filled on first use keeps a lock for every server and
volume ever created, so a long-running service grows with each one. Here each
entry counts its users and is dropped by the last one out.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class KeyedLocks:
    """Mutual exclusion per key; ``len()`` is the number of keys in use right now."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold ``key``'s lock for the ``with`` block; yields False (and holds nothing)
        when ``blocking`` is False and someone else holds it."""
        with self._guard:
            lock, users = self._entries.get(key, (None, 0))
            if lock is None:
                lock = threading.Lock()
            self._entries[key] = (lock, users + 1)
        try:
            acquired = lock.acquire(blocking)
            try:
                yield acquired
            finally:
                if acquired:
                    lock.release()
        finally:
            with self._guard:
                _lock, users = self._entries[key]
                if users == 1:
                    del self._entries[key]
                else:
                    self._entries[key] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._entries)
