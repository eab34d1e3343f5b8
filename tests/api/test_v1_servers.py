"""/v1/servers over HTTP against the real all-in-one app: lifecycle, visibility, redaction."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path

from api.v1_world import V1World


def test_create_is_accepted_as_build_and_becomes_active(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    response = world.client.post(
        "/v1/servers", json={"name": "web", "flavor": "tiny", "image": "kernel"}, headers=alice
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "BUILD" and created["project"] == "proj-a"
    active = world.wait_server(created["id"], alice)
    assert active["status"] == "ACTIVE", active
    assert active["fault"] is None and active["user"] == "alice"
    listed = world.client.get("/v1/servers", headers=alice).json()
    assert [s["id"] for s in listed] == [created["id"]]


def test_member_views_hold_no_host_names_or_paths_but_admin_views_do(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    server = world.boot(alice)
    data_dir = str(world.node.settings.data_dir)
    hostname = socket.gethostname()
    member_json = json.dumps([
        world.client.get(f"/v1/servers/{server['id']}", headers=alice).json(),
        world.client.get("/v1/servers", headers=alice).json(),
        world.client.get("/v1/images", headers=alice).json(),
        world.client.get(f"/v1/servers/{server['id']}/metadata", headers=alice).json(),
        world.client.get(f"/v1/servers/{server['id']}/power", headers=alice).json(),
    ])  # fmt: skip
    assert data_dir not in member_json and str(world.kernel) not in member_json
    assert f'"{hostname}"' not in member_json
    assert "host" not in server and "domain_name" not in server
    admin_view = world.client.get(f"/v1/servers/{server['id']}", headers=world.admin).json()
    assert admin_view["host"] == hostname
    assert admin_view["host_id"] == world.node.provider_uuid
    assert admin_view["domain_name"].startswith("wvapi-")
    [image] = world.client.get("/v1/images", headers=world.admin).json()
    assert image["kernel_path"] == str(world.kernel)


def test_another_projects_server_is_not_found(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    bob = world.member("bob", "proj-b")
    server = world.boot(alice)
    sid = server["id"]
    for method, path in (
        ("GET", f"/v1/servers/{sid}"), ("GET", f"/v1/servers/{sid}/power"),
        ("GET", f"/v1/servers/{sid}/metadata"), ("POST", f"/v1/servers/{sid}/stop"),
        ("DELETE", f"/v1/servers/{sid}"), ("GET", f"/v1/servers/{sid}/volumes"),
        ("GET", "/v1/projects/proj-a/power"),
    ):  # fmt: skip
        response = world.client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert world.client.get("/v1/servers", headers=bob).json() == []
    # Nothing changed for the owner.
    assert world.client.get(f"/v1/servers/{sid}", headers=alice).json()["status"] == "ACTIVE"


def test_stop_start_delete_over_http(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    sid = world.boot(alice)["id"]
    conflict = world.client.post(f"/v1/servers/{sid}/start", headers=alice)
    assert conflict.status_code == 409 and conflict.json()["error"]["details"]["status"] == "ACTIVE"
    assert world.client.post(f"/v1/servers/{sid}/stop", headers=alice).status_code == 202
    assert world.wait_server(sid, alice)["status"] == "SHUTOFF"
    assert world.client.post(f"/v1/servers/{sid}/start", headers=alice).status_code == 202
    assert world.wait_server(sid, alice)["status"] == "ACTIVE"
    deleted = world.client.delete(f"/v1/servers/{sid}", headers=alice)
    assert deleted.status_code == 202 and deleted.json()["task"] == "deleting"
    assert world.wait_server(sid, alice)["status"] == "DELETED"
    assert world.client.get("/v1/servers", headers=alice).json() == []
    usage = world.node.placement.get_usages(world.node.provider_uuid).usages
    assert usage.get("VCPU", 0) == 0


def test_power_views_of_server_and_project(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    sid = world.boot(alice)["id"]
    world.node.sampler.sample()
    world.node.sampler.sample()
    power = world.client.get(f"/v1/servers/{sid}/power", headers=alice)
    assert power.status_code == 200, power.text
    body = power.json()
    assert body["subject"] == sid and body["source"] == "estimate"
    assert set(body) >= {"watts", "joules", "sampled", "measured", "taken_at", "history"}
    # The CPU-utilisation model gives a figure; it never claims to have measured it.
    assert (body["sampled"], body["measured"]) == (True, False)
    project = world.client.get("/v1/projects/proj-a/power", headers=alice).json()
    assert project["subject"] == "proj-a" and project["source"] == "estimate"
    assert (project["sampled"], project["measured"]) == (True, False)
    assert world.client.get("/v1/projects/proj-a/power", headers=world.admin).status_code == 200


def test_unschedulable_server_reports_why_without_host_names(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    response = world.client.post(
        "/v1/servers",
        json={"name": "m", "flavor": "tiny", "image": "kernel", "power_metrics": True},
        headers=alice,
    )
    assert response.status_code == 202, response.text
    failed = world.wait_server(response.json()["id"], alice)
    assert failed["status"] == "ERROR" and failed["power_metrics"] is True
    assert "COMPUTE_SHARE_LOCAL_FS" in failed["fault"]
    assert socket.gethostname() not in failed["fault"].split()


def test_a_fault_from_the_host_reaches_members_without_host_names_or_paths(
    world: V1World, tmp_path: Path
) -> None:
    disk = tmp_path / "vanishing disk.img"  # a space: no pattern would recognise it
    disk.write_bytes(bytes(512))
    made = world.client.post(
        "/v1/images", json={"name": "vanishing", "disk_path": str(disk)}, headers=world.admin
    )
    assert made.status_code == 201, made.text
    disk.unlink()  # the host will fail to copy it, with the path in its message
    alice = world.member("alice", "proj-a")
    created = world.client.post(
        "/v1/servers", json={"name": "w", "flavor": "tiny", "image": "vanishing"}, headers=alice
    )
    assert created.status_code == 202, created.text
    failed = world.wait_server(created.json()["id"], alice)
    assert failed["status"] == "ERROR"
    fault = failed["fault"]
    assert fault.startswith("no valid host") and "admin" in fault
    for secret in (str(tmp_path), "disk.img", socket.gethostname()):
        assert secret not in fault, (secret, fault)
    admin_view = world.client.get(f"/v1/servers/{failed['id']}", headers=world.admin).json()
    assert str(disk) in admin_view["fault"] and socket.gethostname() in admin_view["fault"]


def test_get_with_wait_answers_once_the_build_has_finished(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    created = world.client.post(
        "/v1/servers", json={"name": "web", "flavor": "tiny", "image": "kernel"}, headers=alice
    ).json()
    waited = world.client.get(f"/v1/servers/{created['id']}?wait_s=30", headers=alice)
    assert waited.status_code == 200, waited.text
    assert waited.json()["status"] == "ACTIVE" and waited.json()["task"] is None


def test_wait_is_bounded_and_shows_no_other_projects_server(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    bob = world.member("bob", "proj-b")
    created = world.client.post(
        "/v1/servers", json={"name": "web", "flavor": "tiny", "image": "kernel"}, headers=alice
    ).json()
    too_long = world.client.get(f"/v1/servers/{created['id']}?wait_s=3600", headers=alice)
    assert too_long.status_code == 422
    problems = too_long.json()["error"]["details"]["problems"]
    assert problems[0]["field"] == "wait_s" and problems[0]["accepted"] == "<= 60.0"
    hidden = world.client.get(f"/v1/servers/{created['id']}?wait_s=30", headers=bob)
    assert hidden.status_code == 404


def test_a_server_shows_its_addresses_by_network_as_nova_does(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    server = world.boot(alice)
    network = world.node.settings.host.network.name
    shown = world.client.get(f"/v1/servers/{server['id']}", headers=alice).json()
    assert list(shown["addresses"]) == [network]
    v4, v6 = shown["addresses"][network]
    assert (v4["version"], v6["version"]) == (4, 6)
    assert v4["OS-EXT-IPS-MAC:mac_addr"] == v6["OS-EXT-IPS-MAC:mac_addr"]
    assert v4["OS-EXT-IPS:type"] == "fixed"
    assert ipaddress.ip_address(v4["addr"]) in ipaddress.ip_network(
        world.node.settings.host.network.ipv4_subnet
    )
    listed = world.client.get("/v1/servers", headers=alice).json()
    assert listed[0]["addresses"] == shown["addresses"]
    deleted = world.client.delete(f"/v1/servers/{server['id']}", headers=alice)
    assert deleted.status_code == 202
    gone = world.wait_server(server["id"], alice)
    assert gone["status"] == "DELETED" and gone["addresses"] == {}
