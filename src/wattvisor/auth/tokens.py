"""Biscuit tokens: minting them on the client, verifying them on the server.

Canonical token shape (authority block, signed with the user's private key)::

    user("alice");
    expires(2026-11-22T01:00:00Z);

optionally followed by attenuation blocks anyone holding the token may append,
e.g. ``check if operation("read");`` for a read-only token.

Finding the key. The server learns who sent a token only from the token, and a
biscuit is verified against one root key. biscuit-python 0.4 offers a root key
id (``set_root_key_id`` / a ``kid -> PublicKey`` provider), but it is an
unsigned 32-bit number: it would need a numeric id per user allocated by the
store, handed to every client and set by every token tool (biscuit-cli tokens
would need ``--root-key-id``). Trying every registered key costs a signature
check per user. So the verifier reads the user name from the *unverified*
authority block (``UnverifiedBiscuit``) only to pick the candidate key, then
verifies the signature with that key, and then takes the identity again from
the now verified authority block through an authorizer query and requires it
to be exactly that one name. A forged name therefore only selects a key the
signature will not verify with; identity never comes from unverified data or
from attenuation blocks (the authorizer does not trust their facts).

Expiry. A token must carry exactly one ``expires(<date>)`` fact in its
authority block; the server refuses tokens without one (they would never
expire), tokens past it (beyond the clock skew) and tokens reaching further
ahead than the maximum lifetime. The authorizer also enforces it in datalog
(``check if expires($e), time($t), $t < $e``) so the rule holds even if the
Python pre-check were bypassed.

Operations. The authorizer supplies ``operation("read")`` for GET/HEAD/OPTIONS
and ``operation("write")`` otherwise, plus ``method(...)`` and ``path(...)``,
so attenuation blocks can restrict a token to reads or to a path prefix.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from biscuit_auth import (
    AuthorizationError,
    AuthorizerBuilder,
    Biscuit,
    BiscuitBuilder,
    BiscuitBuildError,
    BiscuitValidationError,
    BlockBuilder,
    DataLogError,
    Fact,
    KeyPair,
    PrivateKey,
    PublicKey,
    Rule,
    UnverifiedBiscuit,
)

from wattvisor.auth.errors import (
    InvalidTTL,
    TokenCheckFailed,
    TokenExpired,
    TokenLifetimeTooLong,
    TokenMalformed,
    TokenNoExpiry,
    TokenNoUser,
    TokenSignatureInvalid,
    TokenUserMismatch,
)
from wattvisor.auth.policy import Principal
from wattvisor.auth.users import (
    USER_NAME_PATTERN,
    RegisteredUser,
    UserLookup,
    validate_user_name,
)

log = logging.getLogger(__name__)

Operation = Literal["read", "write"]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_CHECK = 'check if operation("read")'
MAX_TOKEN_CHARS = 16_384
SIGNATURE_CACHE_SIZE = 4_096
"""Tokens whose signature was checked against their user's key, remembered (LRU)."""
AUTHORIZATION_CACHE_SIZE = 4_096
"""Requests (token, operation, method, path) a token was authorized for, remembered (LRU)."""
DEFAULT_CLOCK_SKEW = timedelta(seconds=60)
DEFAULT_MAX_TTL = timedelta(days=30)

_TTL = re.compile(r"(\d+)([smhdw])")
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TTL_FORMS = "a whole number followed by s, m, h, d or w, e.g. 90s, 30m, 1h, 7d, 2w"
# How biscuit prints the fact the minting code writes; only used to pick a candidate key.
_USER_LINE = re.compile(r'^user\("([^"\\]*)"\);$', re.MULTILINE)
_ANY_USER_FACT = re.compile(r"^\s*user\(", re.MULTILINE)
_NOBODY_KEY: PublicKey = KeyPair().public_key
"""Checked against when a token names no registered user, so that such a token costs the
same signature check as a known user's, and timing does not tell the two apart either."""
_READS_CLOCK = re.compile(r"\btime\s*\(")
"""A block naming the ``time`` predicate: its checks can pass now and fail later."""
_FAILED_CHECK = re.compile(r"Check n°\d+ in (?:block n°\d+|authorizer): .*?(?=, Check n°|$)")


def operation_for_method(method: str) -> Operation:
    """``read`` for methods that change nothing (GET, HEAD, OPTIONS), else ``write``."""
    return "read" if method.upper() in READ_METHODS else "write"


