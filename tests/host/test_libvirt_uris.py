"""The libvirt URIs a host may be registered by: what real hosts use, nothing that reads files."""

from __future__ import annotations

import pytest

from wattvisor.host.libvirt_uris import HostURIError, check_host_uri


@pytest.mark.parametrize(
    "uri",
    ["qemu:///system", "test:///default", "qemu+ssh://host2/system",
     "qemu+ssh://root@host2.example.org:2222/system", "qemu+tls://host2:16514/system",
     "qemu+tcp://198.18.0.2/system", "qemu+tcp://[fd00::2]:16509/system"],
)  # fmt: skip
def test_uris_of_real_hosts_are_accepted(uri: str) -> None:
    assert check_host_uri(uri) == uri


@pytest.mark.parametrize(
    ("uri", "reason"),
    [("test:///etc/shadow", "test driver reads the file"),
     ("test:///default?x=1", "query parameters"),
     ("qemu+tls://h/system?pkipath=/root", "query parameters"),
     ("qemu:///session", "session daemon"),
     ("qemu+tcp://h/session", "path must be /system"),
     ("qemu+tcp://u@h/system", "only for qemu+ssh"),
     ("qemu+ssh://u:pw@h/system", "only for qemu+ssh"),
     ("qemu+tcp://[fd00::2/system", "in brackets"),
     ("qemu+tcp://[not-v6]/system", "'not-v6' is not an IPv6 address"),
     ("qemu+tcp://h:0/system", "port '0' is not 1-65535"),
     ("qemu+tcp://h:/system", "port '' is not 1-65535"),
     ("qemu+tcp://h%2f/system", "names no host"),
     ("qemu+tcp://h/system\x1b[2J", "control"),
     ("xen:///system", "'xen' driver is not a QEMU/KVM host"),
     ("qemu+libssh2://h/system", "transport or path"),
     ("q" * 300, "longer than 255")],
)  # fmt: skip
def test_other_uris_are_refused_with_the_reason_and_what_is_accepted(uri: str, reason: str) -> None:
    with pytest.raises(HostURIError) as refused:
        check_host_uri(uri)
    message = str(refused.value)
    assert reason in message
    assert "; accepted: qemu:///system, qemu+ssh://[user@]host[:port]/system" in message
    assert "\x1b" not in message  # a control character is shown escaped, never raw
