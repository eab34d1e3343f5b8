"""Which libvirt URIs may name a host to register, and why every other one is refused.

A libvirt URI is more than an address: ``test:///<path>`` makes libvirt parse that
file (its first line comes back in the error when it is not XML), ``?socket=``,
``?keyfile=``, ``?pkipath=`` or ``?command=`` make it open local files or run
programs, and other drivers start daemons. Registration therefore accepts only what
a real host is reached by: the local system daemon, or a remote one over SSH, TLS or
TCP, each without query parameters, plus exactly ``test:///default``, libvirt's
built-in test host, which reads no file.
"""

from __future__ import annotations

import ipaddress
import re

SYSTEM_URI = "qemu:///system"
TEST_URI = "test:///default"
REMOTE_SCHEMES = ("qemu+ssh", "qemu+tls", "qemu+tcp")
MAX_URI_LENGTH = 255

ACCEPTED = (
    "qemu:///system, qemu+ssh://[user@]host[:port]/system, qemu+tls://host[:port]/system, "
    "qemu+tcp://host[:port]/system (no query parameters; put SSH keys in the service "
    "user's ~/.ssh/config), or exactly test:///default (libvirt's built-in test host, "
    "which reads no file; test URIs naming a file are refused)"
)

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


class HostURIError(ValueError):
    """A libvirt URI that registration refuses; the message names it and what is accepted."""


def _shown(uri: str) -> str:
    return repr(uri if len(uri) <= MAX_URI_LENGTH else uri[:60] + "...")


def _refuse(uri: str, reason: str) -> HostURIError:
    return HostURIError(
        f"libvirt URI {_shown(uri)} is not accepted: {reason}; accepted: {ACCEPTED}"
    )


def check_host_uri(uri: str) -> str:
    """``uri`` when a host may be registered by it; :class:`HostURIError` says why not."""
    if uri in (SYSTEM_URI, TEST_URI):
        return uri
    if len(uri) > MAX_URI_LENGTH:
        raise _refuse(uri, f"it is longer than {MAX_URI_LENGTH} characters")
    if not uri.isascii() or not uri.isprintable() or any(c.isspace() for c in uri):
        raise _refuse(uri, "it contains spaces, control or non-ASCII characters")
    scheme, _, rest = uri.partition("://")
    if not rest:
        raise _refuse(uri, "it is not a URI (scheme://...)")
    if "?" in uri or "#" in uri:
        raise _refuse(uri, "query parameters can name local files or programs")
    if scheme == "test":
        raise _refuse(uri, "libvirt's test driver reads the file a test URI names")
    if scheme == "qemu" and rest.startswith("/session"):
        raise _refuse(
            uri,
            "a per-user session daemon cannot give guests host networking or read-only "
            "share mounts, and opening one starts a daemon",
        )
    if scheme not in REMOTE_SCHEMES:
        if scheme == "qemu" or scheme.startswith("qemu+"):
            raise _refuse(uri, "this transport or path is not one a wattvisor host uses")
        raise _refuse(uri, f"the {scheme!r} driver is not a QEMU/KVM host")
    netloc, _, path = rest.partition("/")
    if path != "system":
        raise _refuse(uri, "the path must be /system (the host's system daemon)")
    user, at, hostport = netloc.rpartition("@")
    if at and (scheme != "qemu+ssh" or not _USER.match(user)):
        raise _refuse(uri, "a user name (user@) is accepted only for qemu+ssh, as a plain name")
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise _refuse(uri, "an IPv6 address must be in brackets, e.g. [fd00::2]")
        colon, port = after[:1], after[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _refuse(uri, f"{host!r} is not an IPv6 address") from None
    else:
        host, colon, port = hostport.partition(":")
        if not _HOSTNAME.match(host):
            raise _refuse(uri, "it names no host (a DNS name or an IP address)")
    if colon and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise _refuse(uri, f"port {port!r} is not 1-65535")
    return uri
