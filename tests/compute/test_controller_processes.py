"""Controllers as processes on one PostgreSQL and one real libvirtd (QEMU, TCG), as a
fleet runs: a controller killed mid-build leaves a task another one finishes, with
exactly one domain per server and nothing held for a server without a host."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from compute.principals import ADMIN, ALICE
from support.guest_domains import destroy_and_undefine
from wattvisor.compute import Compute, LocalHostClient
from wattvisor.config import load_settings
from wattvisor.host.driver import HostDriver
from wattvisor.images import GuestImage
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

try:
    from support.postgres import PostgresServer
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import PostgresServer  # type: ignore[no-redef]

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

CONTROLLER = Path(__file__).with_name("controller_process.py")
WAIT_S = 180.0
SERVERS = 12


class _Controller:
    """One controller process; its output lines arrive on a queue (read on a thread, so
    waiting for a line has a deadline)."""

    def __init__(self, raw_settings: str, hang_at: str = "") -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.process = subprocess.Popen(
            [sys.executable, str(CONTROLLER), raw_settings, hang_at],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def expect(self, prefix: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
            if self.process.poll() is not None and self.lines.empty():
                break
        stderr = self.process.stderr.read() if self.process.poll() is not None else ""
        raise AssertionError(f"controller never said {prefix!r}: {stderr}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT_S)


@pytest.fixture
def fleet(
    postgres_server: PostgresServer,
    libvirt_system: libvirt.virConnect,
    guest_image: GuestImage,
    world_readable_tmp: Path,
) -> Iterator[tuple[Compute, Callable[[str], _Controller], dict[str, Any]]]:
    """The store and host the controllers share, a compute service that only queues tasks
    (what an API request does), and a way to start controllers."""
    url = postgres_server.create_database()
    migrate(url)
    raw: dict[str, Any] = {
        "data_dir": str(world_readable_tmp / "data"),
        "store": {"url": url},
        "host": {"libvirt_uri": "qemu:///system", "virt_type": "qemu",
                 "instance_name_template": f"wvfleet-{secrets.token_hex(4)}-%04x"},
        "compute": {"stop_timeout_s": 1, "task_lease_s": 3, "task_poll_s": 0.1, "workers": 2,
                    "power_sync_interval_s": 1},
    }  # fmt: skip
    settings = load_settings(**raw)
    engine = make_engine(url)
    compute = Compute.build(engine, Placement(engine), settings)
    compute.servers.runs_tasks = False
    compute.hosts.add(
        LocalHostClient(HostDriver(settings.host, settings.data_dir, uri="qemu:///system")),
        name="fleet-host",
    )
    compute.ensure_default_flavors()
    compute.catalog.create_image(
        "idle", kernel_path=str(guest_image.kernel), initrd_path=str(guest_image.initrd),
        cmdline=guest_image.cmdline("idle"),
    )  # fmt: skip
    started: list[_Controller] = []

    def start(hang_at: str = "") -> _Controller:
        controller = _Controller(json.dumps(raw), hang_at)
        started.append(controller)
        controller.expect("ready")
        return controller

    try:
        yield compute, start, raw
    finally:
        for controller in started:
            controller.kill()
        prefix = raw["host"]["instance_name_template"].split("%")[0]
        for dom in libvirt_system.listAllDomains():
            if dom.name().startswith(prefix):
                with contextlib.suppress(libvirt.libvirtError):
                    destroy_and_undefine(dom)
        compute.close()
        engine.dispose()


def _domains(conn: libvirt.virConnect, raw: dict[str, Any]) -> dict[str, str]:
    """This test's domains on the host: uuid -> name."""
    prefix = raw["host"]["instance_name_template"].split("%")[0]
    return {d.UUIDString(): d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)}


