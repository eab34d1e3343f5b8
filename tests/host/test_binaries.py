"""Every program the code runs is named in one list, installed by setup, and present here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.spawned_programs import PYTHON, scan, spawn_sites
from wattvisor.host import binaries
from wattvisor.host.binaries import BINARIES, Binary

REPO = Path(__file__).resolve().parents[2]
LISTED = {b.name for b in BINARIES}


@pytest.mark.parametrize("binary", BINARIES, ids=lambda b: b.name)
def test_each_required_program_is_installed(binary: Binary) -> None:
    assert binary.location() is not None, binary.missing_message()


def test_sources_run_no_program_the_list_does_not_name() -> None:
    # The list's own module looks up exactly the programs it lists.
    sites = [s for s in scan(REPO / "src", REPO / "tests", REPO / "bench")
             if s.path != Path(binaries.__file__)]  # fmt: skip
    unresolved = [f"{s.where()}: {s.problem}" for s in sites if s.problem]
    assert not unresolved, "calls whose program cannot be told:\n" + "\n".join(unresolved)
    unlisted = {
        f"{s.where()}: {program}"
        for s in sites
        for program in s.programs
        if program not in LISTED | {PYTHON}
    }
    assert not unlisted, (
        "programs run but not named in wattvisor.host.binaries.BINARIES:\n" + "\n".join(unlisted)
    )
    # The scan really sees the calls it guards (a scan that finds nothing proves nothing).
    found = {p for s in sites for p in s.programs}
    assert {"libvirtd", "virtlogd", "groupadd", "useradd", "apt-get", "dpkg-deb", "pg_ctl",
            "runuser", "prometheus", "cpio"} <= found  # fmt: skip


def test_scan_finds_programs_behind_helpers_and_flags_what_it_cannot_tell(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import os, shutil, subprocess as sp\n"
        "from subprocess import Popen\n"
        "TOOL = '/opt/bin/frobnicate'\n"
        "def _run(argv, root=False):\n"
        "    prefix = ['sudo'] if root else []\n"
        "    return sp.run(prefix + argv, check=True)\n"
        "def find(name):\n"
        "    found = shutil.which(name) or shutil.which(name, path='/sbin')\n"
        "    return found\n"
        "def start(name):\n"
        "    binary = find(name)\n"
        "    Popen([binary, '--daemon'])\n"
        "def main(cmd):\n"
        "    _run(['mkfs.ext4', '/dev/x'])\n"
        "    start('widgetd')\n"
        "    os.system(f'{TOOL} --all')\n"
        "    os.execvp(TOOL, [TOOL])\n"
        "    sp.check_call(cmd)\n"
    )
    sites = {site.line: site for site in spawn_sites(source)}
    assert sites[6].programs == {"sudo", "mkfs.ext4"}
    assert sites[8].programs == {"widgetd"}
    assert sites[12].programs == {"widgetd"}
    assert sites[16].problem is not None and "f-string" in sites[16].problem
    assert sites[17].programs == {"frobnicate"}
    assert sites[18].problem is not None and "cmd" in sites[18].problem


def test_setup_installs_the_package_of_every_program() -> None:
    """setup.sh takes its package list from the module itself, run by the system Python."""
    printed = subprocess.run(
        [sys.executable, str(REPO / "src/wattvisor/host/binaries.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert printed == binaries.debian_packages()
    assert {"qemu-utils", "iptables", "dnsmasq-base"} <= set(printed)
    setup = (REPO / "scripts/setup.sh").read_text()
    assert 'runtime=$(python3 "$BINARIES_MODULE")' in setup
    assert "BINARIES_MODULE=src/wattvisor/host/binaries.py" in setup
    assert "--no-install-recommends" in setup and "policy-rc.d" in setup


def test_a_missing_program_says_what_fails_and_which_package_brings_it() -> None:
    absent = Binary("wv-no-such-tool", "wv-tools", "host", "volumes cannot be created")
    assert absent.location() is None
    message = absent.missing_message()
    assert "wv-no-such-tool" in message and "wv-tools" in message
    assert "volumes cannot be created" in message
    assert binaries.missing("host") == [b for b in binaries.binaries("host") if not b.location()]
