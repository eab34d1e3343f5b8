"""``wattvisor host join-token`` against the served API, and an agent joining with the token
it printed over HTTP: the token registers one host, once."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.served_api import Served
from wattvisor.agent.credentials import AgentCredentials, JoinFailed, join_cluster


def host_facts(name: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "name": name,
        "libvirt_uri": "qemu:///system",
        "traits": ["HW_CPU_X86_AVX2"],
        "inventory": {"VCPU": 4, "MEMORY_MB": 8192, "DISK_GB": 50},
        "energy_source": "estimate",
        "addresses": ["https://198.18.0.3:8775"],
    }


def base_url(served: Served) -> str:
    return f"http://127.0.0.1:{served.node.settings.api.port}"


def test_the_printed_join_token_registers_one_host_once(served: Served, tmp_path: Path) -> None:
    result = served.run("host", "join-token", "--ttl", "30m")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert "\n" not in token and len(token) > 100
    assert "registers one host" in result.stderr
    url = base_url(served)
    agent = AgentCredentials(tmp_path / "agent")
    facts = host_facts("edge-cli")
    with httpx.Client(timeout=30) as client:
        trust = join_cluster(agent, client, url, token, facts)
        assert trust.host_id == facts["id"]
        assert (tmp_path / "agent" / "host.key").stat().st_mode & 0o077 == 0
        # The host now calls with its own key.
        assert agent.heartbeat(client).cluster_id == trust.cluster_id
        second = AgentCredentials(tmp_path / "second")
        with pytest.raises(JoinFailed, match="used already") as refused:
            join_cluster(second, client, url, token, host_facts("edge-again"))
        assert refused.value.code == "join_token_used"
    hosts = served.json("host", "list", "--json")
    assert [h["name"] for h in hosts].count("edge-cli") == 1
    assert "edge-again" not in [h["name"] for h in hosts]
    assert not (tmp_path / "second" / "trust.json").exists()


def test_join_token_json_names_the_cluster_and_expiry(served: Served) -> None:
    issued = served.json("host", "join-token", "--ttl", "2h", "--json")
    assert issued["ttl"] == "2h"
    assert uuid.UUID(issued["cluster_id"])
    assert issued["created_by"] == "admin"


def test_a_member_gets_no_join_token(served: Served) -> None:
    token = served.member_token()
    result = served.run("host", "join-token", WATTVISOR_TOKEN=token)
    assert result.exit_code != 0
    assert "admin_required" in result.output
    assert "HTTP 403" in result.output


def test_an_unreadable_lifetime_is_refused_with_the_value(served: Served) -> None:
    result = served.run("host", "join-token", "--ttl", "soon")
    assert result.exit_code != 0
    assert "'soon'" in result.output


def test_an_agent_rotates_its_key_and_keeps_calling(served: Served, tmp_path: Path) -> None:
    token = served.run("host", "join-token").stdout.strip()
    agent = AgentCredentials(tmp_path / "agent")
    with httpx.Client(timeout=30) as client:
        join_cluster(agent, client, base_url(served), token, host_facts("edge-rot"))
        before = agent.public_key()
        files = agent.rotate_host_key(client, revoke_old=True)
        assert files.public_key != before
        assert agent.public_key() == files.public_key
        assert agent.heartbeat(client).host_id == agent.trust().host_id
    saved = json.loads((tmp_path / "agent" / "trust.json").read_text())
    assert saved["controller_url"] == base_url(served)
