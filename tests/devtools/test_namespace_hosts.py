"""Several libvirt hosts on one machine: each its own daemon, reachable, migratable, removed."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from support import namespace_hosts as nsh
from support.guest_domains import (
    GuestDomainSpec,
    destroy_and_undefine,
    unique_domain_name,
    wait_for_marker,
)
from support.namespace_hosts import NamespaceFleet, NamespaceHost
from wattvisor.images import GuestImage

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.libvirtd


def _capabilities_uuid(conn: libvirt.virConnect) -> str:
    found = ET.fromstring(conn.getCapabilities()).findtext("host/uuid")
    assert found is not None
    return found


def _missing(conn: libvirt.virConnect, name: str) -> bool:
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        return bool(exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)
    return False


@pytest.fixture
def domains_on(
    two_hosts: tuple[NamespaceHost, NamespaceHost],
) -> Iterator[list[str]]:
    """Names of domains a test starts on A or B; destroyed on both afterwards."""
    names: list[str] = []
    yield names
    for host in two_hosts:
        with host.connect() as conn:
            for name in names:
                # A guest powering off may vanish between lookup and destroy.
                with contextlib.suppress(libvirt.libvirtError):
                    destroy_and_undefine(conn.lookupByName(name))


def _guest_xml(image: GuestImage, directory: Path, memory_mib: int = 128) -> tuple[str, str, Path]:
    name = unique_domain_name()
    console = directory / f"{name}.log"
    spec = GuestDomainSpec(
        name=name, image=image, cmdline=image.cmdline("idle"), serial_log=console,
        memory_mib=memory_mib,
    )  # fmt: skip
    return name, spec.xml(), console


def test_each_host_answers_over_tcp_with_its_own_uuid_and_name(
    two_hosts: tuple[NamespaceHost, NamespaceHost],
) -> None:
    a, b = two_hosts
    assert a.uri == f"qemu+tcp://{a.address}/system"
    seen = {}
    for host in (a, b):
        with host.connect() as conn:
            seen[host.name] = (_capabilities_uuid(conn), conn.getHostname())
    assert seen == {a.name: (a.host_uuid, a.name), b.name: (b.host_uuid, b.name)}
    assert a.host_uuid != b.host_uuid


@pytest.mark.guest
def test_a_domain_of_one_host_is_invisible_to_the_machine_and_the_other_host(
    two_hosts: tuple[NamespaceHost, NamespaceHost],
    libvirt_system: libvirt.virConnect,
    guest_image: GuestImage,
    world_readable_tmp: Path,
    domains_on: list[str],
) -> None:
    a, b = two_hosts
    name, xml, _console = _guest_xml(guest_image, world_readable_tmp)
    domains_on.append(name)
    with a.connect() as on_a, b.connect() as on_b:
        on_a.createXML(xml, 0)
        assert on_a.lookupByName(name).isActive()
        assert _missing(libvirt_system, name)
        assert _missing(on_b, name)
        # And the other way round: the machine's own domains stay the machine's.
        root_name, root_xml, _ = _guest_xml(guest_image, world_readable_tmp)
        root_domain = libvirt_system.defineXML(root_xml)
        try:
            assert _missing(on_a, root_name)
            assert _missing(on_b, root_name)
        finally:
            destroy_and_undefine(root_domain)


@pytest.mark.guest
def test_a_running_guest_migrates_live_from_one_host_to_the_other(
    two_hosts: tuple[NamespaceHost, NamespaceHost],
    guest_image: GuestImage,
    world_readable_tmp: Path,
    domains_on: list[str],
) -> None:
    a, b = two_hosts
    name, xml, console = _guest_xml(guest_image, world_readable_tmp)
    domains_on.append(name)
    with a.connect() as on_a, b.connect() as on_b:
        domain = on_a.createXML(xml, 0)
        wait_for_marker(console, "WV-IDLE", timeout_s=120)
        domain.migrateToURI3(
            b.uri,
            {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{b.address}"},
            libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER,
        )
        assert _missing(on_a, name)
        moved = on_b.lookupByName(name)
        state, _reason = moved.state()
        assert state == libvirt.VIR_DOMAIN_RUNNING
        # It still runs guest code on B: it answers the ACPI power button there.
        moved.shutdown()
        wait_for_marker(console, "WV-POWER-BUTTON", timeout_s=60)


def test_a_host_whose_link_is_down_cannot_be_reached_until_it_is_up_again(
    make_namespace_hosts: Any,
) -> None:
    (host,) = make_namespace_hosts(1)
    assert nsh.tcp_answers(host.address)
    host.link_down()
    assert not nsh.tcp_answers(host.address, timeout_s=1.0)
    host.link_up()
    deadline = time.monotonic() + 10
    while not nsh.tcp_answers(host.address) and time.monotonic() < deadline:
        time.sleep(0.1)
    with host.connect() as conn:
        assert conn.getHostname() == host.name


def test_libvirt_dirs_are_mounted_only_inside_the_host(
    two_hosts: tuple[NamespaceHost, NamespaceHost],
) -> None:
    a, _b = two_hosts
    assert a.anchor_pid is not None
    inside = Path(f"/proc/{a.anchor_pid}/mountinfo").read_text()
    for sub, target in nsh.LIBVIRT_DIRS.items():
        assert f"{a.directory / sub} {target} " in inside
    assert str(a.directory) not in Path("/proc/self/mountinfo").read_text()
    shown = a.run([sys.executable, "-c", "print(open('/etc/libvirt/libvirtd.conf').read())"])
    assert shown.stdout.count(f'host_uuid = "{a.host_uuid}"') == 1


def test_a_long_running_process_runs_inside_the_host_with_the_environment_given(
    two_hosts: tuple[NamespaceHost, NamespaceHost],
) -> None:
    a, _b = two_hosts
    probe = (
        "import os, socket; print(os.environ['WV_PROBE'], socket.gethostname(), "
        "os.readlink('/proc/self/ns/net'), os.readlink('/proc/self/ns/mnt'))"
    )
    proc = a.popen(
        [sys.executable, "-c", probe], env={**os.environ, "WV_PROBE": "agent-1"},
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _err = proc.communicate(timeout=30)
    anchor = f"/proc/{a.anchor_pid}/ns"
    assert out.decode().split() == [
        "agent-1",
        a.name,
        os.readlink(f"{anchor}/net"),
        os.readlink(f"{anchor}/mnt"),
    ]


def test_asking_for_no_hosts_is_refused_with_the_count() -> None:
    with pytest.raises(ValueError, match="count=0"):
        NamespaceFleet().add_hosts(0)


# --- clean-up, seen from outside a whole test session ------------------------------------

INNER_CONFTEST = """
import pytest

