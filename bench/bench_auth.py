"""Token verification cost per request (µs), the way the API dependency runs it.

Figures: the full ``TokenVerifier.verify`` (unverified peek, signature check,
authorizer with expiry/operation checks, identity query) for a plain and a
read-only (two-block) token, against a registry of 10,000 users; its stages;
the store-backed user lookup the API uses (a cached user, after the check that
no process changed users since; SQLite); and what trying every registered key
would cost instead (the design it avoids).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from biscuit_auth import Biscuit, KeyPair, UnverifiedBiscuit

from support.user_registry import UserRegistry
from wattvisor.auth import RegisteredUser, TokenVerifier, mint_token
from wattvisor.compute.users import UserStore
from wattvisor.store import make_engine, migrate

USERS = 10_000
ITERATIONS = 2_000
WARMUP = 200
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _per_call_us(fn: Callable[[], object], iterations: int = ITERATIONS) -> tuple[float, float]:
    """Median and 95th percentile of one call, in µs, over batches of 20 calls."""
    for _ in range(WARMUP):
        fn()
    batch = 20
    samples = []
    for _ in range(iterations // batch):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - start) / batch * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def run() -> None:
    pairs = [KeyPair() for _ in range(200)]
    registry = UserRegistry(
        RegisteredUser(
            name=f"user{i}",
            project=f"proj{i % 50}",
            role="member",
            public_key=repr(pairs[i % len(pairs)].public_key),
        )
        for i in range(USERS)
    )
    target = 4_321
    keys = pairs[target % len(pairs)]
    name = f"user{target}"
    verifier = TokenVerifier(registry.lookup, clock=lambda: NOW)
    plain = mint_token(keys.private_key, name, timedelta(hours=1), now=NOW)
    read_only = mint_token(keys.private_key, name, timedelta(hours=1), read_only=True, now=NOW)

    rows: list[tuple[str, Callable[[], object]]] = [
        (
            "verify, 1-block token (GET)",
            lambda: verifier.verify(plain, operation="read", method="GET", path="/v1/servers"),
        ),
        (
            "verify, read-only 2-block token (GET)",
            lambda: verifier.verify(read_only, operation="read", method="GET", path="/v1/servers"),
        ),
        (
            "  stage: parse + peek authority block",
            lambda: UnverifiedBiscuit.from_base64(plain).block_source(0),
        ),
        ("  stage: parse + signature check", lambda: Biscuit.from_base64(plain, keys.public_key)),
    ]
    print(f"   registry of {USERS} users; token {len(plain)} chars ({len(read_only)} read-only)")
    for label, fn in rows:
        median, p95 = _per_call_us(fn)
        print(f"   {label:<42} median {median:8.1f} µs   p95 {p95:8.1f} µs")
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{scratch}/bench.db")
        migrate(engine)
        store = UserStore(engine)
        store.register(name, "proj", "member", repr(keys.public_key))
        stored = TokenVerifier(store.lookup, clock=lambda: NOW)
        for label, fn in (
            ("user lookup, store-backed (SQLite)", lambda: store.lookup(name)),
            ("verify with the store lookup (GET)",
             lambda: stored.verify(plain, operation="read", method="GET", path="/v1/servers")),
        ):  # fmt: skip
            median, p95 = _per_call_us(fn)
            print(f"   {label:<42} median {median:8.1f} µs   p95 {p95:8.1f} µs")
        engine.dispose()
    single, _ = _per_call_us(lambda: Biscuit.from_base64(plain, keys.public_key), 400)
    print(
        f"   (trying every key instead: ~{single * USERS / 1000:.0f} ms per request "
        f"for {USERS} users, worst case)"
    )


if __name__ == "__main__":
    run()
