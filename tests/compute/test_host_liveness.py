"""Liveness of joined hosts (real store, SQLite and PostgreSQL): a host whose agent sent
no heartbeat for agent.down_after_s is down, shown so, and skipped by the scheduler;
its next heartbeat makes it up again. The controller opens the agent's URL on first use."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest
from biscuit_auth import KeyPair
from sqlalchemy import Table, update

from compute.conftest import second_host_uri
from compute.principals import ALICE
from wattvisor.auth import Principal
from wattvisor.auth.cluster_keys import ClusterSigner, ensure_cluster_key
from wattvisor.auth.tokens import utcnow
from wattvisor.compute import Compute, HostClient, ImageRecord, LocalHostClient
from wattvisor.compute.errors import InvalidRequest
from wattvisor.compute.host_trust import ClusterKeys, HostTrust, JoinRequest
from wattvisor.compute.hostclient_http import HttpHostClient
from wattvisor.compute.hosts import HostRegistry
from wattvisor.host.driver import HostDriver, Inventory
from wattvisor.store import write_transaction
from wattvisor.store.compute_tables import ServerRow
from wattvisor.store.trust_tables import HostAgentRow

ADMIN = Principal(user="admin", project="admin", role="admin")
AGENT_URL = "http://127.0.0.1:9"  # nothing answers: liveness is the heartbeat alone
_agents = cast(Table, HostAgentRow.__table__)
_servers = cast(Table, ServerRow.__table__)


@pytest.fixture
def joined(compute: Compute) -> Iterator[tuple[HostTrust, str]]:
    """A host joined through its agent (which never answers calls) with a fresh join."""
    settings = compute.hosts.settings
    engine = compute.hosts.engine
    files = ensure_cluster_key(settings.cluster_key_path)
    cluster = ClusterKeys(engine)
    cluster.ensure(files.public_key)
    signer = ClusterSigner(
        settings.cluster_key_path,
        lambda: cluster.require().current.public_key,
        lambda: cluster.require().cluster_id,
    )
    trust = HostTrust(engine, compute.hosts.placement, settings, cluster, signer)
    opened: list[str] = []

    def open_agent(url: str) -> HostClient:
        opened.append(url)
        return HttpHostClient(url, signer.controller_token, timeout_s=2.0)

    compute.hosts.client_factory = open_agent
    issued = trust.create_join_token(ADMIN, timedelta(hours=1))
    request = JoinRequest(
        host_id=str(uuid.uuid4()), name="agent-host", libvirt_uri="qemu:///system",
        traits=frozenset({"HW_CPU_X86_AVX2"}), inventory=Inventory(8, 16384, 100),
        energy_source="rapl", addresses=(AGENT_URL,), public_key=repr(KeyPair().public_key),
    )  # fmt: skip
    trust.join(trust.join_verifier().verify(issued.token), request)
    yield trust, request.host_id
    assert opened in ([], [AGENT_URL])


def _silence(compute: Compute, host_uuid: str, seconds: float) -> None:
    """As if the host's last heartbeat (or its join) were ``seconds`` ago."""
    past = utcnow() - timedelta(seconds=seconds)
    with write_transaction(compute.hosts.engine) as conn:
        conn.execute(
            update(_agents)
            .where(_agents.c.host_uuid == host_uuid)
            .values(joined_at=past, last_heartbeat_at=past)
        )


def test_a_joined_host_is_up_with_its_energy_source_until_its_heartbeats_stop(
    compute: Compute, joined: tuple[HostTrust, str]
) -> None:
    trust, host_uuid = joined
    host = compute.hosts.get(host_uuid)
    assert (host.state, host.energy_source, host.local) == ("up", "rapl", False)
    limit = compute.hosts.settings.agent.down_after_s
    _silence(compute, host_uuid, limit + 5)
    down = compute.hosts.get(host_uuid)
    assert down.state.startswith("down: no heartbeat from its agent for ")
    assert f"agent.down_after_s = {limit:g}" in down.state
    assert set(compute.hosts.down_hosts()) == {host_uuid}
    trust.heartbeat(host_uuid)
    assert compute.hosts.get(host_uuid).state == "up" and compute.hosts.down_hosts() == {}


def test_the_scheduler_skips_a_down_host_and_says_so(
    compute: Compute,
    joined: tuple[HostTrust, str],
    kernel_image: ImageRecord,
    settle: Callable[[str], None],
) -> None:
    _trust, host_uuid = joined
    [local] = [h for h in compute.hosts.list_all() if h.local]
    compute.hosts.set_enabled(local.provider_uuid, False)
    _silence(compute, host_uuid, compute.hosts.settings.agent.down_after_s + 5)
    server = compute.servers.create(ALICE, "nowhere", "tiny", kernel_image.id)
    settle(server.uuid)
    failed = compute.servers.get(ALICE, server.uuid)
    assert failed.status == "ERROR" and failed.host_uuid is None
    detail = failed.fault_detail or ""
    assert "1 host is down (no heartbeat from its agent)" in detail, detail
    assert "disabled by an operator" in detail
    assert "spawn errors" not in detail  # the down host was never tried