pytest_plugins = ("support.namespace_hosts",)


@pytest.fixture(scope="session")
def libvirt_system():
    return None  # the outer session made sure a usable libvirt is installed
"""

INNER_SUITE = """
import json, os, signal
from pathlib import Path

from support import namespace_hosts as nsh


def record(host, **extra):
    inode = nsh._netns_inode(host.name)
    pids = nsh.processes_in_netns(inode)
    entry = {
        "name": host.name, "bridge": host.record.bridge, "directory": str(host.directory),
        "pids": {p: nsh._start_ticks(p) for p in pids},
        "cgroups": [str(c) for p in pids for c in nsh._libvirt_cgroups(p)],
        **extra,
    }
    with open(os.environ["WV_RECORD"], "a") as out:
        out.write(json.dumps(entry) + "\\n")


def test_fails_with_two_hosts_up(two_hosts):
    for host in two_hosts:
        child = host.popen(["sleep", "300"])
        record(host, child=child.pid)
    assert False, "on purpose"


def test_fails_after_the_daemon_crashed_under_a_guest(make_namespace_hosts):
    (host,) = make_namespace_hosts(1)
    with host.connect() as conn:
        conn.createXML(os.environ["WV_GUEST_XML"], 0)
    record(host)
    os.kill(host.daemon_pid("libvirtd"), signal.SIGKILL)
    assert False, "on purpose"


