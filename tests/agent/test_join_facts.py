"""A host on libvirt's test driver joins the real API with the facts its own driver
reports, and placement then holds exactly those traits and that inventory."""

from __future__ import annotations

import secrets
from pathlib import Path

from api.v1_world import V1World, world
from wattvisor.agent.credentials import AgentCredentials, ClusterTrust
from wattvisor.agent.join_facts import join_facts
from wattvisor.compute import LocalHostClient
from wattvisor.host.driver import HostDriver

__all__ = ["world"]


def test_a_host_joins_with_the_facts_its_driver_reports(world: V1World, tmp_path: Path) -> None:
    node = tmp_path / f"node-{secrets.token_hex(4)}.xml"
    node.write_text(
        "<node><cpu><mode>fixed</mode><nodes>1</nodes><sockets>1</sockets>"
        "<cores>6</cores><threads>1</threads><active>6</active><mhz>2000</mhz>"
        "<model>x86_64</model></cpu><memory>8388608</memory></node>"
    )
    settings = world.node.settings
    remote = settings.host.model_copy(update={"share_local_fs": {}})
    client = LocalHostClient(HostDriver(remote, settings.data_dir, uri=f"test://{node}"))
    try:
        body = join_facts(client, ["https://198.18.0.5:8775"], name="edge-driver")
        expected = client.facts()
    finally:
        client.close()
    issued = world.client.post(
        "/v1/hosts/join-tokens", json={"ttl": "10m"}, headers=world.admin
    ).json()
    agent = AgentCredentials(tmp_path / "agent")
    files = agent.ensure_host_key()
    response = world.client.post(
        "/v1/hosts/join",
        json={**body, "public_key": files.public_key},
        headers={"Authorization": f"Bearer {issued['token']}"},
    )
    assert response.status_code == 201, response.text
    trust = agent.learn(response.json(), "http://controller")
    assert isinstance(trust, ClusterTrust) and trust.host_id == expected.provider_uuid
    host = world.client.get(f"/v1/hosts/{expected.provider_uuid}", headers=world.admin).json()
    assert host["name"] == "edge-driver"
    assert set(host["traits"]) == set(expected.traits)
    assert host["inventory"]["VCPU"] == expected.inventory.vcpu == 6
