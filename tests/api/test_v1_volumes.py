"""/v1/volumes and server devices over HTTP (libvirt's test driver has no hot-plug)."""

from __future__ import annotations

import json

from api.v1_world import V1World


def test_volume_lifecycle_and_member_view(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    bob = world.member("bob", "proj-b")
    created = world.client.post("/v1/volumes", json={"name": "data", "size_gb": 1}, headers=alice)
    assert created.status_code == 201, created.text
    volume = created.json()
    assert volume["status"] == "available" and volume["format"] == "qcow2"
    assert volume["alias"] == f"ua-{volume['id']}"
    assert "host_path" not in volume and str(world.node.settings.data_dir) not in json.dumps(volume)
    admin_view = world.client.get(f"/v1/volumes/{volume['id']}", headers=world.admin).json()
    assert admin_view["host_path"].startswith(str(world.node.settings.data_dir))
    assert world.client.get(f"/v1/volumes/{volume['id']}", headers=bob).status_code == 404
    assert world.client.get("/v1/volumes", headers=bob).json() == []
    assert world.client.delete(f"/v1/volumes/{volume['id']}", headers=alice).status_code == 204
    assert world.client.get("/v1/volumes", headers=alice).json() == []


def test_attach_refused_by_the_host_changes_nothing(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    server = world.boot(alice)
    volume = world.client.post(
        "/v1/volumes", json={"name": "d", "size_gb": 1, "format": "raw"}, headers=alice
    ).json()
    attach = world.client.post(
        f"/v1/servers/{server['id']}/volumes", json={"volume_id": volume["id"]}, headers=alice
    )
    assert attach.status_code == 502 and attach.json()["error"]["code"] == "host_error"
    assert world.client.get(f"/v1/volumes/{volume['id']}", headers=alice).json()["status"] == (
        "available"
    )
    detach = world.client.delete(
        f"/v1/servers/{server['id']}/volumes/ua-{volume['id']}", headers=alice
    )
    assert detach.status_code == 404
    nic = world.client.post(
        f"/v1/servers/{server['id']}/interfaces", json={"model": "e1000"}, headers=alice
    )
    assert nic.status_code == 502
    assert world.client.get(f"/v1/servers/{server['id']}/interfaces", headers=alice).json() == []


def test_bad_volume_requests_are_422_with_accepted_values(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    response = world.client.post(
        "/v1/volumes", json={"name": "d", "size_gb": 0, "format": "vmdk"}, headers=alice
    )
    assert response.status_code == 422
    problems = {p["field"]: p for p in response.json()["error"]["details"]["problems"]}
    assert problems["size_gb"]["accepted"] == ">= 1"
    assert "qcow2" in problems["format"]["accepted"]
    assert world.client.get("/v1/volumes", headers=alice).json() == []


def test_volume_for_a_server_goes_to_its_host_and_hides_other_projects(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    bob = world.member("bob", "proj-b")
    server = world.boot(alice)
    near = world.client.post(
        "/v1/volumes", json={"name": "d", "size_gb": 1, "server_id": server["id"]}, headers=alice
    )
    assert near.status_code == 201, near.text
    admin_server = world.client.get(f"/v1/servers/{server['id']}", headers=world.admin).json()
    admin_volume = world.client.get(f"/v1/volumes/{near.json()['id']}", headers=world.admin)
    assert admin_volume.json()["host"] == admin_server["host"] is not None
    for who, server_id in ((bob, server["id"]), (alice, "nope")):
        refused = world.client.post(
            "/v1/volumes", json={"name": "x", "size_gb": 1, "server_id": server_id}, headers=who
        )
        assert refused.status_code == 404
        assert refused.json()["error"]["message"] == f"server {server_id!r} does not exist"
    assert world.client.get("/v1/volumes", headers=bob).json() == []
    assert [v["name"] for v in world.client.get("/v1/volumes", headers=alice).json()] == ["d"]
