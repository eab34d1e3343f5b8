"""The host agent's side of the trust with its controllers.

The agent keeps, under its data directory:

* ``host.key`` (0600) and ``host.key.pub``: the host's own key pair, made by the host
  before it joins; the private half never leaves the host. It signs the agent's calls
  to the controller (:meth:`AgentCredentials.host_token`).
* ``trust.json``: what the controller answered at the join and at every heartbeat:
  the host id, the cluster id and the cluster's accepted public keys (with until when
  a previous key is still accepted). The agent checks every call a controller makes
  against these (:func:`make_controller_dependency`, the ``require_controller`` of the
  agent's HTTP app).

A user token (a member's or an admin's) is never accepted by an agent: the agent's
endpoints drive the host itself, and only the cluster's controllers may call them.
"""

import json
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
from biscuit_auth import KeyPair, PrivateKey
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from wattvisor.auth.errors import AuthError, KeyFileError, TokenForeignCluster
from wattvisor.auth.fastapi import AuthenticationFailed, bearer_scheme, bearer_token
from wattvisor.auth.keys import (
    KeyFiles,
    _create_exclusive,
    _replace_file,
    _sync_directory,
    create_key_pair,
    load_private_key,
    public_key_of,
    public_key_path,
)
from wattvisor.auth.service_tokens import (
    DEFAULT_SERVICE_TTL,
    ServiceTokenVerifier,
    TrustedKey,
    VerifiedServiceToken,
    mint_host_token,
)
from wattvisor.auth.tokens import DEFAULT_CLOCK_SKEW, utcnow

HOST_KEY_FILE = "host.key"
TRUST_FILE = "trust.json"


class NotJoined(RuntimeError):
    """The agent has not joined a cluster yet (no ``trust.json``)."""


