"""/v1/hosts (admin): list, show, register by URI, disable/enable, power."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from api.v1_world import V1World


def _node_uri(directory: Path) -> str:
    node = directory / f"node-{secrets.token_hex(4)}.xml"
    node.write_text(
        "<node><cpu><mode>fixed</mode><nodes>1</nodes><sockets>1</sockets><cores>2</cores>"
        "<threads>1</threads><active>2</active><mhz>2000</mhz><model>x86_64</model></cpu>"
        "<memory>4194304</memory></node>"
    )
    return f"test://{node}"


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
    assert body["measured"] is True and body["watts"] > 0 and body["source"] == "estimate"
    assert len(body["history"]) >= 1


def test_register_a_second_host_by_uri(world: V1World, tmp_path: Path) -> None:
    uri = _node_uri(tmp_path)
    response = world.client.post(
        "/v1/hosts", json={"uri": uri, "name": "rack-2"}, headers=world.admin
    )
    assert response.status_code == 201, response.text
    host = response.json()
    assert host["name"] == "rack-2" and host["inventory"]["VCPU"] == 2
    assert host["energy_source"] == "none" and host["local"] is False
    names = {h["name"] for h in world.client.get("/v1/hosts", headers=world.admin).json()}
    assert names == {socket.gethostname(), "rack-2"}
    again = world.client.post("/v1/hosts", json={"uri": uri}, headers=world.admin)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    bad = world.client.post("/v1/hosts", json={"uri": "qemu+tcp://no.such.host.invalid/system"},
                            headers=world.admin)  # fmt: skip
    assert bad.status_code == 502 and bad.json()["error"]["code"] == "host_error"
    assert len(world.client.get("/v1/hosts", headers=world.admin).json()) == 2


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
