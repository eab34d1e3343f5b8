"""The console log service over the in-process host (libvirt's test driver, which runs no
guest: the test writes the files QEMU and virtlogd would)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from compute.principals import ALICE, BOB
from wattvisor.compute import Compute, ImageRecord, InvalidRequest, LocalHostClient, NotFound
from wattvisor.host.driver import HostError


def _booted(compute: Compute, image: ImageRecord, settle: Callable[[str], None]) -> str:
    server = compute.servers.create(ALICE, "logged", "tiny", image.id)
    settle(server.uuid)
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"
    return server.uuid


def test_a_start_rotates_a_full_log_and_keeps_the_configured_backups(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    sid = _booted(compute, kernel_image, settle)
    instance = compute.hosts.settings.data_dir / "instances" / sid
    limit = compute.hosts.settings.host.console_log_max_bytes
    backups = compute.hosts.settings.host.console_log_backups
    for n in range(backups + 2):
        (instance / f"console.log.{n}").write_bytes(b"old boot %d\n" % n)
    (instance / "console.log").write_bytes(b"x" * limit + b"\nlast line\n")
    compute.servers.stop(ALICE, sid)
    settle(sid)
    compute.servers.start(ALICE, sid)
    settle(sid)
    assert compute.servers.get(ALICE, sid).status == "ACTIVE"
    names = sorted(os.listdir(instance))
    assert [n for n in names if n.startswith("console.log")] == [
        f"console.log.{n}" for n in range(backups)
    ]
    assert (instance / "console.log.0").read_bytes().endswith(b"\nlast line\n")
    view = compute.console.console_log(ALICE, sid, lines=1)
    assert view.text == "last line\n" and view.truncated


def test_another_project_and_bad_values_change_nothing_and_say_why(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    sid = _booted(compute, kernel_image, settle)
    with pytest.raises(NotFound):
        compute.console.console_log(BOB, sid)
    with pytest.raises(InvalidRequest, match="lines '-1' is not accepted"):
        compute.console.console_log(ALICE, sid, lines="-1")
    with pytest.raises(InvalidRequest, match="next_cursor of an earlier answer"):
        compute.console.console_log(ALICE, sid, cursor="../../etc/passwd")


def test_the_host_reads_only_below_its_instances_directory(compute: Compute) -> None:
    [client] = compute.hosts.clients()
    assert isinstance(client, LocalHostClient)
    for bad in ("../../etc", "/etc", "not-a-uuid"):
        with pytest.raises(HostError, match="not a canonical uuid"):
            client.console_log(bad, lines=None, cursor=None, max_bytes=100)