def _consumers_and_holders(compute: Compute) -> tuple[set[str], set[str]]:
    """Placement's consumers on every host, and the servers holding a host."""
    consumers: set[str] = set()
    for host in compute.hosts.list_all():
        _generation, held = compute.hosts.placement.get_provider_allocations(host.provider_uuid)
        consumers |= {c.consumer_uuid for c in held}
    holders = {s.uuid for s in compute.servers.list_all(ADMIN) if s.host_uuid is not None}
    return consumers, holders


def _wait_settled(compute: Compute, uuids: list[str]) -> None:
    for uuid in uuids:
        compute.servers.wait(uuid, WAIT_S)


@pytest.mark.parametrize("hang_at", ["before", "after"])
def test_a_build_whose_controller_is_killed_is_finished_by_another_with_one_domain(
    fleet: tuple[Compute, Callable[..., _Controller], dict[str, Any]],
    libvirt_system: libvirt.virConnect,
    hang_at: str,
) -> None:
    compute, start, raw = fleet
    doomed = start(hang_at)
    server = compute.servers.create(ALICE, "crash", "tiny", "idle")
    assert doomed.expect("hung") == f"hung {server.uuid}"
    if hang_at == "after":
        assert server.uuid in _domains(libvirt_system, raw)
    doomed.kill()
    start()  # another controller (or the same one restarted: nothing is kept in memory)
    compute.servers.wait(server.uuid, WAIT_S)
    record = compute.servers.get(ADMIN, server.uuid)
    assert (record.status, record.task, record.fault) == ("ACTIVE", None, None)
    domains = _domains(libvirt_system, raw)
    assert domains == {server.uuid: record.domain_name}  # exactly one domain, its own
    consumers, holders = _consumers_and_holders(compute)
    assert consumers == holders == {server.uuid}

    compute.servers.delete(ALICE, server.uuid)
    compute.servers.wait(server.uuid, WAIT_S)
    assert compute.servers.get(ADMIN, server.uuid).status == "DELETED"
    assert _domains(libvirt_system, raw) == {}
    assert _consumers_and_holders(compute) == (set(), set())
    instances = Path(raw["data_dir"]) / "instances"
    assert not (instances / server.uuid).exists()


def test_two_controllers_take_creates_between_them_and_one_killed_halfway_loses_none(
    fleet: tuple[Compute, Callable[..., _Controller], dict[str, Any]],
    libvirt_system: libvirt.virConnect,
) -> None:
    compute, start, raw = fleet
    first, second = start(), start()
    uuids = [
        compute.servers.create(ALICE, f"fleet-{i}", "tiny", "idle").uuid for i in range(SERVERS)
    ]
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        settled = [s for s in compute.servers.list_all(ADMIN) if s.status != "BUILD"]
        if len(settled) >= SERVERS // 2:
            break
        time.sleep(0.2)
    first.kill()
    _wait_settled(compute, uuids)
    records = {s.uuid: s for s in compute.servers.list_all(ADMIN)}
    assert set(records) == set(uuids)
    assert {s.status for s in records.values()} <= {"ACTIVE", "ERROR"}
    for record in records.values():
        assert record.task is None
        if record.status == "ERROR":
            assert record.fault, record
    consumers, holders = _consumers_and_holders(compute)
    assert consumers == holders
    domains = _domains(libvirt_system, raw)
    assert set(domains) == {u for u, s in records.items() if s.domain_name is not None}
    assert all(domains[u] == records[u].domain_name for u in domains)
    assert second.process.poll() is None  # the survivor did the rest

    for uuid in uuids:
        compute.servers.delete(ADMIN, uuid)
    _wait_settled(compute, uuids)
    assert {s.status for s in compute.servers.list_all(ADMIN, include_deleted=True)} == {"DELETED"}
    assert _domains(libvirt_system, raw) == {}
    assert _consumers_and_holders(compute) == (set(), set())
    instances = Path(raw["data_dir"]) / "instances"
    assert not any((instances / uuid).exists() for uuid in uuids)
