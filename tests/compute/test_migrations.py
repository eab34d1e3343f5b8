"""Tunnel reservations in the store: a VNI and a subnet per migration, never shared."""

from __future__ import annotations

import ipaddress
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from wattvisor.compute.migrations import MigrationFailed, Reservation, TunnelPool, tunnel_ends
from wattvisor.config.settings import MigrationSettings
from wattvisor.store import make_engine, write_transaction
from wattvisor.store.migration_tables import TunnelReservationRow


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    engine = make_engine(store_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _pool(engine: Engine, **settings: object) -> TunnelPool:
    return TunnelPool(engine, MigrationSettings.model_validate(settings))


def test_each_migration_gets_its_own_vni_and_subnet_and_gives_them_back(engine: Engine) -> None:
    pool = _pool(engine, vni_pool="100-199", ipv4_pool="100.100.8.0/29")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    a, b = pool.reserve(first), pool.reserve(second)
    assert (a.vni, b.vni) == (100, 101)
    assert (a.subnet, b.subnet) == ("100.100.8.0/30", "100.100.8.4/30")
    assert pool.reserve(first) == a  # repeated: the same reservation
    pool.release(first)
    assert pool.held() == [b]
    assert pool.reserve(str(uuid.uuid4())) == a  # freed: the lowest again


def test_the_store_refuses_a_second_holder_of_one_vni_or_one_subnet(engine: Engine) -> None:
    pool = _pool(engine)
    held = pool.reserve(str(uuid.uuid4()))
    for vni, subnet in ((held.vni, "100.100.99.0/30"), (4242, held.subnet)):
        with pytest.raises(IntegrityError), write_transaction(engine) as conn:
            conn.execute(
                insert(TunnelReservationRow.__table__).values(
                    migration_id=str(uuid.uuid4()), vni=vni, subnet=subnet,
                    created_at=datetime.now(UTC),
                )
            )  # fmt: skip


def test_reservations_made_at_once_never_share_a_vni(engine: Engine) -> None:
    pool = _pool(engine, vni_pool="500-599")
    found: list[Reservation] = []
    errors: list[BaseException] = []

    def reserve() -> None:
        try:
            found.append(pool.reserve(str(uuid.uuid4())))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len({r.vni for r in found}) == 8 and len({r.subnet for r in found}) == 8


def test_an_exhausted_pool_is_named(engine: Engine) -> None:
    pool = _pool(engine, vni_pool="7-7")
    pool.reserve(str(uuid.uuid4()))
    with pytest.raises(MigrationFailed, match="'7-7'"):
        pool.reserve(str(uuid.uuid4()))


def test_ipv6_overlays_take_a_127_and_both_ends_face_each_other(engine: Engine) -> None:
    pool = _pool(engine, overlay="ipv6", ipv6_pool="fd00:1::/126")
    held = pool.reserve(str(uuid.uuid4()))
    assert ipaddress.ip_network(held.subnet).prefixlen == 127
    source, target = tunnel_ends("0" * 8 + "-0000-4000-8000-" + "0" * 12, held, "fd00::a",
                                 "fd00::b")  # fmt: skip
    assert source.peer == target.address.split("/")[0]
    assert target.peer == source.address.split("/")[0]
    assert (source.local_underlay, source.remote_underlay) == ("fd00::a", "fd00::b")


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"ovs": True}, "migration.ovs = true is not supported"),
        ({"vni_pool": "20-10"}, "'20-10'"),
        ({"vni_pool": "1-99999999"}, "'1-99999999'"),
        ({"ipv4_pool": "fd00::/64"}, "not an IPv4 network"),
        ({"ipv4_pool": "100.100.0.0/31"}, "smaller than one /30"),
        ({"ipv6_pool": "fd00::/128"}, "smaller than one /127"),
    ],
)
def test_bad_migration_settings_are_refused_naming_the_value(
    settings: dict[str, object], words: str
) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        MigrationSettings.model_validate(settings)
