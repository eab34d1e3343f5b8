"""Joining on a real store (SQLite and PostgreSQL): each join token registers one host,
once; every refused join registers nothing; host keys rotate."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from biscuit_auth import KeyPair
from sqlalchemy import Engine, func, select

from wattvisor.auth import Principal
from wattvisor.auth.cluster_keys import ClusterSigner, ensure_cluster_key
from wattvisor.auth.errors import (
    AuthError,
    JoinTokenUnknown,
    JoinTokenUsed,
    TokenExpired,
    TokenForeignCluster,
    TokenMalformed,
    TokenSignatureInvalid,
)
from wattvisor.auth.service_tokens import ServiceTokenVerifier, mint_join_token
from wattvisor.compute import Conflict, InvalidRequest
from wattvisor.compute.host_trust import ClusterKeys, HostTrust, JoinRequest
from wattvisor.compute.hosts import HostRegistry
from wattvisor.config import load_settings
from wattvisor.host.driver import Inventory
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate, read_transaction
from wattvisor.store.compute_tables import HostRow
from wattvisor.store.trust_tables import HostCredentialRow

ADMIN = Principal(user="admin", project="admin", role="admin")


@dataclass
class TrustWorld:
    engine: Engine
    placement: Placement
    cluster: ClusterKeys
    trust: HostTrust
    key_path: Path

    def verify(self, token: str) -> object:
        return self.trust.join_verifier().verify(token)

    def counts(self) -> tuple[int, int, int]:
        """(host rows, host credentials, placement providers)."""
        with read_transaction(self.engine) as conn:
            hosts = conn.execute(select(func.count()).select_from(HostRow)).scalar_one()
            creds = conn.execute(select(func.count()).select_from(HostCredentialRow)).scalar_one()
        return int(hosts), int(creds), len(self.placement.list_providers())


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> Iterator[TrustWorld]:
    engine = make_engine(store_url)
    migrate(engine)
    settings = load_settings(data_dir=tmp_path / "data")
    files = ensure_cluster_key(settings.cluster_key_path)
    cluster = ClusterKeys(engine)
    cluster.ensure(files.public_key)
    signer = ClusterSigner(
        settings.cluster_key_path,
        lambda: cluster.require().current.public_key,
        lambda: cluster.require().cluster_id,
    )
    placement = Placement(engine)
    trust = HostTrust(engine, placement, settings, cluster, signer)
    try:
        yield TrustWorld(engine, placement, cluster, trust, settings.cluster_key_path)
    finally:
        engine.dispose()


def join_request(name: str = "h1", host_id: str | None = None) -> JoinRequest:
    return JoinRequest(
        host_id=host_id or str(uuid.uuid4()),
        name=name,
        libvirt_uri="qemu:///system",
        traits=frozenset({"HW_CPU_X86_AVX2", "COMPUTE_STATUS_DISABLED", "CUSTOM_RACK_7"}),
        inventory=Inventory(vcpu=8, memory_mb=16384, disk_gb=100),
        energy_source="rapl",
        addresses=("https://198.18.0.2:8775",),
        public_key=repr(KeyPair().public_key),
    )


def test_a_join_token_registers_its_host_with_placement_and_its_key(world: TrustWorld) -> None:
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    request = join_request()
    answer = world.trust.join(world.verify(issued.token), request)  # type: ignore[arg-type]
    assert answer.cluster_id == issued.cluster_id
    assert [k.public_key for k in answer.cluster_keys] == [
        world.cluster.require().current.public_key
    ]
    traits = world.placement.get_provider_traits(request.host_id).traits
    assert "CUSTOM_RACK_7" in traits and "HW_CPU_X86_AVX2" in traits
    inventories = world.placement.get_inventories(request.host_id).inventories
    assert inventories["VCPU"].total == 8 and inventories["MEMORY_MB"].total == 16384
    keys = world.trust.host_keys(request.host_id)
    assert keys is not None and [k.public_key for k in keys] == [request.public_key]
    state = world.trust.join_token_state(issued.id)
    assert state is not None and state["used_by_host"] == request.host_id


def test_a_used_join_token_is_refused_naming_when_and_by_whom(world: TrustWorld) -> None:
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    first = join_request("first")
    world.trust.join(world.verify(issued.token), first)  # type: ignore[arg-type]
    before = world.counts()
    with pytest.raises(JoinTokenUsed, match=f"used already, at .* by host {first.host_id}"):
        world.trust.join(world.verify(issued.token), join_request("second"))  # type: ignore[arg-type]
    assert world.counts() == before


def test_concurrent_redemptions_of_one_token_register_exactly_one_host(
    world: TrustWorld,
) -> None:
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    verified = world.verify(issued.token)
    requests = [join_request(f"racer-{i}") for i in range(6)]
    barrier = threading.Barrier(len(requests))
    outcomes: list[str] = []
    lock = threading.Lock()

    def redeem(request: JoinRequest) -> None:
        barrier.wait(timeout=30)
        try:
            world.trust.join(verified, request)  # type: ignore[arg-type]
            result = "joined"
        except JoinTokenUsed:
            result = "used"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=redeem, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["joined"] + ["used"] * (len(requests) - 1)
    assert world.counts() == (1, 1, 1)


def test_an_expired_join_token_is_refused_with_its_expiry(world: TrustWorld) -> None:
    issued = world.trust.create_join_token(ADMIN, timedelta(seconds=1))
    later = datetime.now(UTC) + timedelta(minutes=5)
    verifier = ServiceTokenVerifier(
        "join",
        lambda _cluster: world.cluster.require().keys,
        subject_fact="cluster",
        extra_facts=("join",),
        max_ttl=timedelta(days=7),
        clock=lambda: later,
    )
    with pytest.raises(TokenExpired, match="expired at 20"):
        verifier.verify(issued.token)
    assert world.counts() == (0, 0, 0)


def test_the_store_refuses_an_expired_token_even_when_the_signature_check_let_it_pass(
    world: TrustWorld,
) -> None:
    issued = world.trust.create_join_token(ADMIN, timedelta(seconds=1))
    verified = world.verify(issued.token)
    past = datetime.now(UTC) - timedelta(hours=1)
    with world.engine.begin() as conn:
        from sqlalchemy import update

        from wattvisor.store.trust_tables import JoinTokenRow

        conn.execute(
            update(JoinTokenRow).where(JoinTokenRow.id == issued.id).values(expires_at=past)
        )
    with pytest.raises(TokenExpired, match="expired at"):
        world.trust.join(verified, join_request())  # type: ignore[arg-type]
    assert world.counts() == (0, 0, 0)
    state = world.trust.join_token_state(issued.id)
    assert state is not None and state["used_at"] is None


def test_a_join_token_signed_with_another_key_is_refused_as_forged(world: TrustWorld) -> None:
    cluster_id = world.cluster.require().cluster_id
    forged = mint_join_token(
        KeyPair().private_key, cluster_id, str(uuid.uuid4()), datetime.now(UTC) + timedelta(1)
    )
    with pytest.raises(TokenSignatureInvalid, match="signature invalid"):
        world.verify(forged)
    assert world.counts() == (0, 0, 0)


def test_a_join_token_of_another_cluster_is_refused_naming_both_clusters(
    world: TrustWorld,
) -> None:
    other = str(uuid.uuid4())
    foreign = mint_join_token(
        KeyPair().private_key, other, str(uuid.uuid4()), datetime.now(UTC) + timedelta(hours=1)
    )
    ours = world.cluster.require().cluster_id
    with pytest.raises(TokenForeignCluster, match=f"cluster '{other}'.*cluster '{ours}'"):
        world.verify(foreign)


def test_a_join_token_never_issued_by_this_store_is_refused(world: TrustWorld) -> None:
    from wattvisor.auth.keys import load_private_key

    cluster_id = world.cluster.require().cluster_id
    unknown = mint_join_token(
        load_private_key(world.key_path),
        cluster_id,
        str(uuid.uuid4()),
        datetime.now(UTC) + timedelta(hours=1),
    )
    with pytest.raises(JoinTokenUnknown, match="never issued"):
        world.trust.join(world.verify(unknown), join_request())  # type: ignore[arg-type]
    assert world.counts() == (0, 0, 0)


@pytest.mark.parametrize("token", ["", "not a biscuit", "A" * 20000])
def test_a_malformed_join_token_is_refused(world: TrustWorld, token: str) -> None:
    with pytest.raises(TokenMalformed):
        world.verify(token)


def test_bad_facts_are_refused_before_the_token_is_claimed(world: TrustWorld) -> None:
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    verified = world.verify(issued.token)
    bad = [
        replace(join_request(), traits=frozenset({"NOT_A_TRAIT"})),
        replace(join_request(), host_id="HOST"),
        replace(join_request(), energy_source="coal"),
        replace(join_request(), public_key="ed25519/zz"),
        replace(join_request(), addresses=()),
    ]
    for request in bad:
        with pytest.raises(InvalidRequest):
            world.trust.join(verified, request)  # type: ignore[arg-type]
    assert world.counts() == (0, 0, 0)
    state = world.trust.join_token_state(issued.id)
    assert state is not None and state["used_at"] is None
    world.trust.join(verified, join_request())  # type: ignore[arg-type]
    assert world.counts() == (1, 1, 1)


def test_a_host_that_joined_cannot_join_again_and_keeps_its_token_unused(
    world: TrustWorld,
) -> None:
    first = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    request = join_request()
    world.trust.join(world.verify(first.token), request)  # type: ignore[arg-type]
    second = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    with pytest.raises(Conflict, match="registered already"):
        world.trust.join(world.verify(second.token), request)  # type: ignore[arg-type]
    state = world.trust.join_token_state(second.id)
    assert state is not None and state["used_at"] is None


def test_join_token_lifetimes_beyond_the_maximum_are_refused(world: TrustWorld) -> None:
    with pytest.raises(InvalidRequest, match="at most 1w"):
        world.trust.create_join_token(ADMIN, timedelta(days=8))


def test_a_host_key_rotation_keeps_the_old_key_for_the_grace_period_only(
    world: TrustWorld,
) -> None:
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    request = join_request()
    world.trust.join(world.verify(issued.token), request)  # type: ignore[arg-type]
    new = repr(KeyPair().public_key)
    world.trust.rotate_host_key(request.host_id, request.public_key, new)
    keys = world.trust.host_keys(request.host_id)
    assert keys is not None
    assert [k.public_key for k in keys] == [new, request.public_key]
    assert keys[0].valid_until is None
    old_until = keys[1].valid_until
    assert old_until is not None and old_until > datetime.now(UTC)
    # Only the current key may rotate: the old one, still in grace, may not.
    with pytest.raises(Conflict, match="current key"):
        world.trust.rotate_host_key(request.host_id, request.public_key, repr(KeyPair().public_key))
    newest = repr(KeyPair().public_key)
    world.trust.rotate_host_key(request.host_id, new, newest, revoke_old=True)
    keys = world.trust.host_keys(request.host_id)
    assert keys is not None
    revoked = {k.public_key: k.valid_until for k in keys}[new]
    assert revoked is not None and revoked <= datetime.now(UTC)


def test_two_controllers_starting_on_an_empty_store_make_one_cluster(
    store_url: str, tmp_path: Path
) -> None:
    engine = make_engine(store_url)
    migrate(engine)
    try:
        states = []
        lock = threading.Lock()
        barrier = threading.Barrier(4)

        def start() -> None:
            barrier.wait(timeout=30)
            state = ClusterKeys(engine).ensure(repr(KeyPair().public_key))
            with lock:
                states.append(state)

        threads = [threading.Thread(target=start) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len({(s.cluster_id, s.current.public_key) for s in states}) == 1
        assert len(states[0].keys) == 1
    finally:
        engine.dispose()


def test_auth_errors_say_why(world: TrustWorld) -> None:
    """Every refusal carries a stable code (what the agent prints)."""
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    world.trust.join(world.verify(issued.token), join_request())  # type: ignore[arg-type]
    with pytest.raises(AuthError) as info:
        world.trust.join(world.verify(issued.token), join_request("x"))  # type: ignore[arg-type]
    assert info.value.code == "join_token_used"


def test_a_join_placement_refuses_is_undone_and_its_token_stays_usable(
    world: TrustWorld,
) -> None:
    """A placement provider of that name exists outside the host registry (made through
    the placement API): the host row and credential written before are removed again."""
    world.placement.create_provider("taken-name", str(uuid.uuid4()))
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    verified = world.verify(issued.token)
    with pytest.raises(Conflict, match="placement refused"):
        world.trust.join(verified, join_request("taken-name"))  # type: ignore[arg-type]
    assert world.counts() == (0, 0, 1)
    state = world.trust.join_token_state(issued.id)
    assert state is not None and state["used_at"] is None
    world.trust.join(verified, join_request("free-name"))  # type: ignore[arg-type]
    assert world.counts() == (1, 1, 2)


def test_an_inventory_placement_cannot_hold_is_refused_before_anything_is_written(
    world: TrustWorld,
) -> None:
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    request = replace(join_request(), inventory=Inventory(vcpu=4, memory_mb=1024, disk_gb=0))
    with pytest.raises(InvalidRequest, match="DISK_GB = 0"):
        world.trust.join(world.verify(issued.token), request)  # type: ignore[arg-type]
    assert world.counts() == (0, 0, 0)


def test_join_tokens_of_a_rotated_cluster_key_hold_during_its_grace_only(
    world: TrustWorld,
) -> None:
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    world.cluster.rotate(repr(KeyPair().public_key), timedelta(hours=1))
    state = world.cluster.require()
    assert state.keys[1].valid_until is not None
    world.verify(issued.token)  # old key, in grace
    world.cluster.rotate(repr(KeyPair().public_key), timedelta(0))
    assert len(world.cluster.require().accepted(datetime.now(UTC))) == 1
    with pytest.raises(TokenSignatureInvalid, match="retired at"):
        world.verify(issued.token)
    assert world.counts() == (0, 0, 0)
    with pytest.raises(Conflict, match="was a cluster key already"):
        world.cluster.rotate(state.current.public_key, timedelta(0))


def _stored_heartbeat(world: TrustWorld, host_id: str) -> datetime | None:
    from wattvisor.store.trust_tables import HostAgentRow

    with read_transaction(world.engine) as conn:
        seen = conn.execute(
            select(HostAgentRow.last_heartbeat_at).where(HostAgentRow.host_uuid == host_id)
        ).scalar_one()
    return None if seen is None else (seen if seen.tzinfo else seen.replace(tzinfo=UTC))


def _joined(world: TrustWorld) -> str:
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    request = join_request()
    world.trust.join(world.verify(issued.token), request)  # type: ignore[arg-type]
    return request.host_id


def test_a_first_heartbeat_is_stored_at_once_and_later_ones_with_the_next_batch(
    world: TrustWorld,
) -> None:
    host_id = _joined(world)
    world.trust.heartbeat(host_id)
    first = _stored_heartbeat(world, host_id)
    assert first is not None  # stored at once: the host is up in every controller's eyes
    answer = world.trust.heartbeat(host_id)  # recent: waits for the batch
    assert answer.host_id == host_id and answer.cluster_keys
    assert _stored_heartbeat(world, host_id) == first
    assert world.trust.flush_heartbeats() == 1
    later = _stored_heartbeat(world, host_id)
    assert later is not None and later > first
    assert world.trust.flush_heartbeats() == 0  # nothing waits any more


def test_a_batched_heartbeat_never_moves_the_stored_one_back(world: TrustWorld) -> None:
    from sqlalchemy import update

    from wattvisor.store import write_transaction
    from wattvisor.store.trust_tables import HostAgentRow

    host_id = _joined(world)
    world.trust.heartbeat(host_id)
    world.trust.heartbeat(host_id)  # waits for the batch
    ahead = datetime.now(UTC) + timedelta(seconds=30)  # another controller wrote a newer one
    with write_transaction(world.engine) as conn:
        conn.execute(
            update(HostAgentRow)
            .where(HostAgentRow.host_uuid == host_id)
            .values(last_heartbeat_at=ahead)
        )
    world.trust.flush_heartbeats()
    assert _stored_heartbeat(world, host_id) == ahead


def test_heartbeats_of_a_host_that_did_not_join_are_refused_and_close_writes_the_rest(
    world: TrustWorld,
) -> None:
    from wattvisor.compute import NotFound

    stranger = str(uuid.uuid4())
    with pytest.raises(NotFound, match=stranger):
        world.trust.heartbeat(stranger)
    host_id = _joined(world)
    world.trust.heartbeat(host_id)
    first = _stored_heartbeat(world, host_id)
    world.trust.heartbeat(host_id)
    world.trust.close()  # the waiting heartbeat is written, and any later one at once
    second = _stored_heartbeat(world, host_id)
    assert first is not None and second is not None and second > first
    world.trust.heartbeat(host_id)
    third = _stored_heartbeat(world, host_id)
    assert third is not None and third > second


def test_a_host_placement_has_not_been_told_of_yet_shows_as_joining_not_up(
    world: TrustWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the join's own transaction and placement's provider, the host is
    registered but nothing can land on it: its view says so instead of ``up``."""
    registry = HostRegistry(world.engine, world.placement, load_settings(data_dir=tmp_path / "r"))
    request = join_request("mid-join")
    seen: list[str] = []
    tell_placement = world.placement.ensure_provider

    def viewed_first(*args: Any, **kwargs: Any) -> Any:
        seen.append(registry.get(request.host_id).state)
        return tell_placement(*args, **kwargs)

    monkeypatch.setattr(world.placement, "ensure_provider", viewed_first)
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    world.trust.join(world.verify(issued.token), request)  # type: ignore[arg-type]
    assert seen == ["joining: not in placement yet"]
    after = registry.get(request.host_id)
    assert after.state == "up" and after.inventory["VCPU"] == 8
