"""/v1/hosts (admin): list, show, register by URI, disable/enable, power."""

from __future__ import annotations

import socket

import libvirt
import pytest

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


@pytest.mark.libvirtd
def test_register_a_second_host_by_uri(world: V1World, libvirt_system: libvirt.virConnect) -> None:
    response = world.client.post(
        "/v1/hosts", json={"uri": "qemu:///system", "name": "rack-2"}, headers=world.admin
    )
    assert response.status_code == 201, response.text
    host = response.json()
    assert host["name"] == "rack-2" and host["inventory"]["VCPU"] > 0
    assert host["energy_source"] == "none" and host["local"] is False
    assert host["state"] == "up"
    names = {h["name"] for h in world.client.get("/v1/hosts", headers=world.admin).json()}
    assert names == {socket.gethostname(), "rack-2"}
    again = world.client.post("/v1/hosts", json={"uri": "qemu:///system"}, headers=world.admin)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert len(world.client.get("/v1/hosts", headers=world.admin).json()) == 2


def test_registering_a_host_file_as_a_uri_reads_nothing(world: V1World) -> None:
    """test:///<file> made libvirt parse the file and answer with its first line."""
    admin_key = world.node.settings.admin_key_path
    first_line = admin_key.read_text().splitlines()[0]
    for uri in (f"test://{admin_key}", "test:///etc/shadow", "test:///etc/hostname",
                f"qemu:///system?socket={admin_key}", "qemu+ssh://h/system?keyfile=/etc/shadow",
                "qemu:///session", "nonsense"):  # fmt: skip
        response = world.client.post("/v1/hosts", json={"uri": uri}, headers=world.admin)
        assert response.status_code == 422, (uri, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert f"libvirt URI {uri!r} is not accepted" in error["message"]
        assert "qemu:///system, qemu+ssh://[user@]host[:port]/system" in error["message"]
        assert "exactly test:///default" in error["message"]
        assert first_line not in response.text and "root:" not in response.text
    assert len(world.client.get("/v1/hosts", headers=world.admin).json()) == 1


def test_an_unreachable_host_gets_a_summary_not_libvirts_message(world: V1World) -> None:
    uri = "qemu+tcp://no.such.host.invalid/system"
    response = world.client.post("/v1/hosts", json={"uri": uri}, headers=world.admin)
    assert response.status_code == 502 and response.json()["error"]["code"] == "host_error"
    message = response.json()["error"]["message"]
    assert message.startswith(f"host {uri!r} could not be reached (libvirt error 38 ")
    assert "resolve" not in response.text.lower() and "16509" not in response.text
    assert len(world.client.get("/v1/hosts", headers=world.admin).json()) == 1


def test_members_cannot_register_hosts(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    response = world.client.post("/v1/hosts", json={"uri": "test:///etc/shadow"}, headers=alice)
    assert response.status_code == 403


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
