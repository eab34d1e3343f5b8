"""The host's network: defined when absent, reused when present, refused when it cannot serve,
and what a guest reads about its addresses in network_data.json."""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pycdlib
import pytest
from lxml import etree

from support.guest_networks import (
    random_ipv4_subnet,
    random_ipv6_subnet,
    remove_network,
    unique_network_name,
)
from wattvisor.config import HostNetworkSettings
from wattvisor.host.configdrive import ConfigDriveMetadata, build_config_drive
from wattvisor.host.connection import HostConnection
from wattvisor.host.networks import (
    GuestAddress,
    GuestNetwork,
    HostNetworks,
    NetworkError,
    NetworkSpec,
    ensure_network,
    network_data_document,
    network_xml,
)

TEST_URI = "test:///default"
NETWORK_RNG = Path("/usr/share/libvirt/schemas/network.rng")


def _spec(name: str, mode: str = "isolated", **overrides: str | None) -> NetworkSpec:
    values: dict[str, str | None] = {
        "mode": mode, "name": name, "ipv4_subnet": "10.251.0.0/20",
        "ipv6_subnet": "fd57:7476:6973::/64",
    }  # fmt: skip
    values.update(overrides)
    return NetworkSpec.from_settings(HostNetworkSettings.model_validate(values))


def _guest(spec: NetworkSpec) -> GuestNetwork:
    return GuestNetwork(
        spec=spec,
        mac="fa:16:3e:0a:0b:0c",
        addresses=(
            GuestAddress(4, "10.251.0.2", 20, "10.251.0.1"),
            GuestAddress(6, "fd57:7476:6973::2", 64, "fd57:7476:6973::1"),
        ),
    )


@pytest.fixture
def test_conn() -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(TEST_URI)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def name(test_conn: libvirt.virConnect) -> Iterator[str]:
    chosen = unique_network_name()
    try:
        yield chosen
    finally:
        remove_network(test_conn, chosen)


# -- the network XML ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nat", "isolated"])
def test_network_xml_is_valid_and_only_nat_forwards(mode: str) -> None:
    xml = network_xml(_spec("wv", mode))
    root = etree.fromstring(xml.encode())
    assert etree.RelaxNG(etree.parse(str(NETWORK_RNG))).validate(root), xml
    forward = root.find("forward")
    assert (forward.get("mode") if forward is not None else None) == (
        "nat" if mode == "nat" else None
    )
    ips = {(ip.get("family"), ip.get("address"), ip.get("prefix")) for ip in root.iter("ip")}
    assert ips == {(None, "10.251.0.1", "20"), ("ipv6", "fd57:7476:6973::1", "64")}
    assert root.find("ip/dhcp") is None, "addresses are static: no DHCP range to collide"


def test_network_xml_escapes_nothing_it_should_not() -> None:
    assert "<name>a.b_c-d</name>" in network_xml(_spec("a.b_c-d"))


def test_modes_wattvisor_does_not_own_have_no_network_xml() -> None:
    with pytest.raises(NetworkError, match="'network' is not defined by wattvisor"):
        network_xml(_spec("lan", "network"))


# -- define if absent, reuse if present ------------------------------------------------------


def test_absent_network_is_defined_autostarted_and_started(
    test_conn: libvirt.virConnect, name: str
) -> None:
    network = ensure_network(test_conn, _spec(name))
    assert network.isActive() and network.isPersistent() and network.autostart()
    again = ensure_network(test_conn, _spec(name))
    assert again.UUIDString() == network.UUIDString()


def test_existing_network_with_the_subnet_is_reused_and_started(
    test_conn: libvirt.virConnect, name: str
) -> None:
    existing = test_conn.networkDefineXML(
        f"<network><name>{name}</name><ip address='10.251.0.1' netmask='255.255.240.0'/>"
        "<ip family='ipv6' address='fd57:7476:6973::1' prefix='64'/></network>"
    )
    assert not existing.isActive()
    network = ensure_network(test_conn, _spec(name))
    assert network.UUIDString() == existing.UUIDString()
    assert network.isActive()
    assert not network.autostart(), "a network wattvisor did not define keeps its settings"


def test_existing_network_with_another_subnet_is_refused_naming_both(
    test_conn: libvirt.virConnect, name: str
) -> None:
    test_conn.networkDefineXML(
        f"<network><name>{name}</name><ip address='192.168.77.1' prefix='24'/></network>"
    )
    with pytest.raises(NetworkError) as caught:
        ensure_network(test_conn, _spec(name, ipv6_subnet=None))
    message = str(caught.value)
    assert name in message and "192.168.77.0/24" in message and "10.251.0.0/20" in message


def test_mode_network_needs_the_network_to_exist(test_conn: libvirt.virConnect, name: str) -> None:
    with pytest.raises(NetworkError, match=f"libvirt network '{name}' does not exist"):
        ensure_network(test_conn, _spec(name, "network"))
    with pytest.raises(libvirt.libvirtError):
        test_conn.networkLookupByName(name)


