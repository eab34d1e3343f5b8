"""One served wattvisor API per Placement gabbi file: a fresh store, an admin and a member.

The gabbi files authenticate with ``x-auth-token: admin`` (or ``user``), as Placement's
``noauth2`` test set-up takes them; here those names become real biscuit tokens of a
registered admin and a registered member, so every request passes our own token check.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
from biscuit_auth import KeyPair

from api.served_app import serving
from support.user_registry import UserRegistry
from wattvisor.api import create_app
from wattvisor.auth import RegisteredUser, mint_token
from wattvisor.auth.fastapi import Authenticator
from wattvisor.config.settings import Settings
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

TOKEN_TTL = timedelta(hours=2)


@dataclass(frozen=True)
class ServedPlacement:
    port: int
    tokens: dict[str, str]
    """Token by the name the gabbi files use (``admin``, ``user``)."""

    def client(self) -> httpx.Client:
        """An admin client of ``/placement`` at the newest microversion (for fixtures)."""
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}/placement",
            headers={
                "X-Auth-Token": self.tokens["admin"],
                "OpenStack-API-Version": "placement latest",
            },
            timeout=30,
        )


@contextlib.contextmanager
def served_placement(cors_allowed_origins: Sequence[str] = ()) -> Iterator[ServedPlacement]:
    """The real API with a freshly migrated SQLite store, on a free loopback port."""
    with tempfile.TemporaryDirectory(prefix="wv-gabbi-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'placement.db'}")
        try:
            migrate(engine)
            admin_keys, member_keys = KeyPair(), KeyPair()
            registry = UserRegistry(
                [
                    RegisteredUser("gabbi-admin", "admin-project", "admin",
                                   repr(admin_keys.public_key)),
                    RegisteredUser("gabbi-user", "user-project", "member",
                                   repr(member_keys.public_key)),
                ]
            )  # fmt: skip
            app = create_app(
                Settings(
                    data_dir=Path(tmp), api={"cors_allowed_origins": list(cors_allowed_origins)}
                ),
                placement=Placement(engine),
                authenticator=Authenticator(registry.lookup),
            )
            tokens = {
                "admin": mint_token(admin_keys.private_key, "gabbi-admin", TOKEN_TTL),
                "user": mint_token(member_keys.private_key, "gabbi-user", TOKEN_TTL),
            }
            with serving(app) as port:
                yield ServedPlacement(port, tokens)
        finally:
            engine.dispose()