class JoinFailed(RuntimeError):
    """The controller refused the join; the message is the controller's reason."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class ClusterTrust:
    """Which cluster this host belongs to and the keys its controllers sign with."""

    host_id: str
    cluster_id: str
    keys: tuple[TrustedKey, ...]
    controller_url: str

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], controller_url: str) -> "ClusterTrust":
        """From a join, heartbeat or rotation answer of the controller."""
        return cls(
            host_id=str(answer["host_id"]),
            cluster_id=str(answer["cluster_id"]),
            keys=tuple(
                TrustedKey(
                    str(k["public_key"]),
                    _parse_time(k["valid_until"]) if k.get("valid_until") else None,
                )
                for k in answer["cluster_keys"]
            ),
            controller_url=controller_url,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "host_id": self.host_id,
            "cluster_id": self.cluster_id,
            "controller_url": self.controller_url,
            "cluster_keys": [
                {
                    "public_key": k.public_key,
                    "valid_until": k.valid_until.isoformat() if k.valid_until else None,
                }
                for k in self.keys
            ],
        }


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class AgentCredentials:
    """The host key pair and the cluster trust of one agent, kept under ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Callable[[], datetime] = utcnow,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    ) -> None:
        self.data_dir = data_dir
        self._clock = clock
        self._skew = clock_skew
        self._lock = threading.Lock()
        self._trust: ClusterTrust | None = None
        self._key: PrivateKey | None = None
        self._place: tuple[str, tuple[str, ...]] | None = None
        # (key, host id, lifetime, token, renew at): a host token is reused until half its
        # lifetime has passed, so the controller's signature cache recognises it and a call
        # costs neither a signature here nor an Ed25519 check there.
        self._token: tuple[PrivateKey, str, timedelta, str, datetime] | None = None

    @property
    def key_path(self) -> Path:
        return self.data_dir / HOST_KEY_FILE

    @property
    def trust_path(self) -> Path:
        return self.data_dir / TRUST_FILE

    # -- the host key --------------------------------------------------------------------

    def ensure_host_key(self) -> KeyFiles:
        """The host's key pair, made (0600, in a 0700 directory) when missing."""
        if self.key_path.exists():
            key = self.private_key()
            public = public_key_of(key)
            return KeyFiles(self.key_path, public_key_path(self.key_path), public, created=False)
        files = create_key_pair(self.key_path, dir_mode=0o700)
        return files

    def private_key(self) -> PrivateKey:
        with self._lock:
            if self._key is None:
                self._key = load_private_key(self.key_path)
            return self._key

    def public_key(self) -> str:
        return public_key_of(self.private_key())

    def host_token(self, ttl: timedelta = DEFAULT_SERVICE_TTL) -> str:
        """A ``host("<id>")`` token for calls to the controller: minted once and reused
        until half its lifetime has passed, or at once after the host key changed."""
        key = self.private_key()
        host_id = self.trust().host_id
        now = self._clock()
        with self._lock:
            cached = self._token
        if (
            cached is not None
            and cached[0] is key
            and cached[1] == host_id
            and cached[2] == ttl
            and now < cached[4]
        ):
            return cached[3]
        token = mint_host_token(key, host_id, ttl, now=now)
        with self._lock:
            self._token = (key, host_id, ttl, token, now + ttl / 2)
        return token

    # -- the cluster trust ---------------------------------------------------------------

    def trust(self) -> ClusterTrust:
        """What the agent learnt at its join and last heartbeat; :class:`NotJoined` before."""
        with self._lock:
            if self._trust is not None:
                return self._trust
        try:
            raw = json.loads(self.trust_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise NotJoined(
                f"this agent has not joined a cluster ({str(self.trust_path)!r} is missing); "
                "join with `wattvisor agent --controller URL --join-token TOKEN`"
            ) from exc
        trust = ClusterTrust.from_answer(raw, str(raw.get("controller_url", "")))
        with self._lock:
            self._trust = trust
        return trust

    def place(self) -> tuple[str, tuple[str, ...]] | None:
        """The host's name and geolocation pairs as the controller last answered them
        (join or heartbeat); None before any answer said."""
        with self._lock:
            return self._place

    def learn(self, answer: Mapping[str, Any], controller_url: str | None = None) -> ClusterTrust:
        """Keep the cluster keys of a controller's answer (join, heartbeat, rotation).

        The answer comes over a connection the agent opened to its controller; its host
        id and cluster id must be the ones the agent joined with."""
        try:
            known: ClusterTrust | None = self.trust()
        except NotJoined:
            known = None
        url = controller_url or (known.controller_url if known else "")
        trust = ClusterTrust.from_answer(answer, url)
        if known is not None and (trust.cluster_id, trust.host_id) != (
            known.cluster_id,
            known.host_id,
        ):
            raise TokenForeignCluster(
                f"the controller answered for cluster {trust.cluster_id} host {trust.host_id}, "
                f"but this agent joined cluster {known.cluster_id} as host {known.host_id}",
            )
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _replace_file(self.trust_path, json.dumps(trust.to_json(), indent=2) + "\n", 0o600)
        place = _place_of(answer)
        with self._lock:
            self._trust = trust
            if place is not None:
                self._place = place
        return trust

    def controller_verifier(self) -> ServiceTokenVerifier:
        """Checks controller tokens against the cluster this agent joined."""

        def keys(cluster_id: str) -> Sequence[TrustedKey]:
            trust = self.trust()
            if cluster_id != trust.cluster_id:
                raise TokenForeignCluster(
                    f"controller token is for cluster {cluster_id!r}, but this host joined "
                    f"cluster {trust.cluster_id!r}",
                    token_cluster=cluster_id,
                    cluster=trust.cluster_id,
                )
            return trust.keys

        return ServiceTokenVerifier(
            "controller", keys, clock=self._clock, clock_skew=self._skew, where="this agent"
        )

    # -- calls to the controller ---------------------------------------------------------

    def heartbeat(
        self,
        client: httpx.Client,
        ip_addresses: Sequence[str] | None = None,
        domain_states: Mapping[str, str] | None = None,
    ) -> ClusterTrust:
        """Tell the controller this host is alive (and its IP addresses now, which refresh
        its geolocation when they changed, and its domain states when they changed);
        keep the cluster keys it answers."""
        trust = self.trust()
        body: dict[str, object] = {}
        if ip_addresses is not None:
            body["ip_addresses"] = list(ip_addresses)
        if domain_states is not None:
            body["domain_states"] = dict(domain_states)
        answer = _call(
            client,
            "POST",
            f"{trust.controller_url.rstrip('/')}/v1/hosts/{trust.host_id}/heartbeat",
            self.host_token(),
            body or None,
        )
        return self.learn(answer)

    def rotate_host_key(self, client: httpx.Client, *, revoke_old: bool = False) -> KeyFiles:
        """Make a new host key and register it, signed with the current one.

        The new private key is written beside the old one first and moved into place
        only once the controller accepted it; if the answer is lost, the old key keeps
        working for the controller's grace period and the staged key is left to retry.
        """
        trust = self.trust()
        pair = KeyPair()
        public = repr(pair.public_key)
        staged = self.key_path.with_name(f".{HOST_KEY_FILE}.{secrets.token_hex(6)}.new")
        _create_exclusive(staged, repr(pair.private_key) + "\n", 0o600)
        try:
            answer = _call(
                client,
                "POST",
                f"{trust.controller_url.rstrip('/')}/v1/hosts/{trust.host_id}/credentials",
                self.host_token(),
                {"public_key": public, "revoke_old": revoke_old},
            )
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        try:
            os.replace(staged, self.key_path)
            _sync_directory(self.key_path.parent)
            _replace_file(public_key_path(self.key_path), public + "\n", 0o644)
        except OSError as exc:
            raise KeyFileError(
                f"the controller holds the new host key, but {str(self.key_path)!r} could "
                f"not be replaced ({exc.strerror}); the new key is in {str(staged)!r}"
            ) from exc
        with self._lock:
            self._key = pair.private_key
            self._token = None
        self.learn(answer)
        return KeyFiles(self.key_path, public_key_path(self.key_path), public, created=True)


def _place_of(answer: Mapping[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    name, pairs = answer.get("host_name"), answer.get("geolocation")
    if not isinstance(name, str) or not isinstance(pairs, list):
        return None
    return name, tuple(str(p) for p in pairs)


def join_cluster(
    credentials: AgentCredentials,
    client: httpx.Client,
    controller_url: str,
    join_token: str,
    facts: Mapping[str, Any],
) -> ClusterTrust:
    """Join the cluster of the controller at ``controller_url`` with ``join_token``.

    ``facts`` are the host's id, name, libvirt URI, traits, inventory, energy source and
    addresses; the host's public key is added here (the key is made if missing).
    """
    files = credentials.ensure_host_key()
    body = {**facts, "public_key": files.public_key}
    answer = _call(client, "POST", f"{controller_url.rstrip('/')}/v1/hosts/join", join_token, body)
    return credentials.learn(answer, controller_url)


def _call(
    client: httpx.Client,
    method: str,
    url: str,
    token: str,
    body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    response = client.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"})
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            message, code = str(error["message"]), str(error["code"])
        except (ValueError, KeyError, TypeError):
            message, code = f"HTTP {response.status_code}: {response.text[:200]}", "http_error"
        raise JoinFailed(
            f"{message} ({code}, HTTP {response.status_code})", response.status_code, code
        )
    answer: dict[str, Any] = response.json()
    return answer


def make_controller_dependency(
    credentials: AgentCredentials,
) -> Callable[..., Awaitable[VerifiedServiceToken]]:
    """``require_controller``: a FastAPI dependency for every endpoint of the agent.

    It admits controller tokens of the cluster this host joined, signed with a cluster
    key that is still accepted; anything else (a user token, admin or member; a host
    token; another cluster's controller) is a 401 naming the reason.
    """
    verifier = credentials.controller_verifier()

    async def require_controller(
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> VerifiedServiceToken:
        try:
            return verifier.verify(bearer_token(request.headers.get("authorization")))
        except AuthError as exc:
            raise AuthenticationFailed(exc) from exc
        except NotJoined as exc:
            raise AuthenticationFailed(AuthError(str(exc))) from exc

    return require_controller
