"""Registering users: names and public keys are checked once, at registration."""

from __future__ import annotations

import pytest
from biscuit_auth import KeyPair

from support.user_registry import UserRegistry
from wattvisor.auth import (
    InvalidPublicKey,
    InvalidUserName,
    RegisteredUser,
    normalize_public_key,
)


def test_public_key_accepted_with_prefix_or_as_bare_hex() -> None:
    key = repr(KeyPair().public_key)
    bare = key.removeprefix("ed25519/")
    assert normalize_public_key(key) == key
    assert normalize_public_key(bare.upper()) == key
    assert normalize_public_key(f"  {key}\n") == key


@pytest.mark.parametrize("text", ["", "ed25519/abc", "-----BEGIN PUBLIC KEY-----", "zz" * 32])
def test_bad_public_key_names_itself_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(InvalidPublicKey, match="ed25519/<64 hex digits>") as info:
        normalize_public_key(text)
    assert repr(text.strip()) in str(info.value)


def test_private_key_given_as_public_key_is_not_echoed() -> None:
    private = repr(KeyPair().private_key)
    with pytest.raises(InvalidPublicKey) as info:
        normalize_public_key(private)
    assert private.removeprefix("ed25519-private/") not in str(info.value)


@pytest.mark.parametrize("name", ["", "-lead", 'a"b', "x" * 65, "a b", "é"])
def test_bad_user_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidUserName, match="1-64 characters"):
        RegisteredUser(name=name, project="p", role="member", public_key=repr(KeyPair().public_key))


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="'admin' or 'member'"):
        RegisteredUser(
            name="a",
            project="p",
            role="owner",  # type: ignore[arg-type]
            public_key=repr(KeyPair().public_key),
        )


def test_registry_refuses_a_second_user_of_the_same_name() -> None:
    key = repr(KeyPair().public_key)
    registry = UserRegistry([RegisteredUser(name="a", project="p", role="member", public_key=key)])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(RegisteredUser(name="a", project="q", role="admin", public_key=key))
    found = registry.lookup("a")
    assert found is not None and found.project == "p"
    assert registry.lookup("b") is None
