"""Which addresses count as public: every excluded range, IPv4 and IPv6, by its table row."""

from __future__ import annotations

import ipaddress

import pytest

from wattvisor.geo.public_ranges import EXCLUDED_RANGES, excluded_range, public_addresses

# (address inside the range, kind) for each range the product promises to exclude.
EXCLUDED = [
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("64:ff9b:1::1", "private"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("169.254.10.20", "link-local"),
    ("fe80::1", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.254", "cgnat"),
    ("fc00::1", "ula"),
    ("fd12:3456:789a::1", "ula"),
    ("192.0.2.10", "documentation"),
    ("198.51.100.10", "documentation"),
    ("203.0.113.10", "documentation"),
    ("2001:db8::1", "documentation"),
    ("2001:db8:ffff::1", "documentation"),
    ("3fff::1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.254", "benchmarking"),
    ("2001:2::1", "benchmarking"),
    ("2001:2:0:ffff::1", "benchmarking"),
    ("0.0.0.0", "this-network"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.0.9", "protocol-assignments"),
    ("::ffff:8.8.8.8", "ipv4-mapped"),
    ("fec0::1", "site-local"),
    ("100::1", "discard"),
]

# Just outside a range, or plainly public: these are looked up.
PUBLIC = [
    "8.8.8.8",
    "81.2.69.142",
    "100.63.255.255",  # below 100.64/10
    "100.128.0.1",  # above it
    "172.32.0.1",  # above 172.16/12
    "198.17.255.255",  # below 198.18/15
    "198.20.0.1",  # above it
    "192.0.3.1",
    "203.0.114.1",
    "2001:218::1",
    "2001:3::1",  # next to 2001:2::/48
    "2001:db9::1",  # next to 2001:db8::/32
    "2a00:1450:4001::1",
]


@pytest.mark.parametrize(("address", "kind"), EXCLUDED)
def test_each_listed_range_is_excluded_with_its_kind(address: str, kind: str) -> None:
    row = excluded_range(address)
    assert row is not None, address
    assert row.kind == kind
    assert public_addresses([address]) == []


@pytest.mark.parametrize("address", PUBLIC)
def test_addresses_outside_every_range_are_public(address: str) -> None:
    assert excluded_range(address) is None
    assert public_addresses([address]) == [str(ipaddress.ip_address(address))]


@pytest.mark.parametrize(
    "kind",
    ["private", "loopback", "link-local", "documentation", "benchmarking", "multicast"],
)
def test_each_kind_is_excluded_for_both_families(kind: str) -> None:
    versions = {row.network.version for row in EXCLUDED_RANGES if row.kind == kind}
    assert versions == {4, 6}


def test_cgnat_and_ula_are_the_family_specific_private_ranges() -> None:
    assert {r.network for r in EXCLUDED_RANGES if r.kind == "cgnat"} == {
        ipaddress.ip_network("100.64.0.0/10")
    }
    assert {r.network for r in EXCLUDED_RANGES if r.kind == "ula"} == {
        ipaddress.ip_network("fc00::/7")
    }


def test_every_table_row_excludes_its_first_and_last_address() -> None:
    for row in EXCLUDED_RANGES:
        for address in (row.network[0], row.network[-1]):
            found = excluded_range(address)
            assert found is not None, f"{address} of {row.network}"


def test_the_table_is_not_is_global() -> None:
    """Python's answer differs from the table on some of these (and between releases);
    the table decides."""
    for address in ("198.18.0.1", "2001:2::1", "192.0.0.9", "100.64.0.1", "2001:db8::1"):
        assert excluded_range(address) is not None


def test_a_mixed_list_keeps_the_public_ones_once_in_order() -> None:
    given = ["10.0.0.2", "81.2.69.142", "fe80::1", "2001:218::5", "81.2.69.142",
             "198.18.3.2", "not-an-address", "fe80::1%eth0", "2001:0218:0::7"]  # fmt: skip
    assert public_addresses(given) == ["81.2.69.142", "2001:218::5", "2001:218::7"]


def test_a_text_that_is_no_address_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'nope'"):
        excluded_range("nope")
