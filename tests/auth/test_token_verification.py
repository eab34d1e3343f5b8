"""A token is accepted only when key, authority user, expiry and every check agree."""

from __future__ import annotations

from datetime import timedelta

import pytest
from auth_users import NOW, KeyedUser
from biscuit_auth import Biscuit, BiscuitBuilder, BlockBuilder, KeyPair

from support.user_registry import UserRegistry
from wattvisor.auth import (
    AuthError,
    RegisteredUser,
    TokenCheckFailed,
    TokenExpired,
    TokenLifetimeTooLong,
    TokenMalformed,
    TokenNoExpiry,
    TokenNoUser,
    TokenSignatureInvalid,
    TokenUserMismatch,
    TokenVerifier,
    mint_token,
)


def _raw(keys: KeyPair, datalog: str, **params: object) -> str:
    return BiscuitBuilder(datalog, params).build(keys.private_key).to_base64()


def test_valid_token_gives_the_registered_principal(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    verified = verifier.verify(token, operation="write")
    assert verified.principal.user == "alice"
    assert verified.principal.project == "proj-a"
    assert verified.principal.role == "member"
    assert verified.expires == NOW + timedelta(hours=1)


def test_role_and_project_come_from_the_registry_not_the_token(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = _raw(
        alice.keys,
        'user("alice"); expires({e}); role("admin"); project("proj-b");',
        e=NOW + timedelta(hours=1),
    )
    principal = verifier.verify(token, operation="read").principal
    assert (principal.role, principal.project) == ("member", "proj-a")


def test_forged_signature_is_refused(verifier: TokenVerifier, alice: KeyedUser) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    # Flip one character inside the signature at the end of the token.
    index = len(token) - 10
    forged = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
    with pytest.raises(TokenSignatureInvalid, match="for user 'alice' does not verify") as info:
        verifier.verify(forged, operation="read")
    assert info.value.code == "token_signature_invalid"


def test_token_signed_with_another_users_key_is_refused(
    verifier: TokenVerifier, bob: KeyedUser
) -> None:
    # Bob signs a token claiming to be alice.
    token = mint_token(bob.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    with pytest.raises(TokenSignatureInvalid) as info:
        verifier.verify(token, operation="read")
    assert info.value.details["user"] == "alice"
    assert "signed with another key" in info.value.message


def test_token_signed_with_an_unregistered_key_is_refused(verifier: TokenVerifier) -> None:
    token = mint_token(KeyPair().private_key, "alice", timedelta(hours=1), now=NOW)
    with pytest.raises(TokenSignatureInvalid):
        verifier.verify(token, operation="read")


def test_token_without_expiry_is_refused(verifier: TokenVerifier, alice: KeyedUser) -> None:
    token = _raw(alice.keys, 'user("alice");')
    with pytest.raises(TokenNoExpiry, match=r"no expires\(<date>\) fact") as info:
        verifier.verify(token, operation="read")
    assert info.value.code == "token_no_expiry"


def test_expiry_only_in_an_attenuation_block_does_not_count(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = _raw(alice.keys, 'user("alice");')
    base = Biscuit.from_base64(token, alice.keys.public_key)
    appended = base.append(BlockBuilder("expires({e});", {"e": NOW + timedelta(hours=1)}))
    with pytest.raises(TokenNoExpiry):
        verifier.verify(appended.to_base64(), operation="read")


def test_expired_token_is_refused_with_its_expiry(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = mint_token(
        alice.keys.private_key, "alice", timedelta(hours=1), now=NOW - timedelta(hours=2)
    )
    with pytest.raises(TokenExpired, match="expired at 2026-11-22T11:00:00Z") as info:
        verifier.verify(token, operation="read")
    assert info.value.code == "token_expired"
    assert info.value.details["expired_at"] == "2026-11-22T11:00:00Z"


def test_clock_skew_tolerates_a_just_expired_token(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = mint_token(
        alice.keys.private_key,
        "alice",
        timedelta(hours=1),
        now=NOW - timedelta(hours=1, seconds=30),
    )
    assert verifier.verify(token, operation="read").principal.user == "alice"


def test_skew_does_not_stretch_further_than_configured(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = mint_token(
        alice.keys.private_key,
        "alice",
        timedelta(hours=1),
        now=NOW - timedelta(hours=1, seconds=61),
    )
    with pytest.raises(TokenExpired):
        verifier.verify(token, operation="read")


def test_token_outliving_the_maximum_lifetime_is_refused(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(days=365), now=NOW)
    with pytest.raises(TokenLifetimeTooLong, match="maximum lifetime allows") as info:
        verifier.verify(token, operation="read")
    assert info.value.details["max_ttl_s"] == 30 * 86400


def test_two_expiry_facts_are_refused(verifier: TokenVerifier, alice: KeyedUser) -> None:
    token = _raw(
        alice.keys,
        'user("alice"); expires({a}); expires({b});',
        a=NOW + timedelta(hours=1),
        b=NOW + timedelta(days=2),
    )
    with pytest.raises(TokenMalformed, match="exactly one expires"):
        verifier.verify(token, operation="read")


def test_user_only_in_an_attenuation_block_is_refused(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = _raw(alice.keys, "expires({e});", e=NOW + timedelta(hours=1))
    base = Biscuit.from_base64(token, alice.keys.public_key)
    appended = base.append(BlockBuilder('user("alice");')).to_base64()
    with pytest.raises(TokenNoUser, match="attenuation block") as info:
        verifier.verify(appended, operation="read")
    assert info.value.code == "token_no_user"
    assert info.value.details["attenuation_blocks_with_user"] == [1]


def test_attenuation_cannot_add_a_second_identity(
    verifier: TokenVerifier, alice: KeyedUser, root: KeyedUser
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    base = Biscuit.from_base64(token, alice.keys.public_key)
    appended = base.append(BlockBuilder('user("root"); role("admin");')).to_base64()
    principal = verifier.verify(appended, operation="write").principal
    assert principal.user == "alice" and principal.role == "member"


def test_authority_naming_two_users_is_refused(verifier: TokenVerifier, alice: KeyedUser) -> None:
    token = _raw(
        alice.keys, 'user("alice"); user("root"); expires({e});', e=NOW + timedelta(hours=1)
    )
    with pytest.raises(TokenUserMismatch, match="several users"):
        verifier.verify(token, operation="read")


def _refusal(verifier: TokenVerifier, token: str) -> tuple[type, str, str, dict[str, object]]:
    with pytest.raises(AuthError) as info:
        verifier.verify(token, operation="read")
    error = info.value
    return type(error), error.code, error.message, error.details


def test_unknown_user_gets_the_answer_of_a_known_user_with_a_wrong_key(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    # Whether a user name is registered must not be learnt from a token's refusal.
    registry = UserRegistry([alice.user])
    same_name = TokenVerifier(registry.lookup, clock=lambda: NOW)
    stranger = mint_token(KeyPair().private_key, "alice", timedelta(hours=1), now=NOW)
    known = _refusal(same_name, stranger)  # alice exists, wrong key
    registry.remove("alice")
    unknown = _refusal(same_name, stranger)  # alice does not exist
    assert known == unknown
    assert known[:2] == (TokenSignatureInvalid, "token_signature_invalid")
    assert "'alice'" in known[2] and known[3] == {"user": "alice"}


def test_read_only_token_refuses_writes_and_allows_reads(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), read_only=True, now=NOW)
    assert verifier.verify(token, operation="read").blocks == 2
    with pytest.raises(TokenCheckFailed, match=r'check if operation\("read"\)') as info:
        verifier.verify(token, operation="write")
    assert info.value.code == "insufficient_scope" and info.value.status == 403
    assert info.value.details["failed_checks"] == [
        'Check n°0 in block n°1: check if operation("read")'
    ]


def test_holder_attenuation_on_path_is_honoured(verifier: TokenVerifier, alice: KeyedUser) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    narrowed = (
        Biscuit.from_base64(token, alice.keys.public_key)
        .append(BlockBuilder('check if path($p), $p.starts_with("/v1/servers")'))
        .to_base64()
    )
    ok = verifier.verify(narrowed, operation="read", method="GET", path="/v1/servers/x")
    assert ok.principal.user == "alice"
    with pytest.raises(TokenCheckFailed, match="starts_with"):
        verifier.verify(narrowed, operation="read", method="GET", path="/v1/power")


def test_attenuation_with_its_own_earlier_expiry_is_honoured(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=10), now=NOW)
    shortened = (
        Biscuit.from_base64(token, alice.keys.public_key)
        .append(BlockBuilder("check if time($t), $t < {e}", {"e": NOW - timedelta(hours=1)}))
        .to_base64()
    )
    with pytest.raises(TokenCheckFailed):
        verifier.verify(shortened, operation="read")


@pytest.mark.parametrize(
    "garbage",
    ["garbage", "not base64 at all!", "AAAA", "x" * 20_000, "eyJhbGciOiJIUzI1NiJ9.e30.sig"],
)
def test_garbage_token_is_malformed(verifier: TokenVerifier, garbage: str) -> None:
    with pytest.raises(TokenMalformed) as info:
        verifier.verify(garbage, operation="read")
    assert info.value.code == "token_malformed"
    assert "biscuit" in info.value.message


def test_every_refusal_is_an_auth_error_with_a_distinct_code() -> None:
    codes = {cls.code for cls in AuthError.__subclasses__()}
    assert len(codes) == len(AuthError.__subclasses__())
    assert {
        "missing_credentials",
        "token_malformed",
        "token_signature_invalid",
        "token_expired",
        "token_no_expiry",
        "token_user_mismatch",
        "token_no_user",
    } <= codes


def test_key_rotation_invalidates_old_tokens(alice: KeyedUser) -> None:
    registry = UserRegistry([alice.user])
    verifier = TokenVerifier(registry.lookup, clock=lambda: NOW)
    old = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    new_keys = KeyPair()
    registry.register(
        RegisteredUser(
            name="alice", project="proj-a", role="member", public_key=repr(new_keys.public_key)
        ),
        replace=True,
    )
    with pytest.raises(TokenSignatureInvalid):
        verifier.verify(old, operation="read")
    new = mint_token(new_keys.private_key, "alice", timedelta(hours=1), now=NOW)
    assert verifier.verify(new, operation="read").principal.user == "alice"


def test_token_accepted_before_a_key_rotation_is_refused_after_it(alice: KeyedUser) -> None:
    # Checked signatures are remembered; the key they were checked with must still be
    # the registered one.
    registry = UserRegistry([alice.user])
    verifier = TokenVerifier(registry.lookup, clock=lambda: NOW)
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    assert verifier.verify(token, operation="read").principal.user == "alice"
    registry.register(
        RegisteredUser(
            name="alice", project="proj-a", role="member", public_key=repr(KeyPair().public_key)
        ),
        replace=True,
    )
    with pytest.raises(TokenSignatureInvalid):
        verifier.verify(token, operation="read")


def test_token_accepted_before_its_user_is_removed_is_refused_after(alice: KeyedUser) -> None:
    registry = UserRegistry([alice.user])
    verifier = TokenVerifier(registry.lookup, clock=lambda: NOW)
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    verifier.verify(token, operation="read")
    registry.remove("alice")
    with pytest.raises(TokenSignatureInvalid, match="'alice'"):
        verifier.verify(token, operation="read")


def test_role_change_applies_to_a_token_already_accepted(alice: KeyedUser) -> None:
    registry = UserRegistry([alice.user])
    verifier = TokenVerifier(registry.lookup, clock=lambda: NOW)
    token = mint_token(alice.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    assert verifier.verify(token, operation="read").principal.role == "member"
    registry.register(
        RegisteredUser(
            name="alice", project="proj-b", role="admin", public_key=alice.user.public_key
        ),
        replace=True,
    )
    again = verifier.verify(token, operation="read").principal
    assert (again.role, again.project) == ("admin", "proj-b")


def test_remembered_signatures_are_bounded(
    alice: KeyedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wattvisor.auth.tokens as tokens

    monkeypatch.setattr(tokens, "SIGNATURE_CACHE_SIZE", 3)
    verifier = TokenVerifier(UserRegistry([alice.user]).lookup, clock=lambda: NOW)
    minted = [
        mint_token(alice.keys.private_key, "alice", timedelta(minutes=m), now=NOW)
        for m in range(1, 8)
    ]
    for token in minted:
        verifier.verify(token, operation="read")
    assert list(verifier._signatures) == minted[-3:]
    # An evicted token is simply checked again.
    assert verifier.verify(minted[0], operation="read").principal.user == "alice"


def test_authority_rule_deriving_another_user_is_refused(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    token = _raw(
        alice.keys,
        'user("alice"); expires({e}); boss("root"); user($b) <- boss($b);',
        e=NOW + timedelta(hours=1),
    )
    with pytest.raises(TokenUserMismatch, match="'root'"):
        verifier.verify(token, operation="read")


def test_token_exhausting_datalog_limits_is_refused_not_a_crash(
    verifier: TokenVerifier, alice: KeyedUser
) -> None:
    facts = " ".join(f"n({i});" for i in range(900))
    token = _raw(
        alice.keys,
        f'user("alice"); expires({{e}}); {facts} p($x, $y) <- n($x), n($y);',
        e=NOW + timedelta(hours=1),
    )
    with pytest.raises(TokenMalformed, match="execution limits"):
        verifier.verify(token, operation="read")


def test_authorizer_time_budget_survives_a_busy_host() -> None:
    """biscuit's default budget (1 ms) refused valid tokens when another thread held the CPU."""
    from biscuit_auth import AuthorizerBuilder

    from wattvisor.auth.tokens import AUTHORIZER_MAX_TIME, _authorizer_limits

    builder = AuthorizerBuilder("allow if true;")
    assert builder.limits().max_time < AUTHORIZER_MAX_TIME  # the library's default
    builder.set_limits(_authorizer_limits(builder))
    assert builder.limits().max_time == AUTHORIZER_MAX_TIME
