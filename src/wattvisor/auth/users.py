"""Who may hold tokens: a user name, its project, its role and its Ed25519 public key.

The server's registry (the store's user table) is the only source of role and
project; a token proves *which* user sent it and nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

from biscuit_auth import PublicKey

from wattvisor.auth.errors import InvalidPublicKey, InvalidUserName

Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = get_args(Role)

# Also keeps names safe inside datalog strings (biscuit prints them unescaped).
USER_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_PUBLIC_KEY_PREFIX = "ed25519/"
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def validate_user_name(name: str) -> str:
    """``name`` unchanged if it is an accepted user name, else :class:`InvalidUserName`."""
    if not isinstance(name, str) or not USER_NAME_PATTERN.fullmatch(name):
        raise InvalidUserName(
            f"user name {name!r} is not accepted; use 1-64 characters from "
            "A-Z a-z 0-9 _ . @ -, starting with a letter or digit"
        )
    return name


def normalize_public_key(text: str) -> str:
    """The canonical ``ed25519/<64 hex>`` form of a public key given as that or as bare hex.

    Bare hex is what ``biscuit keypair`` and OpenNebula's driver print, so it is
    accepted too; anything else (PEM, a private key) is refused with the forms
    that would be accepted.
    """
    raw = text.strip() if isinstance(text, str) else ""
    body = raw[len(_PUBLIC_KEY_PREFIX) :] if raw.startswith(_PUBLIC_KEY_PREFIX) else raw
    if not _HEX_KEY.fullmatch(body):
        shown = raw if len(raw) <= 80 else raw[:77] + "..."
        if raw.startswith("ed25519-private/"):
            shown = "ed25519-private/<hidden>"
        raise InvalidPublicKey(
            f"public key {shown!r} is not accepted; give an Ed25519 public key as "
            "'ed25519/<64 hex digits>' or as the 64 hex digits alone"
        )
    canonical = _PUBLIC_KEY_PREFIX + body.lower()
    try:
        PublicKey(canonical)
    except ValueError as exc:
        raise InvalidPublicKey(
            f"public key {canonical!r} is not a valid Ed25519 point: {exc}"
        ) from exc
    return canonical


@dataclass(frozen=True)
class RegisteredUser:
    """A user as the server knows it; built by an admin from the user's public key."""

    name: str
    project: str
    role: Role
    public_key: str
    _key: PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_user_name(self.name)
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is not accepted; use 'admin' or 'member'")
        if not isinstance(self.project, str) or not self.project.strip():
            raise ValueError(f"project {self.project!r} must be a non-empty string")
        canonical = normalize_public_key(self.public_key)
        object.__setattr__(self, "public_key", canonical)
        object.__setattr__(self, "_key", PublicKey(canonical))

    @property
    def key(self) -> PublicKey:
        """The parsed key, ready for signature verification (parsed once, at registration)."""
        return self._key


UserLookup = Callable[[str], RegisteredUser | None]
"""``lookup(name)``: the registered user of that name, or None. The store provides one."""
