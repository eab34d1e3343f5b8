"""Network settings: which network servers are plugged into and which subnets they draw from."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from wattvisor.config import ConfigError, load_settings

_ENV = ("MODE", "NAME", "BRIDGE", "IPV4_SUBNET", "IPV6_SUBNET", "IPV4_GATEWAY")


@pytest.fixture(autouse=True)
def _no_session_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test session puts servers on an isolated network; these tests see the defaults."""
    for key in _ENV:
        monkeypatch.delenv(f"WATTVISOR_HOST__NETWORK__{key}", raising=False)


def test_by_default_servers_go_on_a_nat_network_named_wattvisor(tmp_path: Path) -> None:
    network = load_settings(data_dir=tmp_path).host.network
    assert (network.mode, network.name, network.bridge) == ("nat", "wattvisor", None)


def test_default_subnets_stay_clear_of_common_lans(tmp_path: Path) -> None:
    network = load_settings(data_dir=tmp_path).host.network
    v4 = ipaddress.IPv4Network(network.ipv4_subnet)
    assert v4.is_private and v4.num_addresses >= 1024
    for lan in ("192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/16", "10.1.0.0/16",
                "192.168.122.0/24"):  # fmt: skip
        assert not v4.overlaps(ipaddress.IPv4Network(lan)), lan
    assert network.ipv6_subnet is not None
    v6 = ipaddress.IPv6Network(network.ipv6_subnet)
    assert v6.prefixlen == 64 and v6.subnet_of(ipaddress.IPv6Network("fc00::/7"))
    assert not v6.overlaps(ipaddress.IPv6Network("fd00::/64"))


def test_a_bridge_comes_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "wattvisor.toml"
    config.write_text(
        '[host.network]\nmode = "bridge"\nbridge = "br0"\nipv4_subnet = "192.0.2.0/24"\n'
        'ipv4_gateway = "192.0.2.254"\nipv6_subnet = "2001:db8::/64"\n'
    )
    network = load_settings(config, data_dir=tmp_path).host.network
    assert (network.mode, network.bridge, network.ipv4_gateway) == ("bridge", "br0", "192.0.2.254")


def test_isolated_mode_and_subnets_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTVISOR_HOST__NETWORK__MODE", "isolated")
    monkeypatch.setenv("WATTVISOR_HOST__NETWORK__IPV4_SUBNET", "10.99.0.0/24")
    network = load_settings(data_dir=tmp_path).host.network
    assert (network.mode, network.ipv4_subnet) == ("isolated", "10.99.0.0/24")


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"mode": "routed"}, ["host.network.mode", "'routed'", "'nat'", "'isolated'"]),
        ({"name": "has space"}, ["host.network.name", "'has space'", "A-Z a-z 0-9"]),
        ({"ipv4_subnet": "10.0.0.1/24"}, ["host.network.ipv4_subnet", "'10.0.0.1/24'",
                                          "no host bits"]),
        ({"ipv4_subnet": "10.0.0.0/30"}, ["'10.0.0.0/30'", "/16 to /29"]),
        ({"ipv4_subnet": "fd00::/64"}, ["'fd00::/64'", "IPv4 network in CIDR form"]),
        ({"ipv6_subnet": "fd00::/48"}, ["host.network.ipv6_subnet", "'fd00::/48'",
                                        "/64 to /120"]),
        ({"mode": "bridge"}, ["host.network", "mode 'bridge' needs bridge", "br0"]),
        ({"bridge": "br0"}, ["bridge 'br0' is set but mode is 'nat'"]),
        ({"mode": "bridge", "bridge": "a-very-long-bridge-name"},
         ["'a-very-long-bridge-name'", "1-15 characters"]),
        ({"mode": "network", "ipv4_gateway": "10.9.9.9"},
         ["ipv4_gateway '10.9.9.9' is not a host address", "10.251.0.0/20"]),
        ({"ipv4_gateway": "10.251.0.9"}, ["ipv4_gateway '10.251.0.9' applies to modes bridge"]),
    ],
)  # fmt: skip
def test_a_bad_network_setting_is_refused_naming_setting_value_and_what_is_accepted(
    tmp_path: Path, values: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(data_dir=tmp_path, host={"network": values})
    for expected in names:
        assert expected in str(refused.value)
