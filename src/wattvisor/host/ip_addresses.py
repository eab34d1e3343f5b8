"""The host's own IP addresses, read from the kernel over netlink (pyroute2).

Every address of every interface is listed, secondary ones included, with no command
run and no text parsed: the controller decides which are public
(:mod:`wattvisor.geo.public_ranges`) and where they are. The list is sent with the
join and with every heartbeat, so a changed address is seen within one heartbeat.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from pyroute2 import IPRoute

log = logging.getLogger(__name__)

MAX_IP_ADDRESSES = 256
"""What the controller accepts; a host with more sends its first ones, in kernel order."""


def host_ip_addresses() -> list[str]:
    """Canonical addresses of this network namespace, IPv4 first; [] when netlink fails
    (logged): geolocation is never a reason for a join or a heartbeat to fail."""
    try:
        with IPRoute() as ipr:
            messages = ipr.get_addr()
    except Exception as exc:
        log.warning("reading this host's addresses over netlink failed: %s", exc)
        return []
    found: dict[str, None] = {}
    for message in messages:
        family = message.get("family")
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a
        # point-to-point link (IPv6 sends only IFA_ADDRESS).
        text = message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
        if not text:
            continue
        try:
            found.setdefault(str(ipaddress.ip_address(text)), None)
        except ValueError:
            continue
    ordered = sorted(found, key=lambda a: ipaddress.ip_address(a).version)
    return ordered[:MAX_IP_ADDRESSES]
