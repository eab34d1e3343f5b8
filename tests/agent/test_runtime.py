"""The agent's start: it joins once with a join token, later starts reuse the stored
trust, and a start that cannot join says what to give (libvirt's test driver as host)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from biscuit_auth import KeyPair

from wattvisor.agent.runtime import AgentSetupError, HostAgent
from wattvisor.config import load_settings


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[HostAgent]:
    settings = load_settings(
        data_dir=tmp_path / "data",
        host={"libvirt_uri": "test:///default", "virt_type": "qemu",
              "instance_name_template": f"wvagent-{secrets.token_hex(3)}-%04x"},
        energy={"source": "model"},
        agent={"listen": "127.0.0.1:18775"},
    )  # fmt: skip
    made = HostAgent.build(settings)
    try:
        yield made
    finally:
        made.stop()


def _controller(answers: list[dict[str, Any]], seen: list[httpx.Request]) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=answers[0])

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_the_first_start_joins_and_later_starts_reuse_the_trust(agent: HostAgent) -> None:
    with pytest.raises(AgentSetupError, match="--controller URL and --join-token TOKEN"):
        agent.join(None, None)
    answer = {
        "host_id": agent.driver.host_uuid(), "cluster_id": str(uuid.uuid4()),
        "cluster_keys": [{"public_key": repr(KeyPair().public_key), "valid_until": None}],
    }  # fmt: skip
    seen: list[httpx.Request] = []
    agent.http.close()
    agent.http = _controller([answer], seen)
    trust, joined = agent.join("http://ctl.invalid:8774", "join-token-text")
    assert joined and trust.cluster_id == answer["cluster_id"]
    [request] = seen
    assert str(request.url) == "http://ctl.invalid:8774/v1/hosts/join"
    assert request.headers["authorization"] == "Bearer join-token-text"
    body = httpx.Response(200, content=request.content).json()
    assert body["addresses"] == ["http://127.0.0.1:18775"]
    assert body["id"] == agent.driver.host_uuid() and body["energy_source"] == "estimate"
    assert body["public_key"] == agent.credentials.public_key()

    again, joined_again = agent.join(None, None)
    assert not joined_again and again == trust and len(seen) == 1
    with pytest.raises(AgentSetupError, match=r"joined the controller at 'http://ctl\.invalid"):
        agent.join("http://other.invalid:8774", "another-token")


def test_a_wildcard_listen_address_needs_an_advertised_url(agent: HostAgent) -> None:
    agent.settings.agent.listen = "0.0.0.0:18775"
    with pytest.raises(AgentSetupError, match=r"set agent\.advertise_url"):
        agent.join("http://ctl.invalid:8774", "join-token-text")
    assert not agent.credentials.trust_path.exists()
