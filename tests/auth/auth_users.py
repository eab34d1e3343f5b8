"""Registered users with real Ed25519 keys, shared by the auth tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from biscuit_auth import KeyPair

from wattvisor.auth import RegisteredUser, Role

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class KeyedUser:
    """A registered user together with the private half only the user holds."""

    user: RegisteredUser
    keys: KeyPair

    @property
    def name(self) -> str:
        return self.user.name


def keyed_user(name: str, project: str, role: Role = "member") -> KeyedUser:
    keys = KeyPair()
    user = RegisteredUser(name=name, project=project, role=role, public_key=repr(keys.public_key))
    return KeyedUser(user, keys)
