"""Host, controller and join tokens: accepted only with the right key, kind, subject and
expiry; a rotated key is accepted during its grace period and refused after it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from auth_users import NOW
from biscuit_auth import BiscuitBuilder, BlockBuilder, KeyPair

from wattvisor.auth import mint_token
from wattvisor.auth.errors import (
    TokenExpired,
    TokenForeignCluster,
    TokenLifetimeTooLong,
    TokenMalformed,
    TokenSignatureInvalid,
    TokenWrongKind,
)
from wattvisor.auth.service_tokens import (
    ServiceTokenVerifier,
    TrustedKey,
    join_token_verifier,
    mint_controller_token,
    mint_host_token,
    mint_join_token,
    parse_token,
    token_kind,
)

HOST = str(uuid.uuid4())
CLUSTER = str(uuid.uuid4())


def host_verifier(keys: dict[str, list[TrustedKey]], now: object = NOW) -> ServiceTokenVerifier:
    return ServiceTokenVerifier("host", keys.get, clock=lambda: now)  # type: ignore[arg-type,return-value]


def test_a_host_token_verifies_with_the_hosts_registered_key() -> None:
    pair = KeyPair()
    token = mint_host_token(pair.private_key, HOST, now=NOW)
    verified = host_verifier({HOST: [TrustedKey(repr(pair.public_key))]}).verify(token)
    assert (verified.kind, verified.subject) == ("host", HOST)
    assert verified.public_key == repr(pair.public_key)
    assert verified.expires == NOW + timedelta(minutes=5)


def test_a_host_token_signed_with_another_hosts_key_is_refused() -> None:
    mine, theirs = KeyPair(), KeyPair()
    other = str(uuid.uuid4())
    token = mint_host_token(theirs.private_key, HOST, now=NOW)
    keys = {HOST: [TrustedKey(repr(mine.public_key))], other: [TrustedKey(repr(theirs.public_key))]}
    with pytest.raises(TokenSignatureInvalid, match="signature invalid"):
        host_verifier(keys).verify(token)


def test_a_token_naming_an_unknown_host_is_refused_like_a_bad_signature() -> None:
    pair = KeyPair()
    token = mint_host_token(pair.private_key, HOST, now=NOW)
    with pytest.raises(TokenSignatureInvalid):
        host_verifier({}).verify(token)


def test_an_expired_host_token_is_refused_with_its_expiry() -> None:
    pair = KeyPair()
    token = mint_host_token(pair.private_key, HOST, timedelta(minutes=1), now=NOW)
    later = NOW + timedelta(minutes=5)
    with pytest.raises(TokenExpired, match="expired at 2026-11-22T12:01:00Z"):
        host_verifier({HOST: [TrustedKey(repr(pair.public_key))]}, later).verify(token)


def test_host_tokens_may_not_live_long() -> None:
    pair = KeyPair()
    token = mint_host_token(pair.private_key, HOST, timedelta(days=1), now=NOW)
    with pytest.raises(TokenLifetimeTooLong):
        host_verifier({HOST: [TrustedKey(repr(pair.public_key))]}).verify(token)


def test_a_host_fact_in_an_attenuation_block_is_not_trusted() -> None:
    pair = KeyPair()
    token = (
        BiscuitBuilder("expires({e});", {"e": NOW + timedelta(minutes=5)})
        .build(pair.private_key)
        .append(BlockBuilder(f'host("{HOST}");'))
        .to_base64()
    )
    with pytest.raises(TokenWrongKind):
        host_verifier({HOST: [TrustedKey(repr(pair.public_key))]}).verify(token)


def test_a_user_token_is_refused_by_kind_not_by_signature() -> None:
    pair = KeyPair()
    token = mint_token(pair.private_key, "alice", timedelta(minutes=5), now=NOW)
    with pytest.raises(TokenWrongKind, match="a user token is not accepted"):
        host_verifier({HOST: [TrustedKey(repr(pair.public_key))]}).verify(token)


def test_the_kind_of_a_token_is_read_from_its_authority_block() -> None:
    pair = KeyPair()
    assert token_kind(parse_token(mint_host_token(pair.private_key, HOST))) == "host"
    assert token_kind(parse_token(mint_controller_token(pair.private_key, CLUSTER))) == (
        "controller"
    )
    join = mint_join_token(pair.private_key, CLUSTER, str(uuid.uuid4()), NOW)
    assert token_kind(parse_token(join)) == "join"
    both = BiscuitBuilder(f'host("{HOST}"); user("alice");').build(pair.private_key)
    assert token_kind(parse_token(both.to_base64())) is None


def controller_verifier(keys: list[TrustedKey], now: object = NOW) -> ServiceTokenVerifier:
    def lookup(cluster: str) -> list[TrustedKey]:
        if cluster != CLUSTER:
            raise TokenForeignCluster(f"controller token is for cluster {cluster!r}")
        return keys

    return ServiceTokenVerifier("controller", lookup, clock=lambda: now)  # type: ignore[arg-type,return-value]


def test_a_rotated_cluster_key_is_accepted_during_its_grace_and_refused_after() -> None:
    old, new = KeyPair(), KeyPair()
    keys = [
        TrustedKey(repr(new.public_key)),
        TrustedKey(repr(old.public_key), valid_until=NOW + timedelta(hours=1)),
    ]
    token = mint_controller_token(old.private_key, CLUSTER, now=NOW)
    assert controller_verifier(keys).verify(token).subject == CLUSTER
    after = NOW + timedelta(hours=1, seconds=1)
    late = mint_controller_token(old.private_key, CLUSTER, now=after)
    with pytest.raises(TokenSignatureInvalid, match="retired at 2026-11-22T13:00:00Z"):
        controller_verifier(keys, after).verify(late)
    fresh = mint_controller_token(new.private_key, CLUSTER, now=after)
    assert controller_verifier(keys, after).verify(fresh).public_key == repr(new.public_key)


def test_a_controller_token_of_another_cluster_is_refused() -> None:
    pair = KeyPair()
    token = mint_controller_token(pair.private_key, str(uuid.uuid4()), now=NOW)
    with pytest.raises(TokenForeignCluster):
        controller_verifier([TrustedKey(repr(pair.public_key))]).verify(token)


def test_a_join_token_without_its_id_is_refused() -> None:
    pair = KeyPair()
    token = (
        BiscuitBuilder(f'cluster("{CLUSTER}"); expires({{e}});', {"e": NOW + timedelta(hours=1)})
        .build(pair.private_key)
        .to_base64()
    )
    verifier = join_token_verifier(
        lambda: CLUSTER,
        lambda: [TrustedKey(repr(pair.public_key))],
        max_ttl=timedelta(days=1),
        clock=lambda: NOW,
    )
    with pytest.raises(TokenWrongKind):
        verifier.verify(token)
    two_ids = (
        BiscuitBuilder(
            f'join("{uuid.uuid4()}"); join("{uuid.uuid4()}"); cluster("{CLUSTER}"); '
            "expires({e});",
            {"e": NOW + timedelta(hours=1)},
        )
        .build(pair.private_key)
        .to_base64()
    )
    with pytest.raises(TokenMalformed, match="exactly one join"):
        verifier.verify(two_ids)


def test_subjects_must_be_uuids() -> None:
    pair = KeyPair()
    token = (
        BiscuitBuilder('host("../admin"); expires({e});', {"e": NOW + timedelta(minutes=1)})
        .build(pair.private_key)
        .to_base64()
    )
    with pytest.raises(TokenMalformed, match="not a lower-case uuid"):
        host_verifier({}).verify(token)


class MovingClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> object:
        return self.now


def test_a_token_verified_before_is_still_refused_once_expired_or_its_key_revoked() -> None:
    pair = KeyPair()
    clock = MovingClock()
    keys = {HOST: [TrustedKey(repr(pair.public_key))]}
    verifier = ServiceTokenVerifier("host", keys.get, clock=clock)  # type: ignore[arg-type]
    token = mint_host_token(pair.private_key, HOST, timedelta(minutes=2), now=NOW)
    first = verifier.verify(token)
    assert verifier.verify(token) == first
    clock.now = NOW + timedelta(minutes=4)
    with pytest.raises(TokenExpired, match="expired at 2026-11-22T12:02:00Z"):
        verifier.verify(token)
    clock.now = NOW
    assert verifier.verify(token) == first
    keys[HOST] = [TrustedKey(repr(pair.public_key), valid_until=NOW - timedelta(seconds=1))]
    with pytest.raises(TokenSignatureInvalid, match="retired"):
        verifier.verify(token)


def test_a_token_with_a_time_check_of_its_own_is_checked_again_on_every_call() -> None:
    pair = KeyPair()
    clock = MovingClock()
    keys = {HOST: [TrustedKey(repr(pair.public_key))]}
    verifier = ServiceTokenVerifier("host", keys.get, clock=clock)  # type: ignore[arg-type]
    token = (
        BiscuitBuilder(f'host("{HOST}"); expires({{e}});', {"e": NOW + timedelta(minutes=5)})
        .build(pair.private_key)
        .append(BlockBuilder("check if time($t), $t < {u};", {"u": NOW + timedelta(minutes=2)}))
        .to_base64()
    )
    assert verifier.verify(token).subject == HOST
    clock.now = NOW + timedelta(minutes=3)
    with pytest.raises(TokenMalformed, match="fails its checks"):
        verifier.verify(token)
