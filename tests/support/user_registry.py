"""An in-memory user registry: the store's user lookup without a database."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from wattvisor.auth import RegisteredUser


class UserRegistry:
    """Users held in memory, standing in for the store's user table in tests and benchmarks.

    Its :meth:`lookup` method is a :data:`~wattvisor.auth.users.UserLookup`, the shape the
    store offers, so it can back :class:`~wattvisor.auth.tokens.TokenVerifier` directly.
    """

    def __init__(self, users: Iterable[RegisteredUser] = ()) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, RegisteredUser] = {}
        for user in users:
            self.register(user)

    def register(self, user: RegisteredUser, *, replace: bool = False) -> RegisteredUser:
        """Add ``user``; an existing name is refused unless ``replace`` (key rotation)."""
        with self._lock:
            if user.name in self._users and not replace:
                raise ValueError(
                    f"user {user.name!r} is already registered; pass replace=True to "
                    "change its key, role or project"
                )
            self._users[user.name] = user
        return user

    def remove(self, name: str) -> None:
        with self._lock:
            if self._users.pop(name, None) is None:
                raise KeyError(f"no user {name!r} is registered")

    def lookup(self, name: str) -> RegisteredUser | None:
        return self._users.get(name)

    def __len__(self) -> int:
        return len(self._users)
