"""Trust between the controllers and the host agents, kept in the shared store.

:class:`ClusterKeys` is the cluster's identity (its id and public keys, current and in
grace). :class:`HostTrust` hands out single-use join tokens, registers a host that
redeems one (its facts become a placement provider, its public key its credential),
answers the host keys the API's host-token check asks for, rotates them, and answers
heartbeats with what an agent must know to check the controllers' calls.

Single use. A redemption claims its token with one conditional ``UPDATE ... WHERE
used_at IS NULL`` in the same transaction that writes the host, its credential and
its agent record. Of two concurrent redemptions exactly one updates the row (on
PostgreSQL the second waits for the first's row lock and then finds ``used_at`` set);
the other writes nothing. Every refusal happens before or inside that transaction, so
a refused join leaves no host row, no credential and no placement provider.

Keys are looked up on every host call, so they are cached per process and trusted
only while the store's ``host_keys`` / ``cluster_keys`` generation is the one they were
read with (:mod:`wattvisor.store.generations`).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast, overload

from sqlalchemy import Engine, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from wattvisor.auth.cluster_keys import ClusterSigner
from wattvisor.auth.errors import (
    InvalidPublicKey,
    JoinTokenUnknown,
    JoinTokenUsed,
    KeyFileError,
    TokenExpired,
)
from wattvisor.auth.policy import Principal
from wattvisor.auth.service_tokens import (
    UUID_PATTERN,
    ServiceTokenVerifier,
    TrustedKey,
    VerifiedServiceToken,
    join_token_verifier,
    mint_join_token,
)
from wattvisor.auth.tokens import format_ttl, utcnow
from wattvisor.auth.users import normalize_public_key
from wattvisor.compute.errors import Conflict, InvalidRequest, NotFound
from wattvisor.compute.host_geolocation import (
    check_ip_addresses,
    locate,
    looked_up_columns,
    refresh_in,
)
from wattvisor.compute.hosts import placement_inventories
from wattvisor.compute.names import quoted, require_printable
from wattvisor.config.settings import Settings
from wattvisor.geo import GeoDatabase
from wattvisor.host.driver import Inventory
from wattvisor.placement import Placement
from wattvisor.placement.errors import BadRequest as PlacementBadRequest
from wattvisor.placement.errors import Conflict as PlacementConflict
from wattvisor.placement.names import is_custom_name, standard_traits
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import HostRow
from wattvisor.store.generations import (
    CLUSTER_KEYS,
    HOST_KEYS,
    bump_generation,
    current_generation,
    read_generation,
)
from wattvisor.store.trust_tables import (
    ClusterKeyRow,
    HostAgentRow,
    HostCredentialRow,
    JoinTokenRow,
)

log = logging.getLogger(__name__)

_cluster = cast(Table, ClusterKeyRow.__table__)
_join = cast(Table, JoinTokenRow.__table__)
_creds = cast(Table, HostCredentialRow.__table__)
_agents = cast(Table, HostAgentRow.__table__)
_hosts = cast(Table, HostRow.__table__)

ENERGY_SOURCES = ("rapl", "scaphandre", "estimate", "none")
MAX_ADDRESSES = 8
MAX_INVENTORY = 2_147_483_647
"""Placement's limit on an inventory's total."""


@overload
def _aware(moment: datetime) -> datetime: ...
@overload
def _aware(moment: None) -> None: ...
def _aware(moment: datetime | None) -> datetime | None:
    """A stored moment as an aware UTC datetime (SQLite hands them back naive)."""
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the cluster ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterState:
    """The cluster's id and its public keys: the current one first, then those in grace."""

    cluster_id: str
    keys: tuple[TrustedKey, ...]

    @property
    def current(self) -> TrustedKey:
        return self.keys[0]

    def accepted(self, now: datetime) -> tuple[TrustedKey, ...]:
        """The keys a token may be signed with at ``now`` (retired ones dropped)."""
        return tuple(k for k in self.keys if k.valid_at(now))


