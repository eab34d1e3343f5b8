"""Bringing up libvirtd without systemd, and stopping only what we started."""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from support.availability import require_root
from wattvisor.devtools import libvirtd as dev_libvirtd
from wattvisor.devtools.libvirtd import DaemonProcess, LocalVirtError, StartedDaemons


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A harmless process standing in for a daemon we started."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


@pytest.mark.libvirtd
def test_running_daemon_answers_and_ensure_starts_nothing(
    libvirt_system: libvirt.virConnect,
) -> None:
    assert dev_libvirtd.libvirtd_answers(dev_libvirtd.SYSTEM_URI)
    again = dev_libvirtd.ensure_libvirtd(dev_libvirtd.SYSTEM_URI)
    try:
        assert again.already_running
        assert again.daemons == ()
        assert "already answers" in again.summary()
    finally:
        assert again.stop() == []
    assert dev_libvirtd.libvirtd_answers(dev_libvirtd.SYSTEM_URI)
    assert libvirt_system.getLibVersion() > 0


@pytest.mark.libvirtd
def test_daemon_runs_guests_as_an_account_that_exists(
    libvirt_system: libvirt.virConnect,
) -> None:
    pwd.getpwnam(dev_libvirtd.QEMU_USER)
    for group in dev_libvirtd.QEMU_GROUPS:
        grp.getgrnam(group)


@pytest.mark.libvirtd
@pytest.mark.skip_by_design("a machine without /dev/kvm has no node to fix")
def test_kvm_node_is_usable_by_the_kvm_group_so_capabilities_stay_cached(
    libvirt_system: libvirt.virConnect,
) -> None:
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        pytest.skip("no /dev/kvm on this machine, nothing to fix")
    st = kvm.stat()
    assert st.st_gid == grp.getgrnam("kvm").gr_gid
    assert st.st_mode & 0o060 == 0o060


def test_nothing_answers_on_a_socket_that_does_not_exist(tmp_path: Path) -> None:
    assert not dev_libvirtd.libvirtd_answers(f"qemu:///system?socket={tmp_path}/none")


def test_only_the_system_uri_can_be_started(tmp_path: Path) -> None:
    require_root("starting libvirtd")
    uri = f"qemu:///system?socket={tmp_path}/none"
    with pytest.raises(LocalVirtError) as raised:
        dev_libvirtd.ensure_libvirtd(uri, timeout_s=1)
    assert uri in str(raised.value)
    assert "qemu:///system" in str(raised.value)


def test_missing_binary_says_how_to_install_it() -> None:
    with pytest.raises(LocalVirtError, match="make setup") as raised:
        dev_libvirtd.find_daemon_binary("libvirtd-not-installed")
    assert "libvirtd-not-installed" in str(raised.value)


def test_stop_terminates_what_we_started_when_nobody_else_uses_it(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    started = StartedDaemons(
        uri=dev_libvirtd.SYSTEM_URI,
        daemons=(DaemonProcess("sleep", sleeper.pid),),
        users_lock=tmp_path / "users.lock",
    )
    assert started.stop(timeout_s=5) == [DaemonProcess("sleep", sleeper.pid)]
    sleeper.wait(timeout=5)
    assert not _alive(sleeper)
    assert started.daemons == ()


def test_stop_leaves_the_daemon_running_while_another_process_relies_on_it(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    lock = tmp_path / "users.lock"
    other_user = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(other_user, fcntl.LOCK_SH)
        started = StartedDaemons(
            uri=dev_libvirtd.SYSTEM_URI,
            daemons=(DaemonProcess("sleep", sleeper.pid),),
            users_lock=lock,
        )
        assert started.stop(timeout_s=5) == []
        assert _alive(sleeper)
    finally:
        os.close(other_user)


def test_stop_never_signals_a_reused_pid(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    started = StartedDaemons(
        uri=dev_libvirtd.SYSTEM_URI,
        daemons=(DaemonProcess("libvirtd", sleeper.pid),),  # the pid now belongs to `sleep`
        users_lock=tmp_path / "users.lock",
    )
    assert started.stop(timeout_s=5) == []
    assert _alive(sleeper)


def test_summary_names_what_was_created_and_started() -> None:
    started = StartedDaemons(
        uri=dev_libvirtd.SYSTEM_URI,
        daemons=(DaemonProcess("virtlogd", 11), DaemonProcess("libvirtd", 12)),
        created=("user libvirt-qemu",),
    )
    text = started.summary()
    assert "created user libvirt-qemu" in text
    assert "started virtlogd (pid 11)" in text
    assert "started libvirtd (pid 12)" in text


@pytest.mark.libvirtd
def test_dev_command_reports_the_running_daemon_and_starts_nothing(
    libvirt_system: libvirt.virConnect,
) -> None:
    from typer.testing import CliRunner

    from wattvisor.cli.main import app

    result = CliRunner().invoke(app, ["dev", "libvirtd-up", "--timeout", "10"])
    assert result.exit_code == 0, result.output
    assert "libvirtd already answers on qemu:///system; nothing started" in result.output
    assert CliRunner().invoke(app, ["host", "libvirtd-up"]).exit_code != 0  # moved to `dev`


def test_a_program_installed_after_a_process_started_is_seen_as_newer(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """How `dev libvirtd-up` knows a running libvirtd predates iptables."""
    installed_later = tmp_path / "iptables"
    installed_later.write_text("#!/bin/sh\n")
    link = tmp_path / "iptables-link"
    link.symlink_to(installed_later)
    assert dev_libvirtd.process_started_before(sleeper.pid, installed_later)
    assert dev_libvirtd.process_started_before(sleeper.pid, link)
    assert not dev_libvirtd.process_started_before(sleeper.pid, Path("/bin/sh"))
    assert not dev_libvirtd.process_started_before(sleeper.pid, tmp_path / "missing")


def test_summary_carries_notes_about_the_running_daemon() -> None:
    running = StartedDaemons(uri=dev_libvirtd.SYSTEM_URI, already_running=True,
                             notes=("libvirtd (pid 7) started before iptables",))  # fmt: skip
    assert running.summary().endswith("nothing started; note: libvirtd (pid 7) started before "
                                      "iptables")  # fmt: skip
