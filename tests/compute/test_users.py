"""Users live in the store; the token check's lookup is cached and follows every change."""

from __future__ import annotations

import pytest
from biscuit_auth import KeyPair

from wattvisor.compute import Compute, Conflict, InvalidRequest, NotFound
from wattvisor.compute.users import UserStore


def _key() -> str:
    return repr(KeyPair().public_key)


def test_registered_user_is_found_by_lookup(compute: Compute) -> None:
    key = _key()
    record = compute.users.register("carol", "proj-c", "member", key)
    assert (record.name, record.project, record.role, record.public_key) == (
        "carol",
        "proj-c",
        "member",
        key,
    )
    found = compute.users.lookup("carol")
    assert found is not None and found.project == "proj-c" and found.role == "member"
    # A second store over the same database (a restart) reads it back.
    assert UserStore(compute.users.engine).lookup("carol") == found


def test_lookup_cache_follows_replace_and_delete(compute: Compute) -> None:
    assert compute.users.lookup("dave") is None  # cached as missing...
    compute.users.register("dave", "p", "member", _key())
    assert compute.users.lookup("dave") is not None  # ...until registered
    new_key = _key()
    compute.users.register("dave", "q", "admin", new_key, replace=True)
    found = compute.users.lookup("dave")
    assert found is not None and (found.project, found.role, found.public_key) == (
        "q",
        "admin",
        new_key,
    )
    compute.users.delete("dave")
    assert compute.users.lookup("dave") is None
    with pytest.raises(NotFound):
        compute.users.delete("dave")


def test_bad_users_are_refused_and_not_saved(compute: Compute) -> None:
    with pytest.raises(InvalidRequest, match="public key 'ssh-rsa AAA'"):
        compute.users.register("erin", "p", "member", "ssh-rsa AAA")
    with pytest.raises(InvalidRequest, match="user name"):
        compute.users.register("-bad", "p", "member", _key())
    with pytest.raises(InvalidRequest, match="role 'owner'"):
        compute.users.register("erin", "p", "owner", _key())
    assert compute.users.list_all() == []
    compute.users.register("erin", "p", "member", _key())
    with pytest.raises(Conflict, match="already registered"):
        compute.users.register("erin", "p", "member", _key())


def test_the_admin_key_holder_cannot_be_removed(compute: Compute) -> None:
    store = UserStore(compute.users.engine, protected=frozenset({"admin"}))
    store.register("admin", "admin", "admin", _key())
    with pytest.raises(Conflict, match="admin key"):
        store.delete("admin")
    assert store.lookup("admin") is not None
