"""Hosts' geolocation in a real store (SQLite and PostgreSQL): looked up when a host joins
and when its heartbeat reports other addresses; an admin's value wins until cleared; a
failed lookup never refuses a join or a heartbeat."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from biscuit_auth import KeyPair
from sqlalchemy import Engine

from support.geo_databases import (
    LINKOPING_V4,
    LONDON_V4,
    TOKYO_V6,
    FailingGeoDatabase,
    pair,
    write_geo_database,
)
from wattvisor.auth import Principal
from wattvisor.auth.cluster_keys import ClusterSigner, ensure_cluster_key
from wattvisor.compute import InvalidRequest
from wattvisor.compute.host_geolocation import HostGeolocation, HostLocation
from wattvisor.compute.host_trust import ClusterKeys, HostTrust, JoinRequest
from wattvisor.config import load_settings
from wattvisor.geo import GeoDatabase
from wattvisor.host.driver import Inventory
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

ADMIN = Principal(user="admin", project="admin", role="admin")
MIXED = ("127.0.0.1", "198.18.0.2", "81.2.69.142", "10.0.0.1", "2001:218::2", "fe80::1")


@dataclass
class GeoWorld:
    engine: Engine
    trust: HostTrust
    geolocation: HostGeolocation
    database: GeoDatabase

    def join(self, ip_addresses: tuple[str, ...] | None) -> str:
        issued = self.trust.create_join_token(ADMIN, timedelta(hours=1))
        request = JoinRequest(
            host_id=str(uuid.uuid4()), name=f"geo-{uuid.uuid4().hex[:6]}",
            libvirt_uri="qemu:///system", traits=frozenset(),
            inventory=Inventory(vcpu=4, memory_mb=4096, disk_gb=20), energy_source="estimate",
            addresses=("http://198.18.0.2:8775",), public_key=repr(KeyPair().public_key),
            ip_addresses=ip_addresses,
        )  # fmt: skip
        verified = self.trust.join_verifier().verify(issued.token)
        self.trust.join(verified, request)
        return request.host_id

    def of(self, host_id: str) -> HostLocation:
        return self.geolocation.of(host_id)


def _world(store_url: str, tmp_path: Path, database: GeoDatabase) -> Iterator[GeoWorld]:
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
    trust = HostTrust(engine, Placement(engine), settings, cluster, signer, geo=database)
    try:
        yield GeoWorld(engine, trust, HostGeolocation(engine, database), database)
    finally:
        engine.dispose()


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> Iterator[GeoWorld]:
    yield from _world(store_url, tmp_path, GeoDatabase(write_geo_database(tmp_path / "c.mmdb")))


def test_a_joining_host_gets_one_pair_per_public_address(world: GeoWorld) -> None:
    host = world.join(MIXED)
    assert world.of(host) == HostLocation((pair(LONDON_V4), pair(TOKYO_V6)), "lookup", None)


def test_a_host_with_private_addresses_only_says_why_it_has_none(world: GeoWorld) -> None:
    host = world.join(("10.0.0.1", "198.18.0.2", "100.64.0.9", "fd00::2", "fe80::1"))
    assert world.of(host) == HostLocation((), "lookup", "no public address")


def test_the_join_answer_tells_the_agent_its_name_and_pairs(world: GeoWorld) -> None:
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    request = JoinRequest(
        host_id=str(uuid.uuid4()), name="answered", libvirt_uri="qemu:///system",
        traits=frozenset(), inventory=Inventory(vcpu=1, memory_mb=512, disk_gb=1),
        energy_source="none", addresses=("http://198.18.0.2:8775",),
        public_key=repr(KeyPair().public_key), ip_addresses=("89.160.20.9",),
    )  # fmt: skip
    answer = world.trust.join(world.trust.join_verifier().verify(issued.token), request)
    assert (answer.host_name, answer.geolocation) == ("answered", (pair(LINKOPING_V4),))


def test_a_heartbeat_with_other_addresses_refreshes_the_pairs(world: GeoWorld) -> None:
    host = world.join(("10.0.0.1", "81.2.69.142"))
    answer = world.trust.heartbeat(host, ["10.0.0.1", "89.160.20.9"])
    assert world.of(host).pairs == (pair(LINKOPING_V4),)
    assert answer.geolocation == (pair(LINKOPING_V4),)
    world.trust.heartbeat(host, ["10.0.0.1"])
    assert world.of(host) == HostLocation((), "lookup", "no public address")
    # A heartbeat that reports nothing (an older agent) leaves it as it is.
    world.trust.heartbeat(host)
    assert world.of(host) == HostLocation((), "lookup", "no public address")


def test_an_admin_value_is_never_replaced_by_a_lookup_until_cleared(world: GeoWorld) -> None:
    host = world.join(("81.2.69.142",))
    world.geolocation.set_by_admin(host, ["48.8566,2.3522"])
    pinned = HostLocation(("48.8566,2.3522",), "admin", None)
    assert world.of(host) == pinned
    world.trust.heartbeat(host, ["89.160.20.9", "2001:218::1"])
    assert world.of(host) == pinned
    # Cleared: the last reported addresses are looked up again at once.
    world.geolocation.set_by_admin(host, None)
    assert world.of(host) == HostLocation((pair(LINKOPING_V4), pair(TOKYO_V6)), "lookup", None)


def test_a_bad_admin_pair_is_refused_naming_it_and_changes_nothing(world: GeoWorld) -> None:
    host = world.join(("81.2.69.142",))
    before = world.of(host)
    with pytest.raises(InvalidRequest, match=r"'12,200'.*longitude 200"):
        world.geolocation.set_by_admin(host, ["48.8566,2.3522", "12,200"])
    assert world.of(host) == before


def test_a_corrupt_database_never_refuses_a_join(store_url: str, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"not a database" * 50)
    for world in _world(store_url, tmp_path, GeoDatabase(corrupt)):
        host = world.join(MIXED)
        located = world.of(host)
        assert located.pairs == () and located.source == "lookup"
        assert str(located.reason).startswith("lookup failed: ")


def test_a_lookup_that_raises_never_refuses_a_join_or_a_heartbeat(
    store_url: str, tmp_path: Path
) -> None:
    failing = FailingGeoDatabase()
    for world in _world(store_url, tmp_path, failing):
        host = world.join(MIXED)
        assert world.trust.host_keys(host) is not None  # registered
        assert world.of(host).reason == "lookup failed: reader exploded"
        answer = world.trust.heartbeat(host, ["89.160.20.9"])
        assert answer.host_id == host and failing.calls == 2


def test_without_a_database_the_host_view_says_so(store_url: str, tmp_path: Path) -> None:
    for world in _world(store_url, tmp_path, GeoDatabase(None)):
        host = world.join(MIXED)
        assert world.of(host) == HostLocation((), "lookup", "no database configured")


def test_a_host_that_reported_no_addresses_says_so(world: GeoWorld) -> None:
    host = world.join(None)
    assert world.of(host).reason is not None
    assert "not reported its addresses" in str(world.of(host).reason)
    world.trust.heartbeat(host, ["81.2.69.1"])
    assert world.of(host).pairs == (pair(LONDON_V4),)


def test_too_many_addresses_are_refused_before_anything_is_written(world: GeoWorld) -> None:
    many = tuple(f"81.2.{i // 250}.{i % 250}" for i in range(300))
    issued = world.trust.create_join_token(ADMIN, timedelta(hours=1))
    request = JoinRequest(
        host_id=str(uuid.uuid4()), name="many", libvirt_uri="qemu:///system",
        traits=frozenset(), inventory=Inventory(vcpu=1, memory_mb=512, disk_gb=1),
        energy_source="none", addresses=("http://198.18.0.2:8775",),
        public_key=repr(KeyPair().public_key), ip_addresses=many,
    )  # fmt: skip
    with pytest.raises(InvalidRequest, match="300 IP addresses"):
        world.trust.join(world.trust.join_verifier().verify(issued.token), request)
    state = world.trust.join_token_state(issued.id)
    assert state is not None and state["used_at"] is None


@pytest.mark.parametrize("bad", ["zz", "10.0.0.256", "81.2.69.1/24", "\x00"])
def test_a_text_that_is_no_address_is_refused_naming_it(world: GeoWorld, bad: str) -> None:
    host = world.join(("81.2.69.142",))
    with pytest.raises(InvalidRequest, match="is not accepted; a host reports IPv4 or IPv6"):
        world.trust.heartbeat(host, ["89.160.20.9", bad])
    assert world.of(host).pairs == (pair(LONDON_V4),)


def test_reported_addresses_are_kept_canonical(world: GeoWorld) -> None:
    host = world.join(("2001:0218:0000::0002",))
    assert world.of(host).pairs == (pair(TOKYO_V6),)
    answer = world.trust.heartbeat(host, ["2001:218::2"])
    assert answer.geolocation == (pair(TOKYO_V6),)