class ClusterKeys:
    """The cluster identity in the store, cached while its generation holds."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._cached: tuple[int, ClusterState | None] | None = None

    def state(self) -> ClusterState | None:
        """The cluster, or None before any controller started on this store."""
        generation = current_generation(self.engine, CLUSTER_KEYS)
        with self._lock:
            if self._cached is not None and self._cached[0] == generation:
                return self._cached[1]
        with read_transaction(self.engine) as conn:
            generation = read_generation(conn, CLUSTER_KEYS)
            rows = conn.execute(select(_cluster)).all()
        state = _cluster_state(rows)
        with self._lock:
            if self._cached is None or generation >= self._cached[0]:
                self._cached = (generation, state)
        return state

    def require(self) -> ClusterState:
        state = self.state()
        if state is None:
            raise Conflict(
                "this store has no cluster key yet; it is registered when a controller "
                "first starts (`wattvisor up`)"
            )
        return state

    def ensure(self, public_key: str) -> ClusterState:
        """Register ``public_key`` as the cluster's key if the store has none yet (a new
        cluster, with a new id); either way return the cluster.

        The generation row is locked first, so that two controllers starting on an empty
        store at once make one cluster, not two.
        """
        canonical = normalize_public_key(public_key)
        with write_transaction(self.engine) as conn:
            bump_generation(conn, CLUSTER_KEYS)
            if conn.execute(select(_cluster.c.public_key).limit(1)).first() is None:
                conn.execute(
                    insert(_cluster).values(
                        public_key=canonical,
                        cluster_id=str(uuid.uuid4()),
                        created_at=utcnow(),
                        retired_at=None,
                    )
                )
        return self.require()

    def rotate(self, public_key: str, grace: timedelta) -> ClusterState:
        """Make ``public_key`` the current key; the previous ones are accepted for ``grace``
        at most."""
        canonical = normalize_public_key(public_key)
        now = utcnow()
        with write_transaction(self.engine) as conn:
            bump_generation(conn, CLUSTER_KEYS)
            rows = conn.execute(select(_cluster)).all()
            state = _cluster_state(rows)
            if state is None:
                raise Conflict("this store has no cluster key to rotate; start a controller first")
            if any(k.public_key == canonical for k in state.keys):
                raise Conflict(f"public key {canonical[:24]}... was a cluster key already")
            # Every older key ends with this grace at the latest: a rotation without grace
            # (a key thought stolen) ends them all at once.
            conn.execute(
                update(_cluster)
                .where(_cluster.c.retired_at.is_(None) | (_cluster.c.retired_at > now + grace))
                .values(retired_at=now + grace)
            )
            conn.execute(
                insert(_cluster).values(
                    public_key=canonical,
                    cluster_id=state.cluster_id,
                    created_at=now,
                    retired_at=None,
                )
            )
        return self.require()


def _cluster_state(rows: Sequence[Any]) -> ClusterState | None:
    if not rows:
        return None
    current = [r for r in rows if r.retired_at is None]
    older = sorted(
        (r for r in rows if r.retired_at is not None),
        key=lambda r: _aware(r.retired_at),
        reverse=True,
    )
    ordered = [*sorted(current, key=lambda r: _aware(r.created_at), reverse=True), *older]
    return ClusterState(
        cluster_id=str(rows[0].cluster_id),
        keys=tuple(TrustedKey(r.public_key, _aware(r.retired_at)) for r in ordered),
    )


# -- joining -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinTokenIssued:
    """A join token as handed to the admin (the token text is shown once, never stored)."""

    id: str
    token: str
    cluster_id: str
    expires_at: datetime
    created_by: str


@dataclass(frozen=True)
class JoinRequest:
    """What a host tells the controller about itself when it joins."""

    host_id: str
    name: str
    libvirt_uri: str
    traits: frozenset[str]
    inventory: Inventory
    energy_source: str
    addresses: tuple[str, ...]
    public_key: str
    ip_addresses: tuple[str, ...] | None = None
    """The host's IP addresses (read over netlink by its agent); None from an agent that
    does not report them."""


@dataclass(frozen=True)
class TrustAnswer:
    """What an agent must hold to check the controllers' calls: the cluster's id and
    keys (with until when an old one is still accepted), and the controller's clock."""

    host_id: str
    cluster_id: str
    cluster_keys: tuple[TrustedKey, ...]
    server_time: datetime
    host_name: str | None = None
    geolocation: tuple[str, ...] | None = None
    """The host's pairs as the controller holds them (the agent exports them); None when
    the answer does not say (a key rotation)."""


