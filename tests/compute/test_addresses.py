"""Server addresses: one per server, never shared, freed on delete and on a failed build;
a full subnet fails the build with a clear fault (libvirt's test driver, both stores)."""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select

from compute.principals import ADMIN, ALICE
from wattvisor.compute import Compute, ImageRecord
from wattvisor.compute.addresses import AddressBook, AddressesExhausted, derived_mac
from wattvisor.compute.guest_network import SERVER_NIC_ALIAS
from wattvisor.config import HostNetworkSettings, Settings, load_settings
from wattvisor.guest import Interface
from wattvisor.host.networks import NetworkSpec
from wattvisor.store import write_transaction
from wattvisor.store.compute_tables import ServerAddressRow, ServerRow

SUBNET = "10.251.7.0/29"  # .1 gateway, .2-.6 for servers, .7 broadcast: room for 5
SUBNET6 = "fd57:7476:6973:7::/64"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        host={
            "libvirt_uri": "test:///default", "virt_type": "qemu",
            "instance_name_template": f"wva-{secrets.token_hex(4)}-%04x",
            "network": {
                "mode": "isolated", "name": f"wvtest-net-{secrets.token_hex(4)}",
                "ipv4_subnet": SUBNET, "ipv6_subnet": SUBNET6,
            },
        },
        energy={"source": "model"},
        compute={"workers": 2},
    )  # fmt: skip


def _boot(compute: Compute, image: ImageRecord, name: str, settle: Callable[[str], None]) -> str:
    server = compute.servers.create(ALICE, name, "tiny", image.id)
    settle(server.uuid)
    return server.uuid


