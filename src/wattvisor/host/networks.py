"""The network a host's servers are plugged into, and each server's place on it.

A host has one network (``[host.network]`` in the settings). In ``nat`` and
``isolated`` mode wattvisor owns a libvirt network of that name: when the host
has none, it is defined with the gateway (the subnet's first address) on its
bridge, set to autostart and started; one that exists already is used as it is,
after checking that it carries the configured subnet (addresses are assigned
statically from that subnet, so a different one would strand every guest). In
``network`` mode the libvirt network must exist; in ``bridge`` mode the interface
is plugged into an existing host bridge and the host checks nothing.

An ``isolated`` network has no ``<forward>``: guests reach the host (the gateway
address sits on the bridge) and each other, nothing beyond. ``nat`` needs
``iptables`` and ``dnsmasq`` on the host, and a libvirtd started after iptables.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

import libvirt
from lxml import etree

from wattvisor.config.settings import HostNetworkSettings
from wattvisor.host.connection import HostConnection

log = logging.getLogger(__name__)

OWNED_MODES = ("nat", "isolated")
"""Modes in which wattvisor defines the libvirt network when the host lacks it."""


class NetworkError(RuntimeError):
    """The host's network cannot be used; the message names the network and the cause."""


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """A host's network as the controller and the host agree on it."""

    mode: str
    name: str
    bridge: str | None
    ipv4_subnet: str
    ipv4_gateway: str
    ipv6_subnet: str | None = None
    ipv6_gateway: str | None = None

    @classmethod
    def from_settings(cls, settings: HostNetworkSettings) -> NetworkSpec:
        v4 = ipaddress.IPv4Network(settings.ipv4_subnet)
        v6 = ipaddress.IPv6Network(settings.ipv6_subnet) if settings.ipv6_subnet else None
        return cls(
            mode=settings.mode,
            name=settings.name,
            bridge=settings.bridge,
            ipv4_subnet=str(v4),
            ipv4_gateway=settings.ipv4_gateway or str(v4.network_address + 1),
            ipv6_subnet=str(v6) if v6 else None,
            ipv6_gateway=str(v6.network_address + 1) if v6 else None,
        )

    @property
    def interface_type(self) -> str:
        """``<interface type=...>``: ``bridge`` for a host bridge, else ``network``."""
        return "bridge" if self.mode == "bridge" else "network"

    @property
    def interface_source(self) -> str:
        return (self.bridge or "") if self.mode == "bridge" else self.name


@dataclass(frozen=True, slots=True)
class GuestAddress:
    """One static address of a server, with its subnet's prefix length and gateway."""

    version: int
    address: str
    prefix: int
    gateway: str | None


@dataclass(frozen=True, slots=True)
class GuestNetwork:
    """A server's one interface: which network, its MAC and its addresses."""

    spec: NetworkSpec
    mac: str
    addresses: tuple[GuestAddress, ...]


LINK_ID = "wv-nic0"
"""The ``links[].id`` of a server's interface in ``network_data.json``."""


def network_data_document(network: GuestNetwork | None) -> dict[str, Any]:
    """``network_data.json`` in OpenStack's format: ``links``, ``networks``, ``services``.

    Addresses are static (``ipv4`` / ``ipv6`` network types, as Nova writes for a
    subnet without DHCP), each with a default route through its gateway. Keys keep
    a fixed order (not sorted) so a guest without a JSON parser can read an entry
    from one line once the objects are split at ``{``.
    """
    if network is None:
        return {}
    spec = network.spec
    networks: list[dict[str, Any]] = []
    for n, address in enumerate(network.addresses):
        subnet = ipaddress.ip_network(f"{address.address}/{address.prefix}", strict=False)
        entry: dict[str, Any] = {
            "type": "ipv4" if address.version == 4 else "ipv6",
            "id": f"network{n}",
            "link": LINK_ID,
            "ip_address": address.address,
            "netmask": str(subnet.netmask),
            "network_id": spec.name,
            "routes": [],
        }
        if address.gateway is not None:
            anywhere = "0.0.0.0" if address.version == 4 else "::"
            entry["routes"] = [
                {"network": anywhere, "netmask": anywhere, "gateway": address.gateway}
            ]
        networks.append(entry)
    services = []
    if spec.mode in OWNED_MODES:  # libvirt's dnsmasq answers DNS on the gateway
        services = [
            {"type": "dns", "address": a.gateway}
            for a in network.addresses
            if a.gateway is not None
        ]
    return {
        "links": [
            {
                "type": "vif",
                "id": LINK_ID,
                "ethernet_mac_address": network.mac,
                "mtu": None,
                "vif_id": LINK_ID,
            }
        ],
        "networks": networks,
        "services": services,
    }


