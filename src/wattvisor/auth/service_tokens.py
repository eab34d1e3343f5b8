"""Tokens between the machines of a cluster: controllers, host agents, join tokens.

Three kinds, each a biscuit whose authority block names one subject and an expiry:

* host token, signed by the host's own key (which it made itself and registered when
  it joined): ``host("<host uuid>"); expires(...)``; the controller accepts it on host
  endpoints only;
* controller token, signed by the cluster key the controllers share:
  ``controller("<cluster id>"); expires(...)``; only agents accept it;
* join token, signed by the cluster key: ``join("<token id>"); cluster("<cluster id>");
  expires(...)``; redeemed once, by ``POST /v1/hosts/join``.

Verification follows the user-token verifier (:mod:`wattvisor.auth.tokens`): the
subject read from the *unverified* authority block only picks the candidate keys, the
signature is checked with them, and the subject, the expiry and any other identity
fact are taken again from the verified authority block through the authorizer. A
subject may have several keys at once (a rotation's grace period): each
:class:`TrustedKey` says until when it is accepted, and a token signed with a key past
that is refused naming the moment the key was retired. Which kind a token is, is read
from its authority block, so that a token of the wrong kind is refused as such
(:class:`TokenWrongKind`) instead of as a bad signature.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from biscuit_auth import (
    AuthorizationError,
    AuthorizerBuilder,
    Biscuit,
    BiscuitBuilder,
    BiscuitBuildError,
    BiscuitValidationError,
    DataLogError,
    Fact,
    PrivateKey,
    PublicKey,
    Rule,
    UnverifiedBiscuit,
)

from wattvisor.auth.errors import (
    InvalidTTL,
    TokenExpired,
    TokenForeignCluster,
    TokenLifetimeTooLong,
    TokenMalformed,
    TokenNoExpiry,
    TokenSignatureInvalid,
    TokenUserMismatch,
    TokenWrongKind,
)
from wattvisor.auth.tokens import (
    DEFAULT_CLOCK_SKEW,
    SIGNATURE_CACHE_SIZE,
    TokenVerifier,
    _authorizer_limits,
    _iso,
    format_ttl,
    utcnow,
)
from wattvisor.auth.users import normalize_public_key

TokenKind = Literal["user", "host", "controller", "join"]
KINDS: dict[TokenKind, str] = {
    "user": "user",
    "host": "host",
    "controller": "controller",
    "join": "join",
}
"""The fact that names a token's subject, by kind (the kind is the fact's name)."""
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DEFAULT_SERVICE_TTL = timedelta(minutes=5)
"""Lifetime of host and controller tokens: minted per call (or reused briefly), so short."""
MAX_SERVICE_TTL = timedelta(minutes=15)
_FACT_LINE = {kind: re.compile(rf'^{kind}\("([^"\\]*)"\);$', re.MULTILINE) for kind in KINDS}
_CLUSTER_LINE = re.compile(r'^cluster\("([^"\\]*)"\);$', re.MULTILINE)
_ENDPOINT_TAKES = {
    "host": "host tokens (signed by a joined host's own key)",
    "controller": "controller tokens (signed by the cluster key)",
    "join": "join tokens (`wattvisor host join-token`)",
    "user": "user tokens (`wattvisor token create`)",
}


def token_kind(unverified: UnverifiedBiscuit) -> TokenKind | None:
    """The kind of token by the subject fact of its authority block (unverified: only to
    choose which verifier gets it), or None when it names no known subject."""
    authority = unverified.block_source(0)
    found = [kind for kind, line in _FACT_LINE.items() if line.search(authority)]
    return found[0] if len(found) == 1 else None


def parse_token(token: str) -> UnverifiedBiscuit:
    """``token`` parsed but not verified; :class:`TokenMalformed` if it is no biscuit."""
    return TokenVerifier._parse(token)


def wrong_kind(found: TokenKind | None, wanted: TokenKind, where: str) -> TokenWrongKind:
    """The refusal of a token of kind ``found`` sent where ``wanted`` tokens belong."""
    shown = f"a {found} token" if found is not None else "a token naming no known subject"
    return TokenWrongKind(
        f"{shown} is not accepted by {where}; it takes {_ENDPOINT_TAKES[wanted]}",
        kind=found,
        accepted=wanted,
    )


@dataclass(frozen=True)
class TrustedKey:
    """A public key a subject signs with, accepted until ``valid_until`` (None: no end)."""

    public_key: str
    valid_until: datetime | None = None
    _key: PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        canonical = normalize_public_key(self.public_key)
        object.__setattr__(self, "public_key", canonical)
        object.__setattr__(self, "_key", PublicKey(canonical))
        until = self.valid_until
        if until is not None and until.tzinfo is None:
            object.__setattr__(self, "valid_until", until.replace(tzinfo=UTC))

    @property
    def key(self) -> PublicKey:
        return self._key

    def valid_at(self, moment: datetime) -> bool:
        return self.valid_until is None or moment < self.valid_until


KeyLookup = Callable[[str], Sequence[TrustedKey] | None]
"""``keys(subject)``: every key of ``subject`` that is or was accepted, or None if the
subject is unknown. May raise an :class:`AuthError` that says more (a foreign cluster)."""


@dataclass(frozen=True)
class VerifiedServiceToken:
    """A verified token: its kind, subject, expiry, the key it verified with, and the
    values of the other identity facts asked for (from the verified authority block)."""

    kind: TokenKind
    subject: str
    expires: datetime
    public_key: str
    facts: Mapping[str, str]


class ServiceTokenVerifier:
    """Verifies tokens of one kind whose subject names its keys (hosts, a cluster).

    ``subject_fact`` names the fact that picks the keys (``host`` for host tokens,
    ``controller`` for controller tokens, ``cluster`` for join tokens); ``extra_facts``
    are other facts that must appear exactly once in the verified authority block
    (``join`` for join tokens) and are returned.
    """

    def __init__(
        self,
        kind: TokenKind,
        keys: KeyLookup,
        *,
        subject_fact: str | None = None,
        extra_facts: Sequence[str] = (),
        subject_pattern: re.Pattern[str] = UUID_PATTERN,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        max_ttl: timedelta = MAX_SERVICE_TTL,
        clock: Callable[[], datetime] = utcnow,
        where: str = "this endpoint",
    ) -> None:
        self.kind = kind
        self._keys = keys
        self._subject_fact = subject_fact or KINDS[kind]
        self._extra = tuple(extra_facts)
        self._pattern = subject_pattern
        self._skew = clock_skew
        self._max_ttl = max_ttl
        self._clock = clock
        self._where = where
        self._subject_line = (
            _FACT_LINE[kind] if self._subject_fact == KINDS[kind] else _CLUSTER_LINE
        )
        # token -> (subject, the key it verified with, the verified biscuit). Controllers
        # reuse a token for minutes; parsing and the Ed25519 check need not be repeated.
        # The authorizer (expiry) still runs on every call.
        self._signatures: OrderedDict[str, tuple[str, str, Biscuit]] = OrderedDict()
        self._signatures_lock = threading.Lock()
        # token -> its verified result, for tokens of facts alone (see _facts_only); kept
        # no longer than the token's signature entry.
        self._authorized: dict[str, VerifiedServiceToken] = {}

    def verify(self, token: str | UnverifiedBiscuit) -> VerifiedServiceToken:
        """The verified token, or an :class:`AuthError` subclass saying why it is refused."""
        now = self._clock().astimezone(UTC)
        known = self._remembered(token, now) if isinstance(token, str) else None
        if known is not None:
            subject, biscuit, key = known
            verified = self._authorized.get(token) if isinstance(token, str) else None
            if verified is not None and verified.public_key == key.public_key:
                return self._still_valid(verified, now)
        else:
            unverified = parse_token(token) if isinstance(token, str) else token
            found = token_kind(unverified)
            if found != self.kind:
                raise wrong_kind(found, self.kind, self._where)
            subject = self._claimed_subject(unverified)
            biscuit, key = self._signed(unverified, subject, now)
            if isinstance(token, str):
                with self._signatures_lock:
                    self._signatures[token] = (subject, key.public_key, biscuit)
                    if len(self._signatures) > SIGNATURE_CACHE_SIZE:
                        evicted, _ = self._signatures.popitem(last=False)
                        self._authorized.pop(evicted, None)
        lenient_now = now - self._skew
        fact = self._subject_fact
        try:
            builder = AuthorizerBuilder(
                f"time({{now}});\ncheck if expires($e), time($t), $t < $e;\n"
                f"allow if {fact}({{subject}});",
                {"now": lenient_now, "subject": subject},
            )
            builder.set_limits(_authorizer_limits(builder))  # type: ignore[attr-defined]
            authorizer = builder.build(biscuit)
            subjects = [f.terms[0] for f in authorizer.query(Rule(f"s($s) <- {fact}($s)"))]
            expiry_facts = authorizer.query(Rule("e($e) <- expires($e)"))
            extras = {
                name: [f.terms[0] for f in authorizer.query(Rule(f"x($x) <- {name}($x)"))]
                for name in self._extra
            }
        except (AuthorizationError, BiscuitBuildError, DataLogError, ValueError) as exc:
            raise TokenMalformed(
                f"{self.kind} token for {subject!r} cannot be evaluated: {exc}", subject=subject
            ) from exc
        if subjects != [subject]:
            raise TokenUserMismatch(
                f"the verified authority block names {fact} {sorted(map(str, subjects))!r}; "
                f"a {self.kind} token must name exactly one",
                subject=subject,
            )
        facts: dict[str, str] = {}
        for name, values in extras.items():
            if len(values) != 1 or not isinstance(values[0], str):
                raise TokenMalformed(
                    f'{self.kind} token for {subject!r} must carry exactly one {name}("...") '
                    f"fact in its authority block, found {[str(v) for v in values]!r}",
                    subject=subject,
                )
            facts[name] = values[0]
        expires = self._expiry(expiry_facts, subject)
        if expires <= lenient_now:
            raise TokenExpired(
                f"{self.kind} token for {subject!r} expired at {_iso(expires)} (time here "
                f"{_iso(now)}, clock skew allowed {int(self._skew.total_seconds())} s)",
                subject=subject,
                expired_at=_iso(expires),
            )
        latest = now + self._max_ttl + self._skew
        if expires > latest:
            raise TokenLifetimeTooLong(
                f"{self.kind} token for {subject!r} expires at {_iso(expires)}, later than "
                f"the maximum lifetime of {format_ttl(self._max_ttl)} allows",
                subject=subject,
                expires_at=_iso(expires),
                max_ttl_s=int(self._max_ttl.total_seconds()),
            )
        try:
            authorizer.authorize()
        except AuthorizationError as exc:
            raise TokenMalformed(
                f"{self.kind} token for {subject!r} fails its checks: {exc}", subject=subject
            ) from exc
        derived = [f.terms[0] for f in authorizer.query(Rule(f"s($s) <- {fact}($s)"))]
        if derived != [subject]:
            raise TokenUserMismatch(
                f"{self.kind} token for {subject!r} derives other subjects by rule",
                subject=subject,
            )
        result = VerifiedServiceToken(self.kind, subject, expires, key.public_key, facts)
        if isinstance(token, str) and _facts_only(biscuit):
            # A token of facts alone (what agents and controllers mint) authorizes the same
            # way until its expiry: later calls re-check only the key and the expiry.
            with self._signatures_lock:
                if token in self._signatures:
                    self._authorized[token] = result
                    while len(self._authorized) > SIGNATURE_CACHE_SIZE:
                        self._authorized.pop(next(iter(self._authorized)))
        return result

    def _still_valid(self, verified: VerifiedServiceToken, now: datetime) -> VerifiedServiceToken:
        """An authorized token again: its key was re-checked, its expiry is checked here
        (the lifetime bound held when it was authorized and only loosens with time)."""
        if verified.expires <= now - self._skew:
            raise TokenExpired(
                f"{self.kind} token for {verified.subject!r} expired at "
                f"{_iso(verified.expires)} (time here {_iso(now)}, clock skew allowed "
                f"{int(self._skew.total_seconds())} s)",
                subject=verified.subject,
                expired_at=_iso(verified.expires),
            )
        return verified

    def _remembered(self, token: str, now: datetime) -> tuple[str, Biscuit, TrustedKey] | None:
        """A token whose signature was checked before, if the key it verified with is
        still one of its subject's accepted keys (rotations and revocations apply at once)."""
        with self._signatures_lock:
            known = self._signatures.get(token)
            if known is not None:
                self._signatures.move_to_end(token)
        if known is None:
            return None
        subject, public_key, biscuit = known
        for key in self._keys(subject) or ():
            if key.public_key == public_key and key.valid_at(now):
                return subject, biscuit, key
        with self._signatures_lock:
            self._signatures.pop(token, None)
            self._authorized.pop(token, None)
        return None

    def _claimed_subject(self, unverified: UnverifiedBiscuit) -> str:
        names = sorted(set(self._subject_line.findall(unverified.block_source(0))))
        if len(names) != 1:
            raise TokenMalformed(
                f"a {self.kind} token's authority block must hold exactly one "
                f'{self._subject_fact}("...") fact, found {names!r}',
            )
        name: str = names[0]
        if not self._pattern.fullmatch(name):
            raise TokenMalformed(
                f"{self.kind} token names {self._subject_fact} {name[:80]!r}, which is not "
                "a lower-case uuid",
            )
        return name

    def _signed(
        self, unverified: UnverifiedBiscuit, subject: str, now: datetime
    ) -> tuple[Biscuit, TrustedKey]:
        keys = self._keys(subject)
        retired: list[TrustedKey] = []
        for key in keys or ():
            if not key.valid_at(now):
                retired.append(key)
                continue
            try:
                return unverified.verify(key.key), key
            except BiscuitValidationError:
                continue
        for key in retired:
            try:
                unverified.verify(key.key)
            except BiscuitValidationError:
                continue
            assert key.valid_until is not None
            raise TokenSignatureInvalid(
                f"{self.kind} token for {subject!r} is signed with a key that was retired "
                f"at {_iso(key.valid_until)}; it must be signed with the current key",
                subject=subject,
                retired_at=_iso(key.valid_until),
            )
        raise TokenSignatureInvalid(
            f"{self.kind} token for {self._subject_fact} {subject!r}: signature invalid; it "
            f"does not verify with any key {self._subject_fact} {subject!r} has here (signed "
            "with another key, altered, or naming an unknown subject)",
            subject=subject,
        )

    def _expiry(self, facts: Sequence[Fact], subject: str) -> datetime:
        values: list[object] = [f.terms[0] if f.terms else None for f in facts]
        if not values:
            raise TokenNoExpiry(
                f"{self.kind} token for {subject!r} carries no expires(<date>) fact",
                subject=subject,
            )
        if len(values) > 1 or not isinstance(values[0], datetime):
            raise TokenMalformed(
                f"{self.kind} token for {subject!r} must carry exactly one expires(<date>) "
                f"fact, found {[str(v) for v in values]!r}",
                subject=subject,
            )
        value = values[0]
        return value if value.tzinfo else value.replace(tzinfo=UTC)