class HostTrust:
    """Join tokens, joined hosts' credentials and heartbeats over the shared store."""

    MAX_CACHED = 10_000

    def __init__(
        self,
        engine: Engine,
        placement: Placement,
        settings: Settings,
        cluster: ClusterKeys,
        signer: ClusterSigner | None = None,
        geo: GeoDatabase | None = None,
    ) -> None:
        self.engine = engine
        self.geo = geo if geo is not None else GeoDatabase(settings.geo.database)
        """Where hosts' public addresses are looked up (``geo.database``)."""
        self.placement = placement
        self.settings = settings
        self.cluster = cluster
        self.signer = signer
        """This controller's cluster key: signs join tokens and calls to agents."""
        self.on_return: Callable[[str], None] | None = None
        """Hears of a host whose agent was down and heartbeats again (the compute
        service reconciles its guests then); called on the heartbeat's thread."""
        self._keys: dict[str, tuple[TrustedKey, ...] | None] = {}
        self._generation = -1
        self._lock = threading.Lock()
        # Heartbeats: when this process last wrote each host's, and those waiting for
        # the next batch (see :meth:`heartbeat`).
        self._beats_lock = threading.Lock()
        self._beats_written: dict[str, datetime] = {}
        # Each host's last reported addresses, when its place was read, and that place
        # (name, geolocation pairs): a batched heartbeat answers from it.
        self._places: dict[
            str, tuple[tuple[str, ...] | None, datetime, tuple[str | None, tuple[str, ...] | None]]
        ] = {}
        self._beats_pending: dict[str, datetime] = {}
        self._beats_stop = threading.Event()
        self._beats_flusher: threading.Thread | None = None

    # -- join tokens -------------------------------------------------------------------

    def create_join_token(self, principal: Principal, ttl: timedelta) -> JoinTokenIssued:
        """A new single-use join token valid for ``ttl`` (admin)."""
        maximum = timedelta(seconds=self.settings.auth.max_join_token_ttl_s)
        if ttl <= timedelta(0) or ttl > maximum:
            raise InvalidRequest(
                f"join token lifetime {format_ttl(ttl)} is not accepted; give one longer "
                f"than zero and at most {format_ttl(maximum)} (auth.max_join_token_ttl_s)",
                ttl_s=int(ttl.total_seconds()),
            )
        if self.signer is None:
            raise Conflict("this controller holds no cluster key, so it cannot sign join tokens")
        state = self.cluster.require()
        try:
            private_key = self.signer.private_key()
        except KeyFileError as exc:
            raise Conflict(str(exc)) from exc
        token_id = str(uuid.uuid4())
        now = utcnow().replace(microsecond=0)
        expires = now + ttl
        token = mint_join_token(private_key, state.cluster_id, token_id, expires)
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(_join).values(
                    id=token_id, created_by=principal.user, created_at=now,
                    expires_at=expires, used_at=None, used_by_host=None,
                )
            )  # fmt: skip
        return JoinTokenIssued(token_id, token, state.cluster_id, expires, principal.user)

    def join_verifier(self) -> ServiceTokenVerifier:
        """The check of join tokens against this cluster's id and accepted keys."""
        auth = self.settings.auth
        return join_token_verifier(
            lambda: self.cluster.require().cluster_id,
            lambda: self.cluster.require().keys,
            max_ttl=timedelta(seconds=auth.max_join_token_ttl_s),
            clock_skew=timedelta(seconds=auth.clock_skew_s),
        )

    def join(self, token: VerifiedServiceToken, request: JoinRequest) -> TrustAnswer:
        """Register the host of ``request`` with the verified join ``token``, once.

        Everything that can refuse is checked before the token is claimed or inside the
        claiming transaction; placement is told last, and undone (with the claim) if it
        fails, so the token can be used again.
        """
        if token.kind != "join" or "join" not in token.facts:
            raise InvalidRequest("a join needs a verified join token")
        token_id = token.facts["join"]
        self._check_request(request)
        public_key = normalize_public_key(request.public_key)
        cluster = self.cluster.require()
        if any(k.public_key == public_key for k in cluster.keys):
            raise InvalidRequest("the host's public key must be its own, not a cluster key")
        now = utcnow()
        # Looked up before anything is written; a failed lookup is a reason, never a refusal.
        reported = (
            check_ip_addresses(request.ip_addresses) if request.ip_addresses is not None else None
        )
        located = locate(self.geo, reported or ())
        geolocation = looked_up_columns(located) if reported is not None else {}
        with read_transaction(self.engine) as conn:
            taken = conn.execute(
                select(_hosts.c.provider_uuid, _hosts.c.name).where(
                    (_hosts.c.provider_uuid == request.host_id) | (_hosts.c.name == request.name)
                )
            ).first()
        if taken is not None:
            raise self._taken(request, taken.provider_uuid)
        try:
            with write_transaction(self.engine) as conn:
                claimed = conn.execute(
                    update(_join)
                    .where(_join.c.id == token_id, _join.c.used_at.is_(None))
                    .values(used_at=now, used_by_host=request.host_id)
                ).rowcount
                if claimed != 1:
                    raise self._unclaimable(conn, token_id)
                row = conn.execute(select(_join).where(_join.c.id == token_id)).one()
                expires = _aware(row.expires_at)
                if expires <= now - timedelta(seconds=self.settings.auth.clock_skew_s):
                    raise TokenExpired(
                        f"join token {token_id} expired at {_iso(expires)}; ask an admin for "
                        "a new one (`wattvisor host join-token`)",
                        expired_at=_iso(expires),
                    )
                conn.execute(
                    insert(_hosts).values(
                        provider_uuid=request.host_id, name=request.name,
                        libvirt_uri=request.libvirt_uri, enabled=True, disabled_reason=None,
                        next_index=1, local=False, **geolocation,
                    )
                )  # fmt: skip
                conn.execute(
                    insert(_creds).values(
                        host_uuid=request.host_id, public_key=public_key, created_at=now,
                        revoked_at=None,
                    )
                )  # fmt: skip
                conn.execute(
                    insert(_agents).values(
                        host_uuid=request.host_id, addresses=list(request.addresses),
                        energy_source=request.energy_source, join_token_id=token_id,
                        joined_at=now, last_heartbeat_at=None,
                        ip_addresses=reported,
                    )
                )  # fmt: skip
                bump_generation(conn, HOST_KEYS)
        except IntegrityError as exc:
            # A host of that id or name was registered meanwhile: all rolled back.
            raise self._taken(request, request.host_id) from exc
        try:
            self.placement.ensure_provider(
                request.host_id,
                request.name,
                placement_inventories(self.settings, request.inventory),
                request.traits,
            )
        except Exception as exc:
            log.exception("host %s joined but placement refused it; undoing", request.host_id)
            self._undo_join(request.host_id, token_id)
            if isinstance(exc, PlacementBadRequest):
                raise InvalidRequest(
                    f"placement refused host {request.host_id}: {exc}; nothing was registered "
                    "and the join token can be used again",
                    host_id=request.host_id,
                ) from exc
            if isinstance(exc, PlacementConflict):
                raise Conflict(
                    f"placement refused host {request.host_id}: {exc}; nothing was registered "
                    "and the join token can be used again",
                    host_id=request.host_id,
                ) from exc
            raise
        log.info("host %s (%s) joined with join token %s", request.name, request.host_id, token_id)
        return self._answer(request.host_id, cluster, request.name, located.pairs)

    def _undo_join(self, host_id: str, token_id: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(delete(_agents).where(_agents.c.host_uuid == host_id))
            conn.execute(delete(_creds).where(_creds.c.host_uuid == host_id))
            conn.execute(delete(_hosts).where(_hosts.c.provider_uuid == host_id))
            conn.execute(
                update(_join)
                .where(_join.c.id == token_id, _join.c.used_by_host == host_id)
                .values(used_at=None, used_by_host=None)
            )
            bump_generation(conn, HOST_KEYS)

    @staticmethod
    def _taken(request: JoinRequest, holder: str) -> Conflict:
        return Conflict(
            f"host id {request.host_id} or name {request.name!r} is registered already (host "
            f"{holder}); a joined host rotates its key with its current one instead of "
            "joining again, and an admin removes a host before it joins anew",
            host_id=request.host_id,
            name=request.name,
        )

    @staticmethod
    def _unclaimable(conn: Any, token_id: str) -> Exception:
        row = conn.execute(select(_join).where(_join.c.id == token_id)).first()
        if row is None:
            return JoinTokenUnknown(
                f"join token {token_id} verifies with the cluster key but was never issued "
                "by this cluster's store; ask an admin for a new one",
                token_id=token_id,
            )
        used = _aware(row.used_at) or utcnow()
        return JoinTokenUsed(
            f"join token {token_id} was used already, at {_iso(used)} by host "
            f"{row.used_by_host}; each join token registers one host: ask an admin for a "
            "new one",
            token_id=token_id,
            used_at=_iso(used),
            used_by_host=row.used_by_host,
        )

    @staticmethod
    def _check_request(request: JoinRequest) -> None:
        if not UUID_PATTERN.fullmatch(request.host_id):
            raise InvalidRequest(
                f"host id {quoted(request.host_id)} is not accepted; give the host's uuid "
                "(libvirt's host UUID) in lower case",
                host_id=request.host_id,
            )
        require_printable("host name", request.name)
        require_printable("libvirt URI", request.libvirt_uri)
        if not request.name.strip() or len(request.name) > 200:
            raise InvalidRequest(f"host name {quoted(request.name)} must be 1-200 characters")
        inventory = request.inventory
        for name, value in (
            ("VCPU", inventory.vcpu),
            ("MEMORY_MB", inventory.memory_mb),
            ("DISK_GB", inventory.disk_gb),
        ):
            if not 1 <= value <= MAX_INVENTORY:
                raise InvalidRequest(
                    f"inventory {name} = {value} is not accepted; a host offers 1 to "
                    f"{MAX_INVENTORY} of each",
                    resource_class=name,
                )
        if request.energy_source not in ENERGY_SOURCES:
            raise InvalidRequest(
                f"energy source {quoted(request.energy_source)} is not accepted; accepted: "
                f"{', '.join(ENERGY_SOURCES)}"
            )
        unknown = sorted(
            t for t in request.traits if t not in standard_traits() and not is_custom_name(t)
        )
        if unknown:
            raise InvalidRequest(
                f"trait {quoted(unknown[0])} is neither a standard trait (os-traits) nor a "
                "custom one (CUSTOM_[A-Z0-9_]+)",
                traits=unknown[:10],
            )
        if not 1 <= len(request.addresses) <= MAX_ADDRESSES:
            raise InvalidRequest(
                f"a host gives 1 to {MAX_ADDRESSES} addresses its agent answers on, not "
                f"{len(request.addresses)}"
            )
        if request.ip_addresses is not None:
            check_ip_addresses(request.ip_addresses)
        try:
            normalize_public_key(request.public_key)
        except InvalidPublicKey as exc:
            raise InvalidRequest(str(exc)) from exc

    # -- host credentials --------------------------------------------------------------

    def host_keys(self, host_uuid: str) -> tuple[TrustedKey, ...] | None:
        """Every key of the joined host that is or was accepted (None: no such host); the
        lookup of the API's host-token check, cached while the generation holds."""
        generation = current_generation(self.engine, HOST_KEYS)
        with self._lock:
            if generation == self._generation and host_uuid in self._keys:
                return self._keys[host_uuid]
        with read_transaction(self.engine) as conn:
            generation = read_generation(conn, HOST_KEYS)
            rows = conn.execute(
                select(_creds).where(_creds.c.host_uuid == host_uuid).order_by(_creds.c.id.desc())
            ).all()
        keys = tuple(TrustedKey(r.public_key, _aware(r.revoked_at)) for r in rows) if rows else None
        with self._lock:
            if generation > self._generation:
                self._keys = {}
                self._generation = generation
            if generation == self._generation:
                if len(self._keys) >= self.MAX_CACHED:
                    self._keys.clear()
                self._keys[host_uuid] = keys
        return keys

    def rotate_host_key(
        self, host_uuid: str, signed_with: str, public_key: str, *, revoke_old: bool = False
    ) -> TrustAnswer:
        """Make ``public_key`` the host's key. Only a call signed with the host's *current*
        key may do so (not one in grace); the old key stays accepted for
        ``auth.host_key_grace_s`` unless ``revoke_old`` (a key thought stolen)."""
        try:
            canonical = normalize_public_key(public_key)
        except InvalidPublicKey as exc:
            raise InvalidRequest(str(exc)) from exc
        cluster = self.cluster.require()
        if any(k.public_key == canonical for k in cluster.keys):
            raise InvalidRequest("the host's public key must be its own, not a cluster key")
        now = utcnow()
        grace = (
            timedelta(0) if revoke_old else timedelta(seconds=self.settings.auth.host_key_grace_s)
        )
        with write_transaction(self.engine) as conn:
            known = (
                conn.execute(select(_creds.c.public_key).where(_creds.c.host_uuid == host_uuid))
                .scalars()
                .all()
            )
            if canonical in known:
                raise Conflict(
                    f"public key {canonical[:24]}... was a key of host {host_uuid} already; "
                    "a rotation needs a new key"
                )
            retired = conn.execute(
                update(_creds)
                .where(
                    _creds.c.host_uuid == host_uuid,
                    _creds.c.public_key == normalize_public_key(signed_with),
                    _creds.c.revoked_at.is_(None),
                )
                .values(revoked_at=now + grace)
            ).rowcount
            if retired != 1:
                raise Conflict(
                    f"host {host_uuid}'s key was rotated meanwhile: a rotation must be signed "
                    "with the host's current key",
                    host_id=host_uuid,
                )
            conn.execute(
                insert(_creds).values(
                    host_uuid=host_uuid, public_key=canonical, created_at=now, revoked_at=None
                )
            )
            bump_generation(conn, HOST_KEYS)
        return self._answer(host_uuid, cluster)

    HEARTBEAT_BATCH_S = 1.0
    """How long a heartbeat may wait to be written with the others."""

    PLACE_TTL_S = 60.0
    """How long a batched heartbeat may answer with the host's place read before."""

    def heartbeat(
        self,
        host_uuid: str,
        ip_addresses: Sequence[str] | None = None,
        domain_states: Mapping[str, str] | None = None,
    ) -> TrustAnswer:
        """Note that the host is alive; answer what it must know about the cluster.

        A host whose heartbeat this process wrote less than half of ``agent.down_after_s``
        ago, reporting the addresses it reported last, is up in the store already: its
        heartbeat is written with every other one that came in the same second (one
        transaction a second instead of one per host and heartbeat: a thousand hosts
        sent a hundred a second), and answered with the place read at most
        :attr:`PLACE_TTL_S` ago. Any other heartbeat (a host's first here, one back from
        a silence, new addresses, an old place) is written at once, and a host that did
        not join is refused, as before.

        ``ip_addresses`` (what the agent reads now) refresh the host's geolocation when
        they or their lookup changed; that refresh never fails the heartbeat.

        The first heartbeat of a host that was down (silent for ``agent.down_after_s``)
        calls :attr:`on_return` with the host: its guests are looked at again now.

        ``domain_states`` (the host's domains, uuid -> libvirt state, which its agent
        sends when they changed) are stored at once; the power sync reads them instead
        of asking the host.
        """
        if ip_addresses is not None:
            ip_addresses = check_ip_addresses(ip_addresses)
        if domain_states is not None:
            states = check_domain_states(domain_states)
            with write_transaction(self.engine) as conn:
                conn.execute(
                    update(_agents)
                    .where(_agents.c.host_uuid == host_uuid)
                    .values(domain_states=states, domain_states_at=utcnow())
                )
        reported = tuple(ip_addresses) if ip_addresses is not None else None
        now = utcnow()
        cluster = self.cluster.require()
        fresh = timedelta(seconds=self.settings.agent.down_after_s / 2)
        place_ttl = timedelta(seconds=self.PLACE_TTL_S)
        with self._beats_lock:
            written = self._beats_written.get(host_uuid)
            known = self._places.get(host_uuid)
            if (
                written is not None
                and now - written < fresh
                and not self._beats_stop.is_set()
                and known is not None
                and known[0] == reported
                and now - known[1] < place_ttl
            ):
                self._beats_pending[host_uuid] = now
                if self._beats_flusher is None:
                    self._beats_flusher = threading.Thread(
                        target=self._flush_beats_loop, name="wattvisor-heartbeats", daemon=True
                    )
                    self._beats_flusher.start()
                return self._answer(host_uuid, cluster, *known[2])
        with write_transaction(self.engine) as conn:
            before = conn.execute(
                select(_agents.c.joined_at, _agents.c.last_heartbeat_at).where(
                    _agents.c.host_uuid == host_uuid
                )
            ).first()
            found = conn.execute(
                update(_agents)
                .where(_agents.c.host_uuid == host_uuid)
                .values(last_heartbeat_at=now)
            ).rowcount
        if found != 1 or before is None:
            raise NotFound(f"host {quoted(host_uuid)} did not join", host_id=host_uuid)
        seen = before.last_heartbeat_at or before.joined_at
        seen = seen.replace(tzinfo=UTC) if seen.tzinfo is None else seen
        returned = (now - seen).total_seconds() > self.settings.agent.down_after_s
        place: tuple[str, tuple[str, ...]] | None = None
        if ip_addresses is not None:
            try:
                with write_transaction(self.engine) as conn:
                    place = refresh_in(conn, self.geo, host_uuid, ip_addresses)
            except Exception:
                log.exception("refreshing the geolocation of host %s failed", host_uuid)
        if place is None:
            with read_transaction(self.engine) as conn:
                row = conn.execute(
                    select(_hosts.c.name, _hosts.c.geolocation).where(
                        _hosts.c.provider_uuid == host_uuid
                    )
                ).first()
            if row is not None:
                place = (str(row.name), tuple(row.geolocation or ()))
        name, pairs = place if place is not None else (None, None)
        with self._beats_lock:
            if len(self._beats_written) >= self.MAX_CACHED:
                self._beats_written.clear()
                self._places.clear()
            self._beats_written[host_uuid] = now
            self._places[host_uuid] = (reported, now, (name, pairs))
        answer = self._answer(host_uuid, cluster, name, pairs)
        if returned and self.on_return is not None:
            try:
                self.on_return(host_uuid)
            except Exception:
                log.exception("reconciling host %s after its return failed", host_uuid)
        return answer

    def flush_heartbeats(self) -> int:
        """Write the heartbeats waiting for their batch; how many hosts it wrote.

        A stored heartbeat only moves forward: of two controllers, the one writing an
        older moment changes nothing."""
        with self._beats_lock:
            pending, self._beats_pending = self._beats_pending, {}
        if not pending:
            return 0
        try:
            self._write_beats(pending)
        except Exception:
            with self._beats_lock:  # kept for the next round, unless a newer one came
                for host, seen in pending.items():
                    self._beats_pending.setdefault(host, seen)
            raise
        with self._beats_lock:
            for host, seen in pending.items():
                if host in self._beats_written:
                    self._beats_written[host] = max(self._beats_written[host], seen)
        return len(pending)

    def _write_beats(self, pending: dict[str, datetime]) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(_agents)
                .where(
                    (_agents.c.host_uuid == bindparam("host"))
                    & (
                        _agents.c.last_heartbeat_at.is_(None)
                        | (_agents.c.last_heartbeat_at < bindparam("seen"))
                    )
                )
                .values(last_heartbeat_at=bindparam("seen")),
                [{"host": host, "seen": seen} for host, seen in pending.items()],
            )

    def _flush_beats_loop(self) -> None:
        while not self._beats_stop.wait(self.HEARTBEAT_BATCH_S):
            try:
                self.flush_heartbeats()
            except Exception:
                # Kept for the next round; a host stays up meanwhile (down_after_s is far).
                log.exception("writing heartbeats failed; trying again in a second")

    def close(self) -> None:
        """Write the heartbeats still waiting, and write every later one at once."""
        self._beats_stop.set()
        flusher, self._beats_flusher = self._beats_flusher, None
        if flusher is not None:
            flusher.join(10)
        self.flush_heartbeats()

    def _answer(
        self,
        host_uuid: str,
        cluster: ClusterState,
        host_name: str | None = None,
        geolocation: tuple[str, ...] | None = None,
    ) -> TrustAnswer:
        now = utcnow()
        return TrustAnswer(
            host_uuid, cluster.cluster_id, cluster.accepted(now), now, host_name, geolocation
        )

    def join_token_state(self, token_id: str) -> dict[str, Any] | None:
        """The stored record of a join token (for tests and operators), or None."""
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(_join).where(_join.c.id == token_id)).first()
        return None if row is None else dict(row._mapping)


