"""A remembered authorization never outlives what it was granted on: the clock, the
request, the key and the user are checked again on every request."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from auth_users import NOW, KeyedUser
from biscuit_auth import Biscuit, BlockBuilder, KeyPair

from support.user_registry import UserRegistry
from wattvisor.auth import (
    RegisteredUser,
    TokenCheckFailed,
    TokenExpired,
    TokenSignatureInvalid,
    TokenVerifier,
    mint_token,
)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def users(alice: KeyedUser) -> UserRegistry:
    return UserRegistry([alice.user])


@pytest.fixture
def remembering(users: UserRegistry, clock: Clock) -> TokenVerifier:
    return TokenVerifier(users.lookup, clock_skew=timedelta(seconds=60), clock=clock)


def _create(verifier: TokenVerifier, token: str) -> str:
    verified = verifier.verify(token, operation="write", method="POST", path="/v1/servers")
    return verified.principal.user


def test_a_remembered_token_is_refused_once_it_expires(
    remembering: TokenVerifier, alice: KeyedUser, clock: Clock
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(minutes=10), now=NOW)
    assert _create(remembering, token) == "alice"
    assert _create(remembering, token) == "alice"  # answered from memory
    clock.now = NOW + timedelta(minutes=12)
    with pytest.raises(TokenExpired, match="expired at"):
        _create(remembering, token)


def test_a_token_whose_own_check_reads_the_clock_is_judged_at_each_request(
    remembering: TokenVerifier, alice: KeyedUser, clock: Clock
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=10), now=NOW)
    shortened = (
        Biscuit.from_base64(token, alice.keys.public_key)
        .append(BlockBuilder("check if time($t), $t < {e}", {"e": NOW + timedelta(minutes=5)}))
        .to_base64()
    )
    assert _create(remembering, shortened) == "alice"
    clock.now = NOW + timedelta(minutes=10)
    with pytest.raises(TokenCheckFailed):
        _create(remembering, shortened)


def test_a_read_allowed_is_no_write_allowed(remembering: TokenVerifier, alice: KeyedUser) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), read_only=True, now=NOW)
    for _ in range(2):
        read = remembering.verify(token, operation="read", method="GET", path="/v1/servers")
        assert read.principal.user == "alice"
    with pytest.raises(TokenCheckFailed, match="refuses this write request"):
        _create(remembering, token)


def test_a_path_allowed_is_no_other_path_allowed(
    remembering: TokenVerifier, alice: KeyedUser
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    narrowed = (
        Biscuit.from_base64(token, alice.keys.public_key)
        .append(BlockBuilder('check if path($p), $p.starts_with("/v1/servers")'))
        .to_base64()
    )
    for _ in range(2):
        assert _create(remembering, narrowed) == "alice"
    with pytest.raises(TokenCheckFailed, match="starts_with"):
        remembering.verify(narrowed, operation="write", method="POST", path="/v1/volumes")


def test_a_remembered_token_is_refused_on_the_first_request_after_its_user_is_removed(
    remembering: TokenVerifier, users: UserRegistry, alice: KeyedUser
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    assert _create(remembering, token) == "alice"
    assert _create(remembering, token) == "alice"
    users.remove("alice")
    with pytest.raises(TokenSignatureInvalid, match="'alice'"):
        _create(remembering, token)


def test_a_remembered_token_is_refused_on_the_first_request_after_a_key_rotation(
    remembering: TokenVerifier, users: UserRegistry, alice: KeyedUser
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    assert _create(remembering, token) == "alice"
    assert _create(remembering, token) == "alice"
    users.register(
        RegisteredUser(name="alice", project="proj-a", role="member",
                       public_key=repr(KeyPair().public_key)),
        replace=True,
    )  # fmt: skip
    with pytest.raises(TokenSignatureInvalid):
        _create(remembering, token)
    users.register(alice.user, replace=True)  # the old key back: accepted again
    assert _create(remembering, token) == "alice"


def test_a_role_change_applies_to_a_remembered_token(
    remembering: TokenVerifier, users: UserRegistry, alice: KeyedUser
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    _create(remembering, token)
    _create(remembering, token)
    users.register(
        RegisteredUser(name="alice", project="proj-b", role="admin",
                       public_key=alice.user.public_key),
        replace=True,
    )  # fmt: skip
    principal = remembering.verify(
        token, operation="write", method="POST", path="/v1/servers"
    ).principal
    assert (principal.role, principal.project) == ("admin", "proj-b")


def test_remembered_authorizations_are_bounded(
    remembering: TokenVerifier, alice: KeyedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wattvisor.auth.tokens as tokens

    monkeypatch.setattr(tokens, "AUTHORIZATION_CACHE_SIZE", 2)
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    for n in range(5):
        remembering.verify(token, operation="read", method="GET", path=f"/v1/servers/{n}")
    assert [key[3] for key in remembering._authorized] == ["/v1/servers/3", "/v1/servers/4"]
