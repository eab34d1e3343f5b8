"""QEMU's account must be able to enter the data directory; start-up says so before it fails."""

from __future__ import annotations

import grp
import os
import pwd
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support.availability import require_root
from wattvisor.cli.main import app
from wattvisor.host.qemu_access import (
    DataDirUnreachable,
    can_search,
    check_data_dir,
    qemu_identity,
    runs_local_system_qemu,
)

QEMU_USER = "libvirt-qemu"
NO_CONF = Path("/nonexistent/qemu.conf")  # libvirt's defaults apply
_UNDEFINED = 0xFFFFFFFF


def _write_conf(tmp_path: Path, text: str) -> Path:
    conf = tmp_path / "qemu.conf"
    conf.write_text(text)
    return conf


@pytest.mark.parametrize(
    ("uri", "local_system"),
    [
        ("qemu:///system", True),
        ("qemu+unix:///system", True),
        ("qemu:///system?socket=/run/x", True),
        ("qemu:///session", False),
        ("qemu+tcp://hostb/system", False),
        ("qemu+ssh://root@hostb/system", False),
        ("test:///default", False),
    ],
)
def test_only_this_machines_system_daemon_runs_qemu_as_the_conf_user(
    uri: str, local_system: bool
) -> None:
    assert runs_local_system_qemu(uri) is local_system


def test_identity_comes_from_qemu_conf_else_libvirts_default(tmp_path: Path) -> None:
    default = qemu_identity(NO_CONF)
    assert default is not None and default.user == QEMU_USER
    assert default.uid == pwd.getpwnam(QEMU_USER).pw_uid
    assert grp.getgrnam("libvirt-qemu").gr_gid in default.gids
    assert grp.getgrnam("kvm").gr_gid in default.gids  # supplementary, as libvirt sets them

    conf = _write_conf(tmp_path, '# user = "libvirt-qemu"\nuser = "nobody"  # here\ngroup = "+0"\n')
    nobody = qemu_identity(conf)
    assert nobody is not None
    assert (nobody.user, nobody.uid) == ("nobody", pwd.getpwnam("nobody").pw_uid)
    assert 0 in nobody.gids

    root = qemu_identity(_write_conf(tmp_path, 'user = "+0"\n'))
    assert root is not None and root.is_root
    assert qemu_identity(_write_conf(tmp_path, 'user = "wv-no-such-user"\n')) is None


def test_a_0700_ancestor_is_refused_with_directory_mode_and_what_to_do(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    data_dir = private / "data"
    data_dir.mkdir()
    conf = _write_conf(tmp_path, 'user = "nobody"\ngroup = "nogroup"\n')
    with pytest.raises(DataDirUnreachable) as refused:
        check_data_dir(data_dir, "qemu:///system", conf)
    message = str(refused.value)
    # tmp_path's own parents are 0700 too; the message names the first one on the way down.
    blocked = next(p for p in [*reversed(data_dir.parents), data_dir]
                   if not p.stat().st_mode & 0o001)  # fmt: skip
    assert f"cannot enter {str(blocked)!r} (mode 0700" in message
    assert f"chmod o+x {blocked}" in message and "data_dir" in message
    assert "'nobody'" in message and str(conf) in message


def test_no_check_for_other_drivers_or_when_qemu_runs_as_root(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    nobody = _write_conf(tmp_path, 'user = "nobody"\n')
    check_data_dir(private, "test:///default", nobody)
    check_data_dir(private, "qemu+tcp://hostb/system", nobody)
    check_data_dir(private, "qemu:///system", _write_conf(tmp_path, 'user = "root"\n'))


def _acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def _kvm() -> int:
    return grp.getgrnam("kvm").gr_gid


def _qemu() -> int:
    return pwd.getpwnam(QEMU_USER).pw_uid


# name -> (mode, owner is QEMU's user, group is QEMU's group, access ACL or None, may enter)
CASES = {
    "0700 root": (0o700, False, False, None, False),
    "0711 root": (0o711, False, False, None, True),
    "0750 its group": (0o750, False, True, None, True),
    "0705 its group without x": (0o705, False, True, None, False),
    "0700 its own": (0o700, True, False, None, True),
    "0070 its own": (0o070, True, True, None, False),
    "acl user x": (0o700, False, False, lambda: _acl(
        (0x01, 7, _UNDEFINED), (0x02, 1, _qemu()), (0x04, 0, _UNDEFINED), (0x10, 1, _UNDEFINED),
        (0x20, 0, _UNDEFINED)), True),
    "acl user x masked": (0o700, False, False, lambda: _acl(
        (0x01, 7, _UNDEFINED), (0x02, 1, _qemu()), (0x04, 0, _UNDEFINED), (0x10, 0, _UNDEFINED),
        (0x20, 0, _UNDEFINED)), False),
    "acl group kvm x": (0o700, False, False, lambda: _acl(
        (0x01, 7, _UNDEFINED), (0x04, 0, _UNDEFINED), (0x08, 5, _kvm()), (0x10, 7, _UNDEFINED),
        (0x20, 0, _UNDEFINED)), True),
    "acl other x": (0o700, False, False, lambda: _acl(
        (0x01, 7, _UNDEFINED), (0x04, 0, _UNDEFINED), (0x20, 1, _UNDEFINED)), True),
}  # fmt: skip


@pytest.fixture
def probe_dir(world_readable_tmp: Path) -> Iterator[Path]:
    directory = world_readable_tmp / "probe"
    directory.mkdir()
    yield directory
    directory.chmod(0o755)


@pytest.mark.parametrize("case", CASES)
def test_verdict_matches_the_kernels_for_qemus_account(case: str, probe_dir: Path) -> None:
    """The kernel is the judge: QEMU's account itself tries to enter the directory."""
    require_root("changing owners and running a check as libvirt-qemu")
    mode, own, group, acl, expected = CASES[case]
    os.chown(probe_dir, _qemu() if own else 0,
             grp.getgrnam("libvirt-qemu").gr_gid if group else 0)  # fmt: skip
    probe_dir.chmod(mode)
    if acl is not None:
        os.setxattr(probe_dir, "system.posix_acl_access", acl())
    who = qemu_identity(NO_CONF)
    assert who is not None
    kernel = (
        subprocess.run(
            ["runuser", "-u", QEMU_USER, "--", "test", "-x", str(probe_dir)], check=False
        ).returncode
        == 0
    )
    assert (can_search(probe_dir, who), kernel) == (expected, expected)


def test_up_refuses_a_data_dir_qemu_cannot_reach_and_changes_nothing(tmp_path: Path) -> None:
    """Like ``WATTVISOR_DATA_DIR=$(mktemp -d) wattvisor up`` with the system daemon."""
    data_dir = tmp_path / "made-by-mktemp"
    data_dir.mkdir(mode=0o700)
    data_dir.chmod(0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTVISOR_")}
    env.update(WATTVISOR_DATA_DIR=str(data_dir), WATTVISOR_HOST__LIBVIRT_URI="qemu:///system",
               WATTVISOR_ENERGY__SOURCE="model", COLUMNS="80")  # fmt: skip
    result = CliRunner().invoke(app, ["up", "--port", "0"], env=env)
    assert result.exit_code == 1, result.output
    assert "cannot enter" in result.output and "(mode 0700" in result.output
    assert "chmod o+x" in result.output and "choose a data_dir" in result.output
    assert sorted(p.name for p in data_dir.iterdir()) == []  # no store, no key, no shares