def test_servers_get_the_lowest_free_addresses_and_nova_style_listing(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    first = _boot(compute, kernel_image, "a", settle)
    second = _boot(compute, kernel_image, "b", settle)
    one, two = compute.servers.get(ALICE, first), compute.servers.get(ALICE, second)
    assert one.status == two.status == "ACTIVE"
    network = compute.servers.settings.host.network.name
    assert [(a.network, a.version, a.address) for a in one.addresses] == [
        (network, 4, "10.251.7.2"), (network, 6, "fd57:7476:6973:7::2"),
    ]  # fmt: skip
    assert [a.address for a in two.addresses] == ["10.251.7.3", "fd57:7476:6973:7::3"]
    assert {a.mac for a in one.addresses} == {derived_mac(first)}
    listed = {s.uuid: s.addresses for s in compute.servers.list_all(ALICE)}
    assert listed == {first: one.addresses, second: two.addresses}


def test_the_interface_is_on_the_network_with_the_servers_mac(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    record = compute.servers.get(ADMIN, _boot(compute, kernel_image, "a", settle))
    client = compute.hosts.client(record.host_uuid or "")
    domain = client.driver.domain(record.domain_name or "")  # type: ignore[attr-defined]
    nic = domain.find_device(alias=SERVER_NIC_ALIAS)
    assert isinstance(nic, Interface)
    assert (
        nic.type == "network" and nic.source_network == compute.servers.settings.host.network.name
    )
    assert nic.mac == record.addresses[0].mac and nic.model == "virtio"


def test_a_deleted_servers_address_is_released_and_handed_out_again(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    first = _boot(compute, kernel_image, "a", settle)
    _boot(compute, kernel_image, "b", settle)
    compute.servers.delete(ALICE, first)
    settle(first)
    assert compute.servers.get(ALICE, first).addresses == ()
    third = compute.servers.get(ALICE, _boot(compute, kernel_image, "c", settle))
    assert third.addresses[0].address == "10.251.7.2"


def test_a_full_subnet_fails_the_build_naming_network_and_subnet(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    held = [_boot(compute, kernel_image, f"s{n}", settle) for n in range(5)]
    addresses = {compute.servers.get(ALICE, s).addresses[0].address for s in held}
    assert len(addresses) == 5
    extra = compute.servers.get(ALICE, _boot(compute, kernel_image, "extra", settle))
    assert extra.status == "ERROR" and extra.host_uuid is None and extra.addresses == ()
    assert extra.fault is not None
    assert compute.servers.settings.host.network.name in extra.fault and SUBNET in extra.fault
    assert "no free address" in extra.fault
    usage = compute.hosts.placement.get_usages(
        compute.servers.get(ADMIN, held[0]).host_uuid or ""
    ).usages
    assert usage["VCPU"] == 5, "the server that got no address claims nothing"

    compute.servers.delete(ALICE, held[0])
    settle(held[0])
    assert compute.servers.get(ALICE, _boot(compute, kernel_image, "again", settle)).status == (
        "ACTIVE"
    )


def test_a_build_with_no_valid_host_keeps_no_address(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    compute.catalog.create_flavor("huge", 512, 256)
    server = compute.servers.create(ALICE, "big", "huge", kernel_image.id)
    settle(server.uuid)
    record = compute.servers.get(ALICE, server.uuid)
    assert record.status == "ERROR" and record.addresses == ()
    assert compute.servers.addresses.of([server.uuid]) == {}


# -- the address book on its own ------------------------------------------------------------


def _servers(engine: Engine, count: int) -> list[str]:
    uuids = [str(uuid.uuid4()) for _ in range(count)]
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        for u in uuids:
            conn.execute(
                insert(ServerRow.__table__).values(
                    uuid=u, name=u[:8], project="p", user_name="u", flavor_id="f",
                    image_id="i", status="BUILD", task=None, power_metrics=False, shares=[],
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip
    return uuids


def _book(engine: Engine, subnet: str = "10.251.8.0/27") -> AddressBook:
    settings = HostNetworkSettings(mode="isolated", name="wvbook", ipv4_subnet=subnet)
    return AddressBook(engine, NetworkSpec.from_settings(settings))


def test_allocating_again_returns_what_the_server_holds(compute: Compute) -> None:
    book = _book(compute.servers.engine)
    [server] = _servers(compute.servers.engine, 1)
    first = book.allocate(server)
    assert book.allocate(server) == first
    assert [a.address for a in first.addresses] == ["10.251.8.2", "fd57:7476:6973::2"]
    assert [a.gateway for a in first.addresses] == ["10.251.8.1", "fd57:7476:6973::1"]


def test_concurrent_allocations_never_share_an_address(compute: Compute) -> None:
    book = _book(compute.servers.engine)
    servers = _servers(compute.servers.engine, 16)
    barrier = threading.Barrier(len(servers))
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def allocate(server: str) -> None:
        try:
            barrier.wait(timeout=30)
            results[server] = book.allocate(server).addresses[0].address
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=allocate, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(set(results.values())) == len(servers) == len(results)


def test_a_taken_mac_makes_the_next_derived_one(compute: Compute) -> None:
    book = _book(compute.servers.engine)
    other, server = _servers(compute.servers.engine, 2)
    with write_transaction(compute.servers.engine) as conn:
        conn.execute(
            insert(ServerAddressRow.__table__).values(
                network="wvbook", slot=9, server_uuid=other, mac=derived_mac(server),
                ipv4="10.251.8.9", ipv6=None, created_at=datetime.now(UTC),
            )
        )  # fmt: skip
    assert book.allocate(server).mac == derived_mac(server, 1) != derived_mac(server)


def test_exhaustion_holds_nothing_and_says_how_much_room_there_was(compute: Compute) -> None:
    book = _book(compute.servers.engine, "10.251.9.0/29")
    servers = _servers(compute.servers.engine, 6)
    for server in servers[:5]:
        book.allocate(server)
    with pytest.raises(AddressesExhausted) as caught:
        book.allocate(servers[5])
    assert "all 5 addresses of subnet 10.251.9.0/29" in caught.value.message
    table = ServerAddressRow.__table__
    with compute.servers.engine.connect() as conn:
        holders = conn.execute(select(table.c.server_uuid)).scalars().all()
    assert servers[5] not in holders and len(holders) == 5


def test_a_gateway_inside_the_subnet_is_never_handed_out(compute: Compute) -> None:
    settings = HostNetworkSettings(
        mode="bridge", name="lan", bridge="br0", ipv4_subnet="10.251.10.0/29",
        ipv4_gateway="10.251.10.3", ipv6_subnet=None,
    )  # fmt: skip
    book = AddressBook(compute.servers.engine, NetworkSpec.from_settings(settings))
    got = [book.allocate(s).addresses for s in _servers(compute.servers.engine, book.capacity)]
    assert book.capacity == 4
    assert [a[0].address for a in got] == ["10.251.10.2", "10.251.10.4", "10.251.10.5",
                                           "10.251.10.6"]  # fmt: skip
    assert all(len(a) == 1 and a[0].gateway == "10.251.10.3" for a in got)


def test_the_lowest_released_slot_is_handed_out_first(compute: Compute) -> None:
    book = _book(compute.servers.engine)
    servers = _servers(compute.servers.engine, 8)
    for server in servers[:6]:
        book.allocate(server)
    book.release(servers[4])
    book.release(servers[2])
    assert book.allocate(servers[6]).addresses[0].address == "10.251.8.4"
    assert book.allocate(servers[7]).addresses[0].address == "10.251.8.6"
