"""Migration tunnels: one VXLAN link per live migration, made and removed over netlink.

Each migration gets a link of its own on both hosts, named ``wvx-`` plus the first
11 hex digits of the migration's uuid (an interface name holds 15 characters), with
the migration's VNI, the two hosts' underlay addresses as local and remote ends, a
point-to-point /30 (or IPv6 /127) and an MTU lowered by the encapsulation overhead
(50 bytes over an IPv4 underlay, 70 over IPv6). The link's alias carries the whole
migration id, so that whoever finds it knows whose it is.

The name prefix marks every such link as wattvisor's: an agent that died mid-migration
left its link behind, and its next start removes every ``wvx-`` VXLAN link of the host
(:func:`sweep_tunnels`). No migration survives its agent's restart, so nothing that is
still needed is removed.

Linux-native VXLAN through pyroute2 only; Open vSwitch is refused by the settings.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

TUNNEL_PREFIX = "wvx-"
VXLAN_PORT = 4789
IPV4_OVERHEAD = 50
"""Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 bytes."""
IPV6_OVERHEAD = 70
"""Outer Ethernet 14 + IPv6 40 + UDP 8 + VXLAN 8 bytes."""
ALIAS_PREFIX = "wattvisor migration "
MAX_VNI = (1 << 24) - 1
_UUID_HEX = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")


class TunnelError(RuntimeError):
    """A tunnel could not be made or removed; the message names the link and why."""


@dataclass(frozen=True, slots=True)
class TunnelSpec:
    """One end of a migration's tunnel, as the host at that end makes it."""

    migration_id: str
    vni: int
    local_underlay: str
    """This host's address the other host reaches it at (the VXLAN packets' source)."""
    remote_underlay: str
    address: str
    """This end's overlay address with its prefix: ``100.100.0.1/30``, ``fd00::/127``."""
    peer: str
    """The other end's overlay address (where libvirt sends or receives the memory)."""
    port: int = VXLAN_PORT


@dataclass(frozen=True, slots=True)
class TunnelState:
    """A tunnel link as the host sees it now."""

    name: str
    vni: int
    mtu: int
    address: str
    rx_bytes: int
    tx_bytes: int


def link_name(migration_id: str) -> str:
    """The link name of a migration's tunnel; refuses what is not a uuid."""
    if not isinstance(migration_id, str) or not _UUID_HEX.match(migration_id.lower()):
        raise TunnelError(f"migration id {migration_id!r} is not a uuid")
    return TUNNEL_PREFIX + migration_id.lower().replace("-", "")[:11]


def overhead(underlay: str) -> int:
    """Bytes VXLAN adds per packet over an underlay of this address's family."""
    return IPV6_OVERHEAD if ipaddress.ip_address(underlay).version == 6 else IPV4_OVERHEAD


def check_spec(spec: TunnelSpec) -> None:
    """Refuse a spec that cannot make a sane point-to-point tunnel, naming the value."""
    link_name(spec.migration_id)
    if not 1 <= spec.vni <= MAX_VNI:
        raise TunnelError(f"vni {spec.vni!r} is outside 1-{MAX_VNI}")
    try:
        local = ipaddress.ip_address(spec.local_underlay)
        remote = ipaddress.ip_address(spec.remote_underlay)
        iface = ipaddress.ip_interface(spec.address)
        peer = ipaddress.ip_address(spec.peer)
    except ValueError as exc:
        raise TunnelError(f"tunnel {spec.migration_id}: {exc}") from exc
    if local.version != remote.version:
        raise TunnelError(
            f"underlay addresses {spec.local_underlay!r} and {spec.remote_underlay!r} are of "
            "different IP versions"
        )
    if peer not in iface.network or peer == iface.ip:
        raise TunnelError(f"peer {spec.peer!r} is not the other address of {spec.address!r}")
    if iface.network.num_addresses > 4:
        raise TunnelError(f"overlay {spec.address!r} must be a /30 or an IPv6 /127")


@contextlib.contextmanager
def _netlink() -> Iterator[IPRoute]:
    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _underlay_link(ipr: IPRoute, remote: str) -> tuple[int, int]:
    """The link (index, MTU) packets to ``remote`` leave by."""
    try:
        route = ipr.route("get", dst=remote)[0]
    except (NetlinkError, IndexError) as exc:
        raise TunnelError(f"no route to the underlay address {remote!r}: {exc}") from exc
    index = int(route.get("RTA_OIF"))
    link = ipr.link("get", index=index)[0]
    return index, int(link.get("IFLA_MTU"))


