"""Which addresses are public: an explicit table of the ranges that are not.

``ipaddress.ip_address(...).is_global`` is not this list: its answer moved between
Python releases (198.18.0.0/15 and 2001:2::/48 among others) and it mixes in ranges we
judge differently. A host's public addresses decide what is looked up, so the ranges
are spelled out here, each with what it is, for IPv4 and IPv6 alike; an address in
none of them is public.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ExcludedRange:
    network: IPNetwork
    kind: str
    """private, loopback, link-local, cgnat, ula, documentation, benchmarking, ..."""


def _table(*rows: tuple[str, str]) -> tuple[ExcludedRange, ...]:
    return tuple(ExcludedRange(ipaddress.ip_network(net), kind) for net, kind in rows)


EXCLUDED_RANGES: tuple[ExcludedRange, ...] = _table(
    # IPv4 (RFC 6890 and the IANA special-purpose registry)
    ("0.0.0.0/8", "this-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "protocol-assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4-relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    # IPv6
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "ipv4-mapped"),
    ("64:ff9b:1::/48", "private"),
    ("100::/64", "discard"),
    ("2001:2::/48", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "ula"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)


# Per family, (network as an int, netmask as an int, row): an address is in a row when
# its masked value is the network's, without building ipaddress objects per check.
_MASKS: dict[int, tuple[tuple[int, int, ExcludedRange], ...]] = {
    version: tuple(
        (int(r.network.network_address), int(r.network.netmask), r)
        for r in EXCLUDED_RANGES
        if r.network.version == version
    )
    for version in (4, 6)
}


def excluded_range(address: str | IPAddress) -> ExcludedRange | None:
    """The table row ``address`` falls in, or None when it is public.

    A text that is no IP address raises ValueError (with the value)."""
    parsed = address if not isinstance(address, str) else ipaddress.ip_address(address)
    value = int(parsed)
    for network, mask, row in _MASKS[parsed.version]:
        if value & mask == network:
            return row
    return None


def public_addresses(addresses: Iterable[str]) -> list[str]:
    """The public ones among ``addresses``, canonical, first occurrence kept; texts that
    are no address (an interface's ``%scope``-suffixed one included) are left out."""
    found: dict[str, None] = {}
    for text in addresses:
        try:
            parsed = ipaddress.ip_address(text)
        except ValueError:
            continue
        if excluded_range(parsed) is None:
            found.setdefault(str(parsed), None)
    return list(found)