def test_the_client_of_a_joined_host_calls_its_agent_url(
    compute: Compute, joined: tuple[HostTrust, str]
) -> None:
    _trust, host_uuid = joined
    client = compute.hosts.client(host_uuid)
    assert isinstance(client, HttpHostClient) and client.uri == AGENT_URL
    assert compute.hosts.client(host_uuid) is client
    assert client.state().startswith("down")


def test_unknown_domains_are_reported_once_and_kept_per_host(
    compute: Compute, joined: tuple[HostTrust, str], caplog: pytest.LogCaptureFixture
) -> None:
    _trust, host_uuid = joined
    foreign = str(uuid.uuid4())
    compute.hosts.note_unknown_domains(host_uuid, {foreign})
    compute.hosts.note_unknown_domains(host_uuid, {foreign})
    assert compute.hosts.get(host_uuid).unknown_domains == (foreign,)
    assert sum(foreign in r.getMessage() for r in caplog.records) == 1
    compute.hosts.note_unknown_domains(host_uuid, set())
    assert compute.hosts.get(host_uuid).unknown_domains == ()


def test_power_views_go_on_without_a_host_whose_agent_does_not_answer(
    compute: Compute, joined: tuple[HostTrust, str]
) -> None:
    _trust, host_uuid = joined
    view = compute.power.project_power(ADMIN, "proj-a")
    assert view.sampled is False and view.source == "none"
    assert compute.power._meter(host_uuid) == (None, "none")
    assert compute.power._meter(host_uuid, down={host_uuid}) == (None, "none")


def _wait_reconciled(compute: Compute) -> None:
    deadline = time.monotonic() + 30
    while compute.reconciling():
        assert time.monotonic() < deadline, "the returned host was not reconciled in time"
        time.sleep(0.02)


def test_a_down_hosts_first_heartbeat_reconciles_it(
    compute: Compute,
    joined: tuple[HostTrust, str],
    kernel_image: ImageRecord,
    settle: Callable[[str], None],
    tmp_path: Path,
) -> None:
    trust, host_uuid = joined
    settings = compute.hosts.settings
    # The joined host's agent, served in-process on a test driver of its own.
    agent = LocalHostClient(
        HostDriver(settings.host, settings.data_dir, uri=second_host_uri(tmp_path))
    )
    compute.hosts.client_factory = lambda url: agent
    trust.on_return = compute.reconcile_soon
    [local] = [h for h in compute.hosts.list_all() if h.local]
    compute.hosts.set_enabled(local.provider_uuid, False)
    kept = compute.servers.create(ALICE, "kept", "tiny", kernel_image.id)
    lost = compute.servers.create(ALICE, "lost", "tiny", kernel_image.id)
    for server in (kept, lost):
        settle(server.uuid)
        assert compute.servers.get(ALICE, server.uuid).host_uuid == host_uuid
    foreign = str(uuid.uuid4())
    conn = agent.driver.connection.get()

    # While the host is down, one server's domain goes and a stranger's comes.
    _silence(compute, host_uuid, settings.agent.down_after_s + 5)
    gone = compute.servers.get(ALICE, lost.uuid)
    agent.delete(gone.uuid, gone.domain_name or "")
    conn.defineXML(
        f"<domain type='test'><name>foreign-{foreign[:8]}</name><uuid>{foreign}</uuid>"
        "<memory>1024</memory><os><type>hvm</type></os></domain>"
    )
    assert compute.servers.sync_power_states() == []  # a down host is left alone

    trust.heartbeat(host_uuid)  # back: looked at now, not at the next sync round
    _wait_reconciled(compute)
    failed = compute.servers.get(ALICE, lost.uuid)
    assert failed.status == "ERROR" and failed.fault is not None
    assert failed.fault.startswith("the host lost the server")
    assert compute.servers.get(ALICE, kept.uuid).status == "ACTIVE"
    assert compute.hosts.get(host_uuid).unknown_domains == (foreign,)
    assert conn.lookupByUUIDString(foreign) is not None  # left alone

    # An up host's heartbeat reconciles nothing; the list follows the host's domains.
    conn.lookupByUUIDString(foreign).undefine()
    trust.heartbeat(host_uuid)
    assert not compute.reconciling()
    assert compute.hosts.get(host_uuid).unknown_domains == (foreign,)
    compute.servers.reconcile_host(host_uuid)
    assert compute.hosts.get(host_uuid).unknown_domains == ()