def tunnel_up(spec: TunnelSpec) -> TunnelState:
    """Make the spec's link, address and route, up. Idempotent: a link of this migration
    that exists already with the same VNI is kept; one with another VNI is refused.

    Few netlink round trips (route, underlay MTU, create, address, alias and up): the
    kernel serialises link changes of every namespace, so each one may wait."""
    check_spec(spec)
    name = link_name(spec.migration_id)
    iface = ipaddress.ip_interface(spec.address)
    v6 = ipaddress.ip_address(spec.local_underlay).version == 6
    with _netlink() as ipr:
        underlay, underlay_mtu = _underlay_link(ipr, spec.remote_underlay)
        mtu = underlay_mtu - overhead(spec.local_underlay)
        ends = (
            {"vxlan_local6": spec.local_underlay, "vxlan_group6": spec.remote_underlay}
            if v6
            else {"vxlan_local": spec.local_underlay, "vxlan_group": spec.remote_underlay}
        )
        try:
            ipr.link(
                "add", ifname=name, kind="vxlan", vxlan_id=spec.vni, vxlan_link=underlay,
                vxlan_port=spec.port, vxlan_learning=0, mtu=mtu, **ends,
            )  # fmt: skip
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise TunnelError(
                    f"tunnel {name} (vni {spec.vni}, {spec.local_underlay} -> "
                    f"{spec.remote_underlay}) could not be made: {exc}"
                ) from exc
            index = _index(ipr, name)
            if index is None:
                raise TunnelError(
                    f"tunnel {name} (vni {spec.vni}) could not be made: another VXLAN link "
                    f"holds vni {spec.vni} on port {spec.port} ({exc})"
                ) from exc
            state = _state(ipr, index)
            if state.vni != spec.vni:
                raise TunnelError(
                    f"link {name} exists with vni {state.vni}, not {spec.vni}"
                ) from exc
        try:
            index = _index(ipr, name)
            if index is None:
                raise TunnelError(f"link {name} vanished while it was made")
            try:
                ipr.addr(
                    "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
                )
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            ipr.link("set", index=index, ifalias=ALIAS_PREFIX + spec.migration_id, state="up")
        except NetlinkError as exc:
            _delete(ipr, name)
            raise TunnelError(f"tunnel {name} could not be brought up: {exc}") from exc
    return TunnelState(name=name, vni=spec.vni, mtu=mtu, address=spec.address,
                       rx_bytes=0, tx_bytes=0)  # fmt: skip


def _delete(ipr: IPRoute, name: str) -> bool:
    index = _index(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise TunnelError(f"link {name} could not be removed: {exc}") from exc
    return True


def tunnel_down(migration_id: str) -> TunnelState | None:
    """Remove the migration's link (its address and route go with it); returns its last
    state (the bytes that crossed it), or None when there was none. Repeatable."""
    name = link_name(migration_id)
    with _netlink() as ipr:
        try:
            link = ipr.link("get", ifname=name)[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise TunnelError(f"link {name} could not be read: {exc}") from exc
        index = int(link["index"])
        try:
            last: TunnelState | None = _state(ipr, index, link)
        except (NetlinkError, TunnelError):
            last = None
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise TunnelError(f"link {name} could not be removed: {exc}") from exc
        return last


def tunnel_state(migration_id: str) -> TunnelState | None:
    """The migration's link now, or None when the host has none."""
    name = link_name(migration_id)
    with _netlink() as ipr:
        index = _index(ipr, name)
        return None if index is None else _state(ipr, index)


def list_tunnels() -> list[TunnelState]:
    """Every migration tunnel on this host (this network namespace)."""
    found: list[TunnelState] = []
    with _netlink() as ipr:
        for link in ipr.get_links():
            name = str(link.get("IFLA_IFNAME"))
            if name.startswith(TUNNEL_PREFIX) and _kind(link) == "vxlan":
                with contextlib.suppress(NetlinkError, TunnelError):
                    found.append(_state(ipr, int(link["index"])))
    return found


def sweep_tunnels() -> list[str]:
    """Remove every migration tunnel of this host: the agent's start, after a crash left
    some behind. Returns the names removed."""
    removed: list[str] = []
    with _netlink() as ipr:
        names = [
            str(link.get("IFLA_IFNAME"))
            for link in ipr.get_links()
            if str(link.get("IFLA_IFNAME")).startswith(TUNNEL_PREFIX) and _kind(link) == "vxlan"
        ]
        for name in names:
            if _delete(ipr, name):
                removed.append(name)
    return removed


def _kind(link: object) -> str | None:
    info = link.get("IFLA_LINKINFO")  # type: ignore[attr-defined]
    return None if info is None else str(info.get("IFLA_INFO_KIND"))


def _state(ipr: IPRoute, index: int, link: Any = None) -> TunnelState:
    """The link's state; ``link`` is its message when the caller has just read it."""
    if link is None:
        link = ipr.link("get", index=index)[0]
    info = link.get("IFLA_LINKINFO")
    data = info.get("IFLA_INFO_DATA") if info is not None else None
    if data is None or info.get("IFLA_INFO_KIND") != "vxlan":
        raise TunnelError(f"link {link.get('IFLA_IFNAME')} is not a VXLAN link")
    addresses = [
        f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
        for a in ipr.get_addr(index=index)
        if not str(a.get("IFA_ADDRESS", "")).startswith("fe80:")
    ]
    stats = link.get("IFLA_STATS64") or {}
    return TunnelState(
        name=str(link.get("IFLA_IFNAME")),
        vni=int(data.get("IFLA_VXLAN_ID")),
        mtu=int(link.get("IFLA_MTU")),
        address=addresses[0] if addresses else "",
        rx_bytes=int(stats.get("rx_bytes", 0)),
        tx_bytes=int(stats.get("tx_bytes", 0)),
    )


def timed_up_down(spec: TunnelSpec) -> tuple[float, float]:
    """Seconds to make and to remove the spec's tunnel (the benchmark's figure)."""
    started = time.perf_counter()
    tunnel_up(spec)
    made = time.perf_counter()
    tunnel_down(spec.migration_id)
    return made - started, time.perf_counter() - made