def parse_ttl(text: str, *, maximum: timedelta | None = None) -> timedelta:
    """``30m``, ``1h``, ``7d``... as a timedelta; anything else names itself and the forms."""
    match = _TTL.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None:
        raise InvalidTTL(f"token lifetime {text!r} is not accepted; use {_TTL_FORMS}")
    ttl = timedelta(seconds=int(match.group(1)) * _TTL_UNITS[match.group(2)])
    if ttl <= timedelta(0):
        raise InvalidTTL(f"token lifetime {text!r} must be longer than zero; use {_TTL_FORMS}")
    if maximum is not None and ttl > maximum:
        raise InvalidTTL(
            f"token lifetime {text!r} exceeds the maximum of {format_ttl(maximum)} "
            "(auth.max_token_ttl_s); ask for a shorter one"
        )
    return ttl


def format_ttl(ttl: timedelta) -> str:
    """The shortest exact ``parse_ttl`` form of ``ttl`` (``86400 s`` -> ``1d``)."""
    seconds = int(ttl.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _TTL_UNITS[unit] == 0:
            return f"{seconds // _TTL_UNITS[unit]}{unit}"
    return f"{seconds}s"


# biscuit's default budget is 1 ms of wall time per evaluation: a busy host (the GIL
# held by another thread, two cores shared with guests) exceeds it and refuses valid
# tokens. Facts and iterations stay at their defaults, which bound a hostile token.
AUTHORIZER_MAX_TIME = timedelta(milliseconds=250)


def _authorizer_limits(builder: AuthorizerBuilder) -> object:
    # limits()/set_limits() exist in biscuit-python 0.4 but not in its type stubs.
    limits = builder.limits()  # type: ignore[attr-defined]
    limits.max_time = AUTHORIZER_MAX_TIME
    return limits


def utcnow() -> datetime:
    """The current time in UTC (the default clock of the verifier)."""
    return datetime.now(UTC)


def mint_token(
    private_key: PrivateKey,
    user: str,
    ttl: timedelta,
    *,
    read_only: bool = False,
    now: datetime | None = None,
) -> str:
    """A base64 biscuit for ``user`` signed with ``private_key``, valid for ``ttl``.

    ``read_only`` appends an attenuation block ``check if operation("read")``, the
    same block a holder could append offline to narrow a token they already have.
    """
    validate_user_name(user)
    if ttl <= timedelta(0):
        raise InvalidTTL(f"token lifetime {ttl} must be longer than zero")
    issued = (now or utcnow()).astimezone(UTC).replace(microsecond=0)
    builder = BiscuitBuilder(
        "user({user}); expires({expires});", {"user": user, "expires": issued + ttl}
    )
    token = builder.build(private_key)
    if read_only:
        token = attenuate(token, READ_ONLY_CHECK)
    return token.to_base64()


def attenuate(token: Biscuit, datalog: str) -> Biscuit:
    """``token`` with one more block holding ``datalog`` (checks narrowing what it allows)."""
    return token.append(BlockBuilder(datalog))


@dataclass(frozen=True)
class VerifiedToken:
    """What a successful verification yields: who sent it and until when the token lives."""

    principal: Principal
    expires: datetime
    blocks: int


class TokenVerifier:
    """Checks a bearer token and returns the registered user behind it.

    ``lookup_user`` is the registry (the store's user table); it decides role and
    project.
    ``clock`` exists for tests and benchmarks that need a fixed "now".
    """

    def __init__(
        self,
        lookup_user: UserLookup,
        *,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        max_ttl: timedelta = DEFAULT_MAX_TTL,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if clock_skew < timedelta(0):
            raise ValueError(f"clock skew {clock_skew} must not be negative")
        if max_ttl <= timedelta(0):
            raise ValueError(f"maximum token lifetime {max_ttl} must be positive")
        self._lookup = lookup_user
        self._skew = clock_skew
        self._max_ttl = max_ttl
        self._clock = clock
        # token -> (user it names, the public key it verified with, the verified biscuit).
        # Parsing and the Ed25519 check are a pure function of token and key, and they
        # were half the cost of a verification; the user is still looked up, and the
        # authorizer still runs, on every request.
        self._signatures: OrderedDict[str, tuple[str, str, Biscuit]] = OrderedDict()
        self._signatures_lock = threading.Lock()
        # (token, operation, method, path) -> (the key it verified with, its expiry), for
        # authorizations that passed. Building the authorizer and running its datalog
        # was most of what a verification still cost with the signature remembered. The
        # outcome depends on the token, the request and the clock; only tokens whose
        # datalog never reads the clock are remembered, and their expiry and lifetime
        # are checked again on every request. The user is still looked up each time (a
        # removed or re-keyed user is refused on the very next request).
        self._authorized: OrderedDict[
            tuple[str, str, str | None, str | None], tuple[str, datetime]
        ] = OrderedDict()
        self._authorized_lock = threading.Lock()

    def verify(
        self,
        token: str,
        *,
        operation: Operation,
        method: str | None = None,
        path: str | None = None,
    ) -> VerifiedToken:
        """Verify ``token`` for one request; raise an :class:`AuthError` subclass if refused."""
        user, biscuit = self._signed(token)
        name = user.name

        now = self._clock().astimezone(UTC)
        lenient_now = now - self._skew
        request = (token, operation, method.upper() if method is not None else None, path)
        with self._authorized_lock:
            earlier = self._authorized.get(request)
            if earlier is not None:
                self._authorized.move_to_end(request)
        if earlier is not None and earlier[0] == user.public_key:
            # The same token, request and key as an authorization that passed: only the
            # clock moved, and this token's datalog never reads it (see _time_free).
            expires = earlier[1]
            try:
                self._check_lifetime(name, expires, now)
            except (TokenExpired, TokenLifetimeTooLong):
                with self._authorized_lock:
                    self._authorized.pop(request, None)
                raise
            return VerifiedToken(
                principal=Principal(user=user.name, project=user.project, role=user.role),
                expires=expires,
                blocks=biscuit.block_count(),
            )
        source = (
            "time({now}); operation({operation});\n"
            "check if expires($e), time($t), $t < $e;\n"
            "allow if user({user});"
        )
        params: dict[str, object] = {"now": lenient_now, "operation": operation, "user": name}
        if method is not None:
            source += " method({method});"
            params["method"] = method.upper()
        if path is not None:
            source += " path({path});"
            params["path"] = path
        try:
            builder = AuthorizerBuilder(source, params)
            builder.set_limits(_authorizer_limits(builder))  # type: ignore[attr-defined]
            authorizer = builder.build(biscuit)
            # Identity and expiry from the verified authority block only (the authorizer
            # does not trust facts of attenuation blocks).
            users = [f.terms[0] for f in authorizer.query(Rule("u($u) <- user($u)"))]
            expiry_facts = authorizer.query(Rule("e($e) <- expires($e)"))
        except (AuthorizationError, BiscuitBuildError, DataLogError, ValueError) as exc:
            raise TokenMalformed(
                f"token for user {name!r} cannot be evaluated (too large or invalid datalog): "
                f"{exc}",
                user=name,
            ) from exc
        if users != [name]:
            raise TokenUserMismatch(
                f"the verified authority block names {sorted(map(str, users))!r}, but a token "
                f"signed with {name!r}'s key must name exactly that one user",
                user=name,
            )
        expires = self._expiry(expiry_facts, name)
        self._check_lifetime(name, expires, now)
        try:
            authorizer.authorize()
        except AuthorizationError as exc:
            failed = _FAILED_CHECK.findall(str(exc)) or [str(exc)]
            raise TokenCheckFailed(
                f"token for user {name!r} refuses this {operation} request: " + "; ".join(failed),
                user=name,
                operation=operation,
                failed_checks=failed,
            ) from exc
        # Rules in the authority block are trusted; a token deriving further identities
        # is refused. biscuit-python 0.4 already shows derived facts to the query above,
        # its documentation promises them only after authorize(): ask again to be sure.
        derived = [f.terms[0] for f in authorizer.query(Rule("u($u) <- user($u)"))]
        if derived != [name]:
            raise TokenUserMismatch(
                f"token for user {name!r} derives other users {sorted(map(str, derived))!r} "
                "by rule; an authority block must name exactly one user",
                user=name,
            )
        if _time_free(biscuit):
            with self._authorized_lock:
                self._authorized[request] = (user.public_key, expires)
                if len(self._authorized) > AUTHORIZATION_CACHE_SIZE:
                    self._authorized.popitem(last=False)
        return VerifiedToken(
            principal=Principal(user=user.name, project=user.project, role=user.role),
            expires=expires,
            blocks=biscuit.block_count(),
        )

    def _check_lifetime(self, name: str, expires: datetime, now: datetime) -> None:
        """Refuse a token past its expiry (beyond the clock skew) or reaching further ahead
        than the maximum lifetime, as of ``now``."""
        if expires <= now - self._skew:
            raise TokenExpired(
                f"token for user {name!r} expired at {_iso(expires)} (server time "
                f"{_iso(now)}, clock skew allowed {int(self._skew.total_seconds())} s); "
                "create a new token",
                user=name,
                expired_at=_iso(expires),
            )
        latest = now + self._max_ttl + self._skew
        if expires > latest:
            raise TokenLifetimeTooLong(
                f"token for user {name!r} expires at {_iso(expires)}, later than the "
                f"maximum lifetime allows ({format_ttl(self._max_ttl)}, i.e. {_iso(latest)})",
                user=name,
                expires_at=_iso(expires),
                max_ttl_s=int(self._max_ttl.total_seconds()),
            )

    def _signed(self, token: str) -> tuple[RegisteredUser, Biscuit]:
        """The registered user ``token`` names, and the token with its signature checked
        against that user's key as registered now."""
        with self._signatures_lock:
            known = self._signatures.get(token)
            if known is not None:
                self._signatures.move_to_end(token)
        if known is not None:
            name, key, cached = known
            user = self._lookup(name)
            if user is not None and user.public_key == key:
                return user, cached
            with self._signatures_lock:  # re-keyed or removed since: forget that check
                self._signatures.pop(token, None)
        unverified = self._parse(token)
        name = self._claimed_user(unverified)
        user = self._lookup(name)
        try:
            biscuit = unverified.verify(user.key if user is not None else _NOBODY_KEY)
        except BiscuitValidationError:
            biscuit = None
        if user is None or biscuit is None:
            if user is None:
                log.debug("token names user %r, who is not registered", name)
            raise TokenSignatureInvalid(
                f"token for user {name!r} does not verify with a key registered for that "
                "user on this server; it was signed with another key, altered, or names no "
                "registered user",
                user=name,
            )
        with self._signatures_lock:
            self._signatures[token] = (name, user.public_key, biscuit)
            if len(self._signatures) > SIGNATURE_CACHE_SIZE:
                self._signatures.popitem(last=False)
        return user, biscuit

    @staticmethod
    def _parse(token: str) -> UnverifiedBiscuit:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenMalformed(
                f"token of {len(token)} characters is not accepted; a biscuit token is "
                f"non-empty url-safe base64 of at most {MAX_TOKEN_CHARS} characters",
            )
        try:
            return UnverifiedBiscuit.from_base64(token)
        except (BiscuitValidationError, ValueError) as exc:
            raise TokenMalformed(
                f"token is not a biscuit token (url-safe base64 of a serialized biscuit): {exc}",
                reason=str(exc),
            ) from exc

    @staticmethod
    def _claimed_user(unverified: UnverifiedBiscuit) -> str:
        authority = unverified.block_source(0)
        names = sorted(set(_USER_LINE.findall(authority)))
        if not names:
            elsewhere = [
                i
                for i in range(1, unverified.block_count())
                if _ANY_USER_FACT.search(unverified.block_source(i))
            ]
            hint = (
                f"; user() appears only in attenuation block(s) {elsewhere}, which are never "
                "trusted for identity"
                if elsewhere
                else ""
            )
            raise TokenNoUser(
                'token authority block holds no user("<name>") fact' + hint,
                attenuation_blocks_with_user=elsewhere,
            )
        if len(names) > 1:
            raise TokenUserMismatch(
                f"token authority block names several users {names!r}; exactly one is accepted",
            )
        name: str = names[0]
        if not USER_NAME_PATTERN.fullmatch(name):
            raise TokenMalformed(f"token names user {name!r}, which is not a valid user name")
        return name

    @staticmethod
    def _expiry(facts: Sequence[Fact], name: str) -> datetime:
        values: list[object] = [f.terms[0] if f.terms else None for f in facts]
        if not values:
            raise TokenNoExpiry(
                f"token for user {name!r} carries no expires(<date>) fact in its authority "
                "block; tokens must expire (create one with `wattvisor token create --ttl 1h`)",
                user=name,
            )
        if len(values) > 1 or not isinstance(values[0], datetime):
            raise TokenMalformed(
                f"token for user {name!r} must carry exactly one expires(<date>) fact, "
                f"found {[str(v) for v in values]!r}",
                user=name,
            )
        value = values[0]
        return value if value.tzinfo else value.replace(tzinfo=UTC)


def _time_free(biscuit: Biscuit) -> bool:
    """Whether no block of ``biscuit`` reads the ``time`` fact, so that its authorization
    for a given request cannot change while the clock alone moves (its expiry is checked
    apart from the datalog). A block that merely mentions ``time(`` in a string is
    counted as reading it: that only costs a remembered answer."""
    return not any(
        _READS_CLOCK.search(biscuit.block_source(i)) for i in range(biscuit.block_count())
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
