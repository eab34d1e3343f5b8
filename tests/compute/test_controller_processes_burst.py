"""A burst of 100 creates shared by two ``wattvisor controller`` processes on one
PostgreSQL, one of them SIGKILLed halfway; the host is a real ``wattvisor agent``
process on libvirt's test driver (``host.libvirt_uri = test:///default``), so the
burst takes seconds, not the minutes of TCG guests (test_controller_processes.py
has those). Every server ends ACTIVE or ERROR, placement holds exactly what the
servers hold, and the host has one domain per built server, none twice.

The API the agent joins and heartbeats to runs in this process and only queues
(as a request does); the two controllers run the tasks and call the agent.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends

from api.served_app import free_port, serving
from compute.principals import ADMIN, ALICE
from wattvisor.allinone import build_host_trust
from wattvisor.api.app import create_app
from wattvisor.api.host_trust_routes import build_host_trust_router
from wattvisor.api.image_file_routes import build_image_file_router
from wattvisor.api.v1_routes import build_v1_router
from wattvisor.auth.fastapi import Authenticator, make_admin_dependency
from wattvisor.auth.keys import bootstrap_admin
from wattvisor.compute import Compute, HostClient
from wattvisor.compute.host_trust import HostTrust
from wattvisor.compute.hostclient_http import HttpHostClient
from wattvisor.config import Settings, load_settings
from wattvisor.images import GuestImage
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

try:
    from support.postgres import PostgresServer
except ImportError:  # tests/ is a package itself
    from tests.support.postgres import PostgresServer  # type: ignore[no-redef]

SERVERS = 100
WAIT_S = 300.0
START_S = 300.0  # the machine may be loaded: three Python processes start at once


@dataclass
class Burst:
    compute: Compute
    trust: HostTrust
    settings: Settings
    env: dict[str, str]
    url: str
    logs: Path
    started: list[subprocess.Popen[bytes]]

    def spawn(self, name: str, argv: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "wattvisor.cli", *argv],
            env={**self.env, **extra}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def until(self, what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.1)
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.logs.glob("*.log")))  # fmt: skip
        raise AssertionError(f"{what} not within {timeout_s} s\n{logs}")


@pytest.fixture
def burst(
    postgres_server: PostgresServer, guest_image: GuestImage, world_readable_tmp: Path
) -> Iterator[Burst]:
    url = postgres_server.create_database()
    template = f"wvburst-{secrets.token_hex(3)}-%04x"
    data_dir = world_readable_tmp / "controllers"  # one cluster key and admin key for all
    settings = load_settings(
        data_dir=data_dir,
        store={"url": url},
        host={"instance_name_template": template, "cpu_allocation_ratio": 16},
        energy={"source": "model"},
        compute={"ready_image": False, "task_lease_s": 3, "task_poll_s": 0.1,
                 "power_sync_interval_s": 0},
        agent={"call_timeout_s": 60, "down_after_s": 60},
    )  # fmt: skip
    engine = make_engine(url)
    migrate(engine)
    placement = Placement(engine)
    trust, _notes = build_host_trust(settings, engine, placement)
    signer = trust.signer
    assert signer is not None

    def open_agent(agent_url: str) -> HostClient:
        return HttpHostClient(agent_url, signer.controller_token, timeout_s=60.0)

    compute = Compute.build(engine, placement, settings, client_factory=open_agent)
    compute.servers.runs_tasks = False  # this process only queues, as a request does
    admin = bootstrap_admin(settings).user
    compute.users.register(admin.name, admin.project, admin.role, admin.public_key, replace=True)
    compute.ensure_default_flavors()
    # Small enough that the test driver's host (16 CPUs at 16 vCPUs each, 3 GiB) takes all.
    compute.catalog.create_flavor("speck", 1, 16, 0)
    compute.catalog.create_image(
        "idle", kernel_path=str(guest_image.kernel), initrd_path=str(guest_image.initrd),
        cmdline=guest_image.cmdline("idle"),
    )  # fmt: skip
    authenticator = Authenticator(
        compute.users.lookup, settings.auth, host_keys=trust.host_keys,
        join_verifier=trust.join_verifier,
    )  # fmt: skip
    authenticated = authenticator.dependency
    admin_only = make_admin_dependency(authenticated)
    app = create_app(
        settings, placement=placement, placement_dependencies=[Depends(admin_only)],
        routers=[
            build_v1_router(compute, authenticated, admin_only),
            build_image_file_router(compute, authenticated),
            build_host_trust_router(trust, authenticator, authenticated, admin_only),
        ],
        authenticator=authenticator,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTVISOR_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    env["PYTHONUNBUFFERED"] = "1"
    logs = world_readable_tmp / "logs"
    logs.mkdir()
    made = Burst(compute, trust, settings, env, url, logs, [])
    try:
        with serving(app) as port:
            made.url = f"http://127.0.0.1:{port}"
            yield made
    finally:
        for process in made.started:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(60)
        compute.close()
        engine.dispose()


def _start_agent(burst: Burst, directory: Path) -> Callable[[], str]:
    """Start ``wattvisor agent`` on test:///default, joining the API here; returns what
    waits for its host to be up and gives the host's uuid."""
    before = {h.provider_uuid for h in burst.compute.hosts.list_all()}
    token = burst.trust.create_join_token(ADMIN, timedelta(hours=1)).token
    burst.spawn(
        "agent", ["agent", "--controller", burst.url, "--join-token", token],
        WATTVISOR_DATA_DIR=str(directory),
        WATTVISOR_HOST__LIBVIRT_URI="test:///default",
        WATTVISOR_HOST__VIRT_TYPE="qemu",
        WATTVISOR_AGENT__LISTEN=f"127.0.0.1:{free_port()}",
        WATTVISOR_AGENT__HEARTBEAT_S="0.5",
        WATTVISOR_ENERGY__SOURCE="model",
        WATTVISOR_METRICS__LISTEN=f"127.0.0.1:{free_port()}",
    )  # fmt: skip

    def joined() -> str:
        up = burst.until("the agent's host to join and be up", lambda: [
            h for h in burst.compute.hosts.list_all()
            if h.provider_uuid not in before and h.state == "up"
        ], START_S)  # fmt: skip
        return str(up[0].provider_uuid)

    return joined


