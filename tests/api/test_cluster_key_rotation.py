"""``wattvisor keys rotate-cluster``: the running controller signs with the new cluster key at
once, agents learn it from their heartbeat answer, and the previous key is accepted
during its grace period only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from biscuit_auth import KeyPair

from api.served_app import serving
from api.v1_world import V1World
from wattvisor.agent.credentials import AgentCredentials, join_cluster
from wattvisor.auth.errors import TokenSignatureInvalid
from wattvisor.auth.keys import load_private_key
from wattvisor.auth.service_tokens import mint_join_token


@pytest.fixture
def api(world: V1World) -> Iterator[tuple[httpx.Client, str]]:
    with serving(world.node.app) as port:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, url


def _rotate_in_another_process(world: V1World, grace_s: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTVISOR_")}
    env["WATTVISOR_DATA_DIR"] = str(world.node.settings.data_dir)
    env["WATTVISOR_AUTH__CLUSTER_KEY_GRACE_S"] = str(grace_s)
    src = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "wattvisor.cli", "keys", "rotate-cluster"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _facts(name: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "name": name,
        "libvirt_uri": "qemu:///system",
        "traits": [],
        "inventory": {"VCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20},
        "energy_source": "none",
        "addresses": ["https://198.18.0.4:8775"],
    }


def _join_token(client: httpx.Client, world: V1World) -> str:
    response = client.post("/v1/hosts/join-tokens", json={"ttl": "1h"}, headers=world.admin)
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def test_a_rotated_cluster_key_reaches_controllers_and_agents_and_the_old_one_ends(
    world: V1World, api: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    client, url = api
    trust = world.node.app.state.host_trust
    key_path = world.node.settings.cluster_key_path
    old_key = load_private_key(key_path)
    agent = AgentCredentials(tmp_path / "agent")
    join_cluster(agent, client, url, _join_token(client, world), _facts("edge-a"))
    issued_before = _join_token(client, world)
    verifier = agent.controller_verifier()
    before = trust.signer.controller_token()
    assert verifier.verify(before).subject == agent.trust().cluster_id

    rotated = _rotate_in_another_process(world, grace_s=3600)
    assert rotated.returncode == 0, rotated.stderr
    new_public = rotated.stdout.strip()
    assert new_public.startswith("ed25519/") and "ed25519-private" not in rotated.stderr
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    # The agent learns the new key (and until when the old one holds) from its heartbeat.
    learnt = agent.heartbeat(client)
    assert learnt.keys[0].public_key == new_public
    old_until = learnt.keys[1].valid_until
    assert old_until is not None and old_until > datetime.now(UTC) + timedelta(minutes=50)
    # The running controller signs with the new key at once, and the agent accepts it.
    after = trust.signer.controller_token()
    assert after != before
    assert verifier.verify(after).public_key == new_public
    # Tokens signed with the old key still work during the grace period.
    assert verifier.verify(before).subject == learnt.cluster_id
    joined = client.post(
        "/v1/hosts/join", json={**_facts("edge-b"), "public_key": repr(KeyPair().public_key)},
        headers={"Authorization": f"Bearer {issued_before}"},
    )  # fmt: skip
    assert joined.status_code == 201, joined.text

    # A second rotation without grace ends every previous key at once: the heartbeat
    # answer lists only the new one.
    again = _rotate_in_another_process(world, grace_s=0)
    assert again.returncode == 0, again.stderr
    assert [k.public_key for k in agent.heartbeat(client).keys] == [again.stdout.strip()]
    for signed_before in (before, after):
        with pytest.raises(TokenSignatureInvalid, match="signature invalid"):
            verifier.verify(signed_before)
    stale = mint_join_token(
        old_key, learnt.cluster_id, str(uuid.uuid4()), datetime.now(UTC) + timedelta(hours=1)
    )
    refused = client.post(
        "/v1/hosts/join", json={**_facts("edge-c"), "public_key": repr(KeyPair().public_key)},
        headers={"Authorization": f"Bearer {stale}"},
    )  # fmt: skip
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "token_signature_invalid"
    assert verifier.verify(trust.signer.controller_token()).public_key == again.stdout.strip()