MAX_REPORTED_DOMAINS = 10_000
"""The most domains one heartbeat may report."""

_DOMAIN_STATE = re.compile(r"[a-z0-9-]{1,32}")
"""A libvirt domain state as the agent names it (running, shutoff, shutting-down, ...)."""


def check_domain_states(states: Mapping[str, str]) -> dict[str, str]:
    """``states`` with lower-case uuids, or :class:`InvalidRequest` naming the bad entry."""
    if len(states) > MAX_REPORTED_DOMAINS:
        raise InvalidRequest(
            f"domain_states names {len(states)} domains; at most {MAX_REPORTED_DOMAINS} "
            "are accepted"
        )
    checked: dict[str, str] = {}
    for key, state in states.items():
        try:
            name = str(uuid.UUID(key)).lower()
        except (ValueError, AttributeError, TypeError):
            raise InvalidRequest(
                f"domain_states key {quoted(str(key))} is not a domain uuid"
            ) from None
        if not isinstance(state, str) or _DOMAIN_STATE.fullmatch(state) is None:
            raise InvalidRequest(
                f"domain_states[{name}] is {quoted(str(state))}; accepted: a libvirt state "
                "name of 1 to 32 lower-case letters, digits or dashes (e.g. running, shutoff)"
            )
        checked[name] = state
    return checked
