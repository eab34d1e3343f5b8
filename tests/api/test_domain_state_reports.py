"""An agent sends its host's domain states with a heartbeat only when they changed; the
controller stores them for the power sync, and refuses a malformed report."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import Table, select

from api.served_app import serving
from api.v1_world import V1World
from wattvisor.agent.credentials import AgentCredentials, join_cluster
from wattvisor.agent.runtime import HostAgent
from wattvisor.compute import LocalHostClient
from wattvisor.host.driver import HostDriver
from wattvisor.store import read_transaction
from wattvisor.store.trust_tables import HostAgentRow

_agents = cast(Table, HostAgentRow.__table__)


@pytest.fixture
def api(world: V1World) -> Iterator[tuple[httpx.Client, str]]:
    with serving(world.node.app) as port:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, url


def _join_token(client: httpx.Client, world: V1World) -> str:
    response = client.post("/v1/hosts/join-tokens", json={"ttl": "1h"}, headers=world.admin)
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def _facts(host_id: str) -> dict[str, Any]:
    return {
        "id": host_id,
        "name": "reporting-host",
        "libvirt_uri": "test:///default",
        "traits": [],
        "inventory": {"VCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20},
        "energy_source": "none",
        "addresses": ["https://198.18.0.4:8775"],
    }


def _stored(world: V1World, host_id: str) -> tuple[dict[str, str] | None, datetime | None]:
    engine = world.node.app.state.host_trust.engine
    with read_transaction(engine) as conn:
        row = conn.execute(
            select(_agents.c.domain_states, _agents.c.domain_states_at).where(
                _agents.c.host_uuid == host_id
            )
        ).one()
    return row.domain_states, row.domain_states_at


def test_an_agent_reports_its_domain_states_when_they_change(
    world: V1World, api: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    client, url = api
    host_id = str(uuid.uuid4())
    credentials = AgentCredentials(tmp_path / "agent")
    join_cluster(credentials, client, url, _join_token(client, world), _facts(host_id))
    settings = world.node.settings
    driver = HostDriver(settings.host, settings.data_dir, uri="test:///default")
    host = LocalHostClient(driver)
    agent = HostAgent(
        settings=settings, driver=driver, sampler=None, host=host,  # type: ignore[arg-type]
        credentials=credentials, startup=None, http=client,  # type: ignore[arg-type]
    )  # fmt: skip
    assert _stored(world, host_id) == (None, None)

    assert agent.heartbeat_once()
    states, first_at = _stored(world, host_id)
    assert states == host.domain_states() and states  # the test driver's own domain
    assert first_at is not None

    assert agent.heartbeat_once()  # unchanged: not sent again
    assert _stored(world, host_id) == (states, first_at)

    added = str(uuid.uuid4())
    driver.connection.get().defineXML(
        f"<domain type='test'><name>reported-{added[:8]}</name><uuid>{added}</uuid>"
        "<memory>1024</memory><os><type>hvm</type></os></domain>"
    )
    try:
        assert agent.heartbeat_once()
        changed, changed_at = _stored(world, host_id)
        assert changed == {**states, added: "shutoff"}
        assert changed_at is not None and changed_at >= first_at
    finally:
        driver.connection.get().lookupByUUIDString(added).undefine()
        driver.close()


def test_a_malformed_domain_state_report_is_refused_and_changes_nothing(
    world: V1World, api: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    client, url = api
    host_id = str(uuid.uuid4())
    credentials = AgentCredentials(tmp_path / "agent")
    join_cluster(credentials, client, url, _join_token(client, world), _facts(host_id))
    kept = str(uuid.uuid4())
    credentials.heartbeat(client, domain_states={kept: "running"})
    before = _stored(world, host_id)
    assert before[0] == {kept: "running"}
    headers = {"Authorization": f"Bearer {credentials.host_token()}"}
    for bad, named in (
        ({"not-a-uuid": "running"}, "'not-a-uuid' is not a domain uuid"),
        ({kept: "Running!"}, "is 'Running!'; accepted: a libvirt state name"),
    ):
        response = client.post(
            f"/v1/hosts/{host_id}/heartbeat", json={"domain_states": bad}, headers=headers
        )
        assert response.status_code == 400, response.text
        assert named in response.text
    assert _stored(world, host_id) == before