def test_interrupted(make_namespace_hosts):
    (host,) = make_namespace_hosts(1)
    record(host)
    if os.environ.get("WV_HOW") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise KeyboardInterrupt
"""


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_nothing_left(records: list[dict[str, Any]]) -> None:
    assert records, "the inner suite recorded no host"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    mounts = Path("/proc/self/mountinfo").read_text()
    for entry in records:
        name = entry["name"]
        assert name not in netns and not (nsh.NETNS_DIR / name).exists()
        assert name not in links and entry["bridge"] not in links
        assert entry["directory"] not in mounts and name not in mounts
        assert not Path(entry["directory"]).exists()
        assert not Path(entry["directory"]).parent.exists()
        alive = [  # a zombie waiting for its parent to reap it holds nothing any more
            p for p, ticks in entry["pids"].items()
            if nsh._start_ticks(int(p)) == ticks and not nsh._zombie(int(p))
        ]  # fmt: skip
        assert not alive, f"processes of {name} still run: {alive}"
        left = [c for c in entry["cgroups"] if Path(c).exists()]
        assert not left, f"cgroups of {name} remain: {left}"


@pytest.fixture
def inner_suite(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    guest_image: GuestImage,
    world_readable_tmp: Path,
) -> pytest.Pytester:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=INNER_SUITE)
    _name, xml, _console = _guest_xml(guest_image, world_readable_tmp)
    monkeypatch.setenv("PYTHONPATH", f"{REPO / 'tests'}:{REPO / 'src'}")
    monkeypatch.setenv("WV_RECORD", str(pytester.path / "record.jsonl"))
    monkeypatch.setenv("WV_GUEST_XML", xml)
    monkeypatch.delenv("CI", raising=False)
    return pytester


def _run(suite: pytest.Pytester, *args: str) -> pytest.RunResult:
    return suite.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


@pytest.mark.guest
def test_failing_tests_and_a_crashed_daemon_leave_nothing_behind(
    inner_suite: pytest.Pytester,
) -> None:
    result = _run(inner_suite, "-k", "not interrupted")
    result.assert_outcomes(failed=2)
    records = _records(inner_suite.path / "record.jsonl")
    assert len(records) == 3
    # The crashed daemon's guest was running in a cgroup of its own; it is gone too.
    assert any(entry["cgroups"] for entry in records)
    _assert_nothing_left(records)


def test_an_interrupted_session_leaves_nothing_behind(inner_suite: pytest.Pytester) -> None:
    result = _run(inner_suite, "-k", "interrupted")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    _assert_nothing_left(_records(inner_suite.path / "record.jsonl"))


def test_the_next_session_sweeps_what_a_killed_one_left_and_spares_live_ones(
    inner_suite: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    two_hosts: tuple[NamespaceHost, NamespaceHost],
    namespace_fleet: NamespaceFleet,
) -> None:
    monkeypatch.setenv("WV_HOW", "kill")
    result = _run(inner_suite, "-k", "interrupted")
    assert result.ret == -9
    records = _records(inner_suite.path / "record.jsonl")
    (left,) = records
    assert (nsh.NETNS_DIR / left["name"]).exists()  # the kill really left it behind
    swept = nsh.sweep_leftovers()
    assert left["name"] in swept and left["bridge"] in swept
    _assert_nothing_left(records)
    # This session is alive: its hosts and its state are untouched.
    assert namespace_fleet.bridge not in swept
    for host in two_hosts:
        with host.connect() as conn:
            assert conn.getHostname() == host.name