def test_host_networks_checks_a_spec_once_until_told_to_forget(
    test_conn: libvirt.virConnect, name: str
) -> None:
    networks = HostNetworks(HostConnection(TEST_URI))
    spec = _spec(name)
    networks.ensure(spec)
    test_conn.networkLookupByName(name).destroy()
    networks.ensure(spec)
    assert not test_conn.networkLookupByName(name).isActive()
    networks.forget()
    networks.ensure(spec)
    assert test_conn.networkLookupByName(name).isActive()


def test_bridge_mode_touches_no_libvirt_network() -> None:
    spec = _spec("lan", "bridge", bridge="br-nowhere")
    HostNetworks(HostConnection(TEST_URI)).ensure(spec)
    assert (spec.interface_type, spec.interface_source) == ("bridge", "br-nowhere")


@pytest.mark.libvirtd
def test_isolated_network_puts_the_gateway_on_a_host_bridge(
    libvirt_system: libvirt.virConnect,
) -> None:
    chosen = unique_network_name()
    subnet, subnet6 = random_ipv4_subnet(), random_ipv6_subnet()
    spec = _spec(chosen, ipv4_subnet=subnet, ipv6_subnet=subnet6)
    try:
        network = ensure_network(libvirt_system, spec)
        bridge = network.bridgeName()
        shown = subprocess.run(
            ["ip", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True,
            check=True,
        ).stdout  # fmt: skip
        assert f"inet {spec.ipv4_gateway}/24" in shown
        assert f"inet6 {spec.ipv6_gateway}/64" in shown
        root = etree.fromstring(network.XMLDesc(0).encode())
        assert root.find("forward") is None
        assert ensure_network(libvirt_system, spec).UUIDString() == network.UUIDString()
    finally:
        remove_network(libvirt_system, chosen)


# -- network_data.json -------------------------------------------------------------------------


def test_network_data_lists_the_link_static_addresses_routes_and_dns() -> None:
    document = network_data_document(_guest(_spec("wvnet")))
    assert document["links"] == [
        {"type": "vif", "id": "wv-nic0", "ethernet_mac_address": "fa:16:3e:0a:0b:0c",
         "mtu": None, "vif_id": "wv-nic0"}
    ]  # fmt: skip
    assert document["networks"] == [
        {"type": "ipv4", "id": "network0", "link": "wv-nic0", "ip_address": "10.251.0.2",
         "netmask": "255.255.240.0", "network_id": "wvnet",
         "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.251.0.1"}]},
        {"type": "ipv6", "id": "network1", "link": "wv-nic0",
         "ip_address": "fd57:7476:6973::2", "netmask": "ffff:ffff:ffff:ffff::",
         "network_id": "wvnet",
         "routes": [{"network": "::", "netmask": "::", "gateway": "fd57:7476:6973::1"}]},
    ]  # fmt: skip
    assert document["services"] == [
        {"type": "dns", "address": "10.251.0.1"},
        {"type": "dns", "address": "fd57:7476:6973::1"},
    ]


def test_network_data_names_no_dns_on_a_bridge_wattvisor_does_not_run() -> None:
    spec = _spec("lan", "bridge", bridge="br0")
    assert network_data_document(_guest(spec))["services"] == []


def test_network_data_of_a_server_without_network_is_empty() -> None:
    assert network_data_document(None) == {}


def test_network_data_netmask_matches_the_prefix() -> None:
    for prefix in (16, 20, 24, 29):
        net = ipaddress.IPv4Network(f"10.251.0.0/{prefix}")
        spec = _spec("wv", ipv4_subnet=str(net), ipv6_subnet=None)
        guest = GuestNetwork(
            spec, "fa:16:3e:00:00:01", (GuestAddress(4, str(net[2]), prefix, None),)
        )
        entry = network_data_document(guest)["networks"][0]
        assert ipaddress.IPv4Network(f"0.0.0.0/{entry['netmask']}").prefixlen == prefix
        assert entry["routes"] == []


def test_config_drive_carries_network_data_in_every_version(tmp_path: Path) -> None:
    guest = _guest(_spec("wvnet"))
    drive = build_config_drive(
        tmp_path / "drive.iso",
        ConfigDriveMetadata(
            uuid="6f1c2a9e-0b7d-4c1e-9a55-2f3c4d5e6f70", name="web", project_id="p",
            network=guest,
        ),
    )  # fmt: skip
    iso = pycdlib.PyCdlib()
    iso.open(str(drive))
    try:
        found = {}
        for version in ("latest", "2018-08-27"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/openstack/{version}/network_data.json")
            found[version] = json.loads(out.getvalue())
        meta_out = io.BytesIO()
        iso.get_file_from_iso_fp(meta_out, rr_path="/openstack/latest/meta_data.json")
    finally:
        iso.close()
    assert found["latest"] == found["2018-08-27"] == network_data_document(guest)
    assert json.loads(meta_out.getvalue())["name"] == "web"