def test_unknown_domains_are_kept_in_the_store_for_every_controller(
    compute: Compute, joined: tuple[HostTrust, str]
) -> None:
    _trust, host_uuid = joined
    foreign = str(uuid.uuid4())
    compute.hosts.note_unknown_domains(host_uuid, {foreign.upper()})
    other = HostRegistry(compute.hosts.engine, compute.hosts.placement, compute.hosts.settings)
    assert other.unknown_domains() == {host_uuid: (foreign,)}  # another controller sees it
    # A domain that a server owns now is no longer unknown.
    other.note_unknown_domains(host_uuid, set())
    assert compute.hosts.get(host_uuid).unknown_domains == ()


def test_the_power_sync_reads_the_domain_states_agents_report_instead_of_asking_the_host(
    compute: Compute,
    joined: tuple[HostTrust, str],
    kernel_image: ImageRecord,
    settle: Callable[[str], None],
    tmp_path: Path,
) -> None:
    trust, host_uuid = joined
    settings = compute.hosts.settings
    agent = LocalHostClient(
        HostDriver(settings.host, settings.data_dir, uri=second_host_uri(tmp_path))
    )
    compute.hosts.client_factory = lambda url: agent
    [local] = [h for h in compute.hosts.list_all() if h.local]
    compute.hosts.set_enabled(local.provider_uuid, False)
    kept = compute.servers.create(ALICE, "kept", "tiny", kernel_image.id)
    lost = compute.servers.create(ALICE, "lost", "tiny", kernel_image.id)
    for server in (kept, lost):
        settle(server.uuid)
        assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"
    _age_servers(compute, timedelta(minutes=1))
    asked: list[str] = []

    def never_asked() -> dict[str, str]:
        asked.append("domain_states")
        raise AssertionError("the power sync asked the host for its domain states")

    agent.domain_states = never_asked  # type: ignore[method-assign]

    # A host whose agent reported nothing yet is asked (and here fails: nothing changes).
    assert compute.servers.sync_power_states() == []
    assert asked == ["domain_states"]

    foreign = str(uuid.uuid4())
    trust.heartbeat(host_uuid, domain_states={kept.uuid.upper(): "running", foreign: "running"})
    changes = compute.servers.sync_power_states()
    assert changes == [f"server {lost.uuid}: ACTIVE -> ERROR (guest is gone)"]
    assert asked == ["domain_states"]  # read from the store, not asked again
    failed = compute.servers.get(ALICE, lost.uuid)
    assert failed.status == "ERROR" and (failed.fault or "").startswith("the host lost")
    assert compute.servers.get(ALICE, kept.uuid).status == "ACTIVE"
    assert compute.hosts.get(host_uuid).unknown_domains == (foreign,)  # reported, left alone

    # Another controller reads the same report.
    trust.heartbeat(host_uuid, domain_states={kept.uuid: "shutoff"})
    other = Compute.build(
        compute.hosts.engine, compute.hosts.placement, settings, client_factory=lambda url: agent
    )
    try:
        assert other.servers.sync_power_states() == [
            f"server {kept.uuid}: ACTIVE -> SHUTOFF (guest is shutoff)"
        ]
    finally:
        other.close()
    assert compute.hosts.get(host_uuid).unknown_domains == ()

    # A server changed after the report was read waits for the next report.
    _age_servers(compute, -timedelta(minutes=1))
    trust.heartbeat(host_uuid, domain_states={kept.uuid: "running"})
    assert compute.servers.sync_power_states() == []
    assert compute.servers.get(ALICE, kept.uuid).status == "SHUTOFF"

    # Bad reports are refused, naming the value, and change nothing.
    with pytest.raises(InvalidRequest, match="'not-a-uuid' is not a domain uuid"):
        trust.heartbeat(host_uuid, domain_states={"not-a-uuid": "running"})
    with pytest.raises(InvalidRequest, match="is 'Running!'; accepted: a libvirt state"):
        trust.heartbeat(host_uuid, domain_states={kept.uuid: "Running!"})
    _age_servers(compute, timedelta(minutes=2))
    assert compute.servers.sync_power_states() == [
        f"server {kept.uuid}: SHUTOFF -> ACTIVE (guest is running)"
    ]

    # A down host is left alone: its servers keep their status.
    trust.heartbeat(host_uuid, domain_states={})
    _silence(compute, host_uuid, settings.agent.down_after_s + 5)
    assert compute.servers.sync_power_states() == []
    assert compute.servers.get(ALICE, kept.uuid).status == "ACTIVE"
    assert asked == ["domain_states"]


def _age_servers(compute: Compute, age: timedelta) -> None:
    """As if every server had last changed ``age`` ago (negative: in the future)."""
    with write_transaction(compute.hosts.engine) as conn:
        conn.execute(update(_servers).values(updated_at=utcnow() - age))