def _start_controller(burst: Burst, name: str) -> subprocess.Popen[bytes]:
    process = burst.spawn(
        name, ["controller", "--port", str(free_port())],
        WATTVISOR_DATA_DIR=str(burst.settings.data_dir),
        WATTVISOR_STORE__URL=burst.settings.store_url,
        WATTVISOR_HOST__INSTANCE_NAME_TEMPLATE=burst.settings.host.instance_name_template,
        WATTVISOR_COMPUTE__READY_IMAGE="false",
        WATTVISOR_COMPUTE__WORKERS="4",
        WATTVISOR_COMPUTE__TASK_LEASE_S="3",
        WATTVISOR_COMPUTE__TASK_POLL_S="0.1",
        WATTVISOR_AGENT__CALL_TIMEOUT_S="60",
        WATTVISOR_AGENT__DOWN_AFTER_S="60",
        WATTVISOR_METRICS__LISTEN=f"127.0.0.1:{free_port()}",
        COLUMNS="250",
    )  # fmt: skip
    return process


def _serving(burst: Burst, name: str) -> None:
    burst.until(f"controller {name} to serve", lambda: "Ctrl-C" in burst.log(name), START_S)


def _consumers_and_holders(compute: Compute) -> tuple[list[str], set[str]]:
    consumers: list[str] = []
    for host in compute.hosts.list_all():
        _generation, held = compute.hosts.placement.get_provider_allocations(host.provider_uuid)
        consumers += [c.consumer_uuid for c in held]
    holders = {s.uuid for s in compute.servers.list_all(ADMIN) if s.host_uuid is not None}
    return consumers, holders


def test_two_controllers_share_100_creates_on_an_agent_and_one_killed_halfway_loses_none(
    burst: Burst, world_readable_tmp: Path
) -> None:
    compute = burst.compute
    setup = time.monotonic()
    joined = _start_agent(burst, world_readable_tmp / "agent")  # all three start at once
    doomed = _start_controller(burst, "first")
    survivor = _start_controller(burst, "second")
    host_uuid = joined()
    _serving(burst, "first")
    _serving(burst, "second")
    present = set(compute.hosts.client(host_uuid).domain_states())  # the test driver's own

    print(f"\nagent and controllers up in {time.monotonic() - setup:.1f} s")
    began = time.monotonic()
    uuids = [
        compute.servers.create(ALICE, f"burst-{i}", "speck", "idle").uuid for i in range(SERVERS)
    ]
    burst.until("half the servers to settle", lambda: sum(
        s.status != "BUILD" for s in compute.servers.list_all(ADMIN)
    ) >= SERVERS // 2)  # fmt: skip
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(60)
    for uuid in uuids:
        compute.servers.wait(uuid, WAIT_S)
    took = time.monotonic() - began
    assert survivor.poll() is None, burst.log("second")

    records = {s.uuid: s for s in compute.servers.list_all(ADMIN)}
    assert set(records) == set(uuids)
    statuses = [s.status for s in records.values()]
    assert set(statuses) <= {"ACTIVE", "ERROR"}, statuses
    faults = sorted({s.fault_detail or s.fault or "" for s in records.values() if s.fault})
    # The host has room for all: a kill costs retries, not servers (most of them at least).
    assert statuses.count("ACTIVE") >= SERVERS * 9 // 10, faults[:5]
    for record in records.values():
        assert record.task is None, record
        if record.status == "ERROR":
            assert record.fault, record
        else:
            assert record.host_uuid == host_uuid and record.domain_name, record
    consumers, holders = _consumers_and_holders(compute)
    assert sorted(consumers) == sorted(holders)  # each holder once, nobody else
    domains = compute.hosts.client(host_uuid).domain_states()
    built = {u for u, s in records.items() if s.domain_name is not None}
    assert set(domains) - present == built  # one domain per built server, none left over
    names = [s.domain_name for s in records.values() if s.domain_name is not None]
    assert len(names) == len(set(names))  # no domain name given twice
    print(f"\n{SERVERS} creates settled in {took:.1f} s "
          f"({statuses.count('ACTIVE')} ACTIVE, {statuses.count('ERROR')} ERROR)")  # fmt: skip

    began = time.monotonic()
    for uuid in uuids:
        compute.servers.delete(ADMIN, uuid)
    for uuid in uuids:
        compute.servers.wait(uuid, WAIT_S)
    print(f"{SERVERS} deletes settled in {time.monotonic() - began:.1f} s")
    assert {s.status for s in compute.servers.list_all(ADMIN, include_deleted=True)} == {"DELETED"}
    assert set(compute.hosts.client(host_uuid).domain_states()) == present
    assert _consumers_and_holders(compute) == ([], set())
