"""Users with real Ed25519 keys and a verifier with a fixed clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from auth_users import NOW, KeyedUser, keyed_user

from support.user_registry import UserRegistry
from wattvisor.auth import TokenVerifier


@pytest.fixture
def alice() -> KeyedUser:
    return keyed_user("alice", "proj-a")


@pytest.fixture
def bob() -> KeyedUser:
    return keyed_user("bob", "proj-b")


@pytest.fixture
def root() -> KeyedUser:
    return keyed_user("root", "admin", "admin")


@pytest.fixture
def registry(alice: KeyedUser, bob: KeyedUser, root: KeyedUser) -> UserRegistry:
    return UserRegistry([alice.user, bob.user, root.user])


@pytest.fixture
def verifier(registry: UserRegistry) -> TokenVerifier:
    return TokenVerifier(
        registry.lookup,
        clock_skew=timedelta(seconds=60),
        max_ttl=timedelta(days=30),
        clock=lambda: NOW,
    )
