"""The cluster key: the key pair every controller of one cluster shares.

It signs join tokens and the controllers' calls to host agents. Its private half is a
file on each controller (``<data_dir>/cluster.key``, 0600, made on first start like the
admin key, copied by the operator to further controllers); its public halves and the
cluster's id live in the store, which every controller shares, and reach the agents
when they join and with every heartbeat answer.

Rotation (:func:`rotate_cluster_key`) writes the new private key beside the old one,
registers its public half (the old one stays accepted for a grace period, so agents
and controllers that have not caught up keep working), and only then replaces the
file, as the admin key rotation does. A controller process that loaded the old key
re-reads the file when it sees the store's current key change (:class:`ClusterSigner`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from biscuit_auth import PrivateKey

from wattvisor.auth.errors import KeyFileError
from wattvisor.auth.keys import (
    KeyFiles,
    ensure_admin_key,
    load_private_key,
    public_key_of,
    rotate_key_file,
)
from wattvisor.auth.service_tokens import DEFAULT_SERVICE_TTL, mint_controller_token
from wattvisor.auth.tokens import utcnow


def ensure_cluster_key(path: Path) -> KeyFiles:
    """The cluster key pair at ``path``, created when missing (``created`` says which).

    Creation is exclusive, so two processes starting at once end up with one key.
    """
    return ensure_admin_key(path)


def rotate_cluster_key(path: Path, register: Callable[[str], object]) -> KeyFiles:
    """Replace the cluster key file at ``path``; ``register(public_key)`` records the new
    public key in the store (retiring the old one after its grace period). The steps
    and their order are the admin key's (:func:`~wattvisor.auth.keys.rotate_key_file`)."""
    return rotate_key_file(
        path, register, what="cluster key",
        missing="it is created when the controller first starts (`wattvisor up`) with this "
        "data_dir",
    )  # fmt: skip


class ClusterSigner:
    """Signs with this controller's cluster key file, re-read when the cluster's current
    key (``current_public_key()``, from the store) is no longer the one loaded.

    Controller tokens are minted once and reused until half their lifetime has passed:
    a call to an agent then costs no signature.
    """

    def __init__(
        self,
        path: Path,
        current_public_key: Callable[[], str],
        cluster_id: Callable[[], str],
        *,
        token_ttl: timedelta = DEFAULT_SERVICE_TTL,
    ) -> None:
        self.path = path
        self._current = current_public_key
        self._cluster_id = cluster_id
        self._ttl = token_ttl
        self._lock = threading.Lock()
        self._loaded: tuple[str, PrivateKey] | None = None
        self._token: tuple[str, str, float] | None = None  # (public key, token, renew at)

    def private_key(self) -> PrivateKey:
        """The cluster's current private key; :class:`KeyFileError` when this controller's
        file holds another key (rotated on another controller and not copied here)."""
        wanted = self._current()
        with self._lock:
            if self._loaded is not None and self._loaded[0] == wanted:
                return self._loaded[1]
            key = load_private_key(self.path)
            public = public_key_of(key)
            if public != wanted:
                raise KeyFileError(
                    f"the cluster key in {str(self.path)!r} ({public[:24]}...) is not the "
                    f"cluster's current key ({wanted[:24]}...); it was rotated on another "
                    "controller: copy that controller's cluster.key here (mode 0600)"
                )
            self._loaded = (public, key)
            self._token = None
            return key

    def controller_token(self) -> str:
        """A ``controller("<cluster id>")`` token for calls to agents, reused while young."""
        key = self.private_key()
        now = utcnow()
        with self._lock:
            loaded = self._loaded
            cached = self._token
            if (
                cached is not None
                and loaded is not None
                and cached[0] == loaded[0]
                and now.timestamp() < cached[2]
            ):
                return cached[1]
        token = mint_controller_token(key, self._cluster_id(), self._ttl, now=now)
        renew_at = now.timestamp() + self._ttl.total_seconds() / 2
        with self._lock:
            if self._loaded is not None:
                self._token = (self._loaded[0], token, renew_at)
        return token
