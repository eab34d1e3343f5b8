"""/v1/hosts (admin): list, show, disable/enable, power; hosts join through their agent."""

from __future__ import annotations

import socket

from api.test_v1_host_join import bearer, facts, join_token
from api.v1_world import V1World


def test_admin_lists_the_local_host_with_details(world: V1World) -> None:
    response = world.client.get("/v1/hosts", headers=world.admin)
    assert response.status_code == 200, response.text
    [host] = response.json()
    assert host["id"] == world.node.provider_uuid and host["name"] == socket.gethostname()
    assert host["libvirt_uri"] == "test:///default" and host["local"] is True
    assert host["enabled"] is True and host["state"] == "up"
    assert host["energy_source"] == "estimate"
    assert set(host["inventory"]) == {"VCPU", "MEMORY_MB", "DISK_GB"}
    shown = world.client.get(f"/v1/hosts/{host['id']}", headers=world.admin).json()
    assert shown == host
    missing = world.client.get("/v1/hosts/nope", headers=world.admin)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_host_power_after_samples(world: V1World) -> None:
    world.node.sampler.sample()
    world.node.sampler.sample()
    body = world.client.get(
        f"/v1/hosts/{world.node.provider_uuid}/power", headers=world.admin
    ).json()
    assert body["watts"] > 0 and body["source"] == "estimate"
    assert (body["sampled"], body["measured"]) == (True, False)  # an estimate is not measured
    assert len(body["history"]) >= 1


def test_hosts_are_not_registered_by_uri(world: V1World) -> None:
    """A host is added by running its agent (it joins); the controller opens no libvirt URI."""
    response = world.client.post("/v1/hosts", json={"uri": "qemu:///system"}, headers=world.admin)
    assert response.status_code == 405
    assert len(world.client.get("/v1/hosts", headers=world.admin).json()) == 1


def test_disabled_host_takes_no_new_servers(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    host_id = world.node.provider_uuid
    disabled = world.client.post(
        f"/v1/hosts/{host_id}/disable", json={"reason": "maintenance"}, headers=world.admin
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["enabled"] is False
    assert "COMPUTE_STATUS_DISABLED" in disabled.json()["traits"]
    failed = world.boot(alice, "refused")
    assert failed["status"] == "ERROR" and "COMPUTE_STATUS_DISABLED" in failed["fault"]
    enabled = world.client.post(f"/v1/hosts/{host_id}/enable", headers=world.admin)
    assert enabled.json()["enabled"] is True
    assert world.boot(alice, "accepted")["status"] == "ACTIVE"


def test_host_power_names_a_host_whose_agent_does_not_answer(world: V1World) -> None:
    """A joined host whose agent is not listening: 503 naming the host, not a server error."""
    with socket.socket() as probe:  # a loopback port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    body, _keys = facts("silent-1")
    body["addresses"] = [f"https://127.0.0.1:{port}"]
    joined = world.client.post(
        "/v1/hosts/join", json=body, headers=bearer(join_token(world)["token"])
    )
    assert joined.status_code == 201, joined.text
    response = world.client.get(f"/v1/hosts/{body['id']}/power", headers=world.admin)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "host_unavailable"
    assert body["id"] in error["message"] and "did not answer" in error["message"]