_NOT_A_FACT = re.compile(r"<-|\bcheck\b|\breject\b|\ballow\b|\bdeny\b|\btrusting\b")


def _facts_only(biscuit: Biscuit) -> bool:
    """Whether ``biscuit`` is one authority block of facts alone: no rule, check or
    further block whose outcome could depend on the time beyond its expires fact."""
    return biscuit.block_count() == 1 and not _NOT_A_FACT.search(biscuit.block_source(0))


def _issued(now: datetime | None) -> datetime:
    return (now or utcnow()).astimezone(UTC).replace(microsecond=0)


def _check_uuid(what: str, value: str) -> str:
    if not isinstance(value, str) or not UUID_PATTERN.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a lower-case uuid")
    return value


def mint_host_token(
    private_key: PrivateKey,
    host_uuid: str,
    ttl: timedelta = DEFAULT_SERVICE_TTL,
    *,
    now: datetime | None = None,
) -> str:
    """A token an agent signs its calls to the controller with."""
    _check_uuid("host id", host_uuid)
    if ttl <= timedelta(0):
        raise InvalidTTL(f"token lifetime {ttl} must be longer than zero")
    expires = _issued(now) + ttl
    builder = BiscuitBuilder("host({h}); expires({e});", {"h": host_uuid, "e": expires})
    return str(builder.build(private_key).to_base64())


