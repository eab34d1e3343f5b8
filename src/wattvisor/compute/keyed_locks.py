"""One lock per key (a server, a volume) that exists only while someone holds or awaits it.

A plain ``dict[key, Lock]`` filled on first use keeps a lock for every server and
volume ever created, so a long-running service grows with each one. Here each
entry counts its users and is dropped by the last one out.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from types import TracebackType


class KeyedLocks:
    """Mutual exclusion per key; ``len()`` is the number of keys in use right now."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[str, tuple[threading.Lock, int]] = {}

    def lock(self, key: str) -> KeyedLock:
        """``key``'s lock, used like a ``threading.Lock`` (``with``, acquire/release)."""
        return KeyedLock(self, key)

    @contextlib.contextmanager
    def hold(self, key: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold ``key``'s lock for the ``with`` block; yields False (and holds nothing)
        when ``blocking`` is False and someone else holds it."""
        lock = self.lock(key)
        acquired = lock.acquire(blocking)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()

    def _enter(self, key: str) -> threading.Lock:
        with self._guard:
            lock, users = self._entries.get(key, (None, 0))
            if lock is None:
                lock = threading.Lock()
            self._entries[key] = (lock, users + 1)
            return lock

    def _leave(self, key: str) -> threading.Lock:
        with self._guard:
            lock, users = self._entries[key]
            if users == 1:
                del self._entries[key]
            else:
                self._entries[key] = (lock, users - 1)
            return lock

    def __len__(self) -> int:
        with self._guard:
            return len(self._entries)


class KeyedLock:
    """The lock of one key of a :class:`KeyedLocks`; it takes room there only between
    an :meth:`acquire` and its :meth:`release`."""

    def __init__(self, owner: KeyedLocks, key: str) -> None:
        self._owner = owner
        self._key = key

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        lock = self._owner._enter(self._key)
        if lock.acquire(blocking, timeout):
            return True
        self._owner._leave(self._key)
        return False

    def release(self) -> None:
        self._owner._leave(self._key).release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