def network_xml(spec: NetworkSpec) -> str:
    """The ``<network>`` wattvisor defines for ``nat`` or ``isolated`` mode.

    No DHCP: every address is assigned by the controller and reaches the guest on
    its config drive, so a DHCP range could only hand out addresses that collide.
    """
    if spec.mode not in OWNED_MODES:
        raise NetworkError(
            f"network {spec.name!r} in mode {spec.mode!r} is not defined by wattvisor; "
            f"only modes {', '.join(OWNED_MODES)} are"
        )
    v4 = ipaddress.IPv4Network(spec.ipv4_subnet)
    parts = [f"<network><name>{_xml_text(spec.name)}</name>"]
    if spec.mode == "nat":
        parts.append("<forward mode='nat'/>")
    parts.append("<bridge stp='on' delay='0'/>")
    parts.append(f"<ip address={quoteattr(spec.ipv4_gateway)} prefix='{v4.prefixlen}'/>")
    if spec.ipv6_subnet and spec.ipv6_gateway:
        v6 = ipaddress.IPv6Network(spec.ipv6_subnet)
        parts.append(
            f"<ip family='ipv6' address={quoteattr(spec.ipv6_gateway)} prefix='{v6.prefixlen}'/>"
        )
    parts.append("</network>")
    return "".join(parts)


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def network_subnets(xml: str) -> set[str]:
    """The subnets (``10.0.0.0/24``) of a libvirt ``<network>``'s ``<ip>`` elements."""
    root = etree.fromstring(xml.encode())
    subnets = set()
    for ip in root.findall("ip"):
        address = ip.get("address")
        if address is None:
            continue
        prefix = ip.get("prefix")
        if prefix is None and ip.get("netmask"):
            prefix = str(ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen)
        if prefix is None:
            prefix = "24" if ":" not in address else "64"
        subnets.add(str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)))
    return subnets


class HostNetworks:
    """Makes sure a host has the network its servers are plugged into; once per spec."""

    def __init__(self, connection: HostConnection) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._ready: set[NetworkSpec] = set()

    def ensure(self, spec: NetworkSpec) -> None:
        """Define (nat, isolated), check and start the network; raise :class:`NetworkError`."""
        if spec.mode == "bridge":
            return
        with self._lock:
            if spec in self._ready:
                return
            self._connection.call(lambda conn: ensure_network(conn, spec))
            self._ready.add(spec)

    def forget(self) -> None:
        """Check again at the next :meth:`ensure` (the network may have been removed)."""
        with self._lock:
            self._ready.clear()


def ensure_network(conn: libvirt.virConnect, spec: NetworkSpec) -> libvirt.virNetwork:
    """The network ``spec.name`` on ``conn``, defined if absent (owned modes) and active."""
    network = _lookup(conn, spec.name)
    if network is None:
        if spec.mode not in OWNED_MODES:
            raise NetworkError(
                f"libvirt network {spec.name!r} does not exist on this host; mode 'network' "
                "uses an existing network (create it, or use mode 'nat' or 'isolated' to "
                "let wattvisor define it)"
            )
        try:
            network = conn.networkDefineXML(network_xml(spec))
            log.info("defined libvirt network %s (%s, %s)", spec.name, spec.mode, spec.ipv4_subnet)
        except libvirt.libvirtError as exc:
            network = _lookup(conn, spec.name)  # defined meanwhile by another process
            if network is None:
                raise NetworkError(
                    f"cannot define libvirt network {spec.name!r}: {exc.get_error_message()}"
                ) from exc
        try:
            network.setAutostart(1)
        except libvirt.libvirtError as exc:
            log.warning("network %s will not autostart: %s", spec.name, exc.get_error_message())
    _check_subnets(network, spec)
    if not network.isActive():
        try:
            network.create()
        except libvirt.libvirtError as exc:
            if not network.isActive():  # else started meanwhile: what was asked
                raise NetworkError(
                    f"cannot start libvirt network {spec.name!r}: {exc.get_error_message()}"
                    + _start_hint(spec)
                ) from exc
    return network


def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork | None:
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
            raise NetworkError(
                f"cannot look up libvirt network {name!r}: {exc.get_error_message()}"
            ) from exc
        return None


def _check_subnets(network: libvirt.virNetwork, spec: NetworkSpec) -> None:
    has = network_subnets(network.XMLDesc(0))
    wanted = {spec.ipv4_subnet} | ({spec.ipv6_subnet} if spec.ipv6_subnet else set())
    missing = sorted(wanted - has)
    if missing and spec.mode in OWNED_MODES:
        raise NetworkError(
            f"libvirt network {spec.name!r} exists with subnets {sorted(has) or 'none'}, "
            f"not the configured {', '.join(missing)}; servers get static addresses from "
            "the configured subnets, so change [host.network] ipv4_subnet/ipv6_subnet to "
            "match, or give the network another name"
        )
    if missing:
        log.warning(
            "libvirt network %s has subnets %s, not %s: guests' static addresses may not "
            "be reachable", spec.name, sorted(has), missing,
        )  # fmt: skip


def _start_hint(spec: NetworkSpec) -> str:
    if spec.mode == "nat":
        return (
            " (a NAT network needs iptables and dnsmasq on the host, and a libvirtd "
            "started after iptables was installed)"
        )
    return ""