def mint_controller_token(
    private_key: PrivateKey,
    cluster_id: str,
    ttl: timedelta = DEFAULT_SERVICE_TTL,
    *,
    now: datetime | None = None,
) -> str:
    """A token a controller signs its calls to an agent with (cluster key)."""
    _check_uuid("cluster id", cluster_id)
    if ttl <= timedelta(0):
        raise InvalidTTL(f"token lifetime {ttl} must be longer than zero")
    expires = _issued(now) + ttl
    builder = BiscuitBuilder("controller({c}); expires({e});", {"c": cluster_id, "e": expires})
    return str(builder.build(private_key).to_base64())


def mint_join_token(
    private_key: PrivateKey, cluster_id: str, token_id: str, expires: datetime
) -> str:
    """A join token (cluster key); single use is the store's business, not the token's."""
    _check_uuid("cluster id", cluster_id)
    _check_uuid("join token id", token_id)
    builder = BiscuitBuilder(
        "join({j}); cluster({c}); expires({e});",
        {"j": token_id, "c": cluster_id, "e": expires.astimezone(UTC).replace(microsecond=0)},
    )
    return str(builder.build(private_key).to_base64())


def join_token_verifier(
    cluster_id: Callable[[], str],
    cluster_keys: Callable[[], Sequence[TrustedKey]],
    *,
    max_ttl: timedelta,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    clock: Callable[[], datetime] = utcnow,
) -> ServiceTokenVerifier:
    """The verifier of join tokens for the cluster ``cluster_id()`` with its current keys."""

    def keys(named: str) -> Sequence[TrustedKey]:
        ours = cluster_id()
        if named != ours:
            raise TokenForeignCluster(
                f"join token is for cluster {named!r}, but this controller belongs to "
                f"cluster {ours!r}; ask an admin of this cluster for a join token",
                token_cluster=named,
                cluster=ours,
            )
        return cluster_keys()

    return ServiceTokenVerifier(
        "join",
        keys,
        subject_fact="cluster",
        extra_facts=("join",),
        max_ttl=max_ttl,
        clock_skew=clock_skew,
        clock=clock,
        where="POST /v1/hosts/join",
    )
