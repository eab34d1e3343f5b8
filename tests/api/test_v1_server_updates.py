"""PATCH /v1/servers/{id} (rename), POST /v1/servers/{id}/resize, and the uuids admins see."""

from __future__ import annotations

import uuid
from datetime import timedelta

from api.v1_world import V1World
from wattvisor.auth.keys import mint_token_from_file


def test_owner_renames_and_the_new_name_is_shown(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    server = world.boot(alice)
    response = world.client.patch(
        f"/v1/servers/{server['id']}", json={"name": "renamed"}, headers=alice
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "renamed"
    shown = world.client.get(f"/v1/servers/{server['id']}", headers=alice).json()
    assert shown["name"] == "renamed"
    document = world.client.get(f"/v1/servers/{server['id']}/metadata", headers=alice).json()
    assert document["name"] == "renamed"


def test_bad_names_are_refused_naming_the_field_and_change_nothing(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    server = world.boot(alice)
    path = f"/v1/servers/{server['id']}"
    blank = world.client.patch(path, json={"name": "   "}, headers=alice)
    assert blank.status_code == 400, blank.text
    assert "'   '" in blank.json()["error"]["message"]
    for body in ({"name": ""}, {"name": "x" * 256}, {"name": "a\u202eb"}, {"name": 5}, {}):
        refused = world.client.patch(path, json=body, headers=alice)
        assert refused.status_code == 422, (body, refused.text)
    extra = world.client.patch(path, json={"name": "ok", "flavor": "small"}, headers=alice)
    assert extra.status_code == 422, extra.text
    assert world.client.get(path, headers=alice).json()["name"] == "web"


def test_another_projects_member_cannot_rename_or_resize(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    bob = world.member("bob", "proj-b")
    server = world.boot(alice)
    sid = server["id"]
    renamed = world.client.patch(f"/v1/servers/{sid}", json={"name": "bob's"}, headers=bob)
    resized = world.client.post(f"/v1/servers/{sid}/resize", json={"flavor": "small"}, headers=bob)
    assert (renamed.status_code, resized.status_code) == (404, 404)
    assert sid in renamed.json()["error"]["message"]
    after = world.client.get(f"/v1/servers/{sid}", headers=alice).json()
    assert (after["name"], after["flavor_id"]) == (server["name"], server["flavor_id"])
    admin = world.client.patch(f"/v1/servers/{sid}", json={"name": "ops"}, headers=world.admin)
    assert admin.status_code == 200 and admin.json()["name"] == "ops"


def test_resize_is_accepted_and_ends_with_the_new_flavor(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    server = world.boot(alice)
    small = world.client.get("/v1/flavors/small", headers=alice).json()
    response = world.client.post(
        f"/v1/servers/{server['id']}/resize", json={"flavor": "small"}, headers=alice
    )
    assert response.status_code == 202, response.text
    assert response.json()["task"] == "resizing"
    done = world.wait_server(server["id"], alice)
    assert (done["status"], done["flavor_id"], done["fault"]) == ("ACTIVE", small["id"], None)


def test_resize_to_an_unknown_same_or_unfitting_flavor_is_refused_naming_it(
    world: V1World,
) -> None:
    alice = world.member("alice", "proj-a")
    made = world.client.post(
        "/v1/flavors", json={"name": "enormous", "vcpus": 1024, "ram_mb": 256, "disk_gb": 1},
        headers=world.admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    server = world.boot(alice)
    path = f"/v1/servers/{server['id']}/resize"
    unknown = world.client.post(path, json={"flavor": "nope"}, headers=alice)
    assert unknown.status_code == 404 and "'nope'" in unknown.json()["error"]["message"]
    same = world.client.post(path, json={"flavor": "tiny"}, headers=alice)
    assert same.status_code == 400 and "'tiny'" in same.json()["error"]["message"]
    too_big = world.client.post(path, json={"flavor": "enormous"}, headers=alice)
    assert too_big.status_code == 409, too_big.text
    message = too_big.json()["error"]["message"]
    assert "'enormous'" in message and "VCPU:1024" in message
    after = world.client.get(f"/v1/servers/{server['id']}", headers=alice).json()
    assert (after["status"], after["task"]) == ("ACTIVE", None)
    assert after["flavor_id"] == server["flavor_id"]


def test_admins_see_user_and_project_uuids(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    users = {u["name"]: u for u in world.client.get("/v1/users", headers=world.admin).json()}
    assert str(uuid.UUID(users["alice"]["uuid"])) == users["alice"]["uuid"]
    projects = world.client.get("/v1/projects", headers=world.admin).json()
    by_name = {p["name"]: p["uuid"] for p in projects}
    assert by_name["proj-a"] == users["alice"]["project_uuid"]
    assert world.client.get("/v1/projects", headers=alice).status_code == 403


def test_a_read_only_token_can_neither_rename_nor_resize(world: V1World) -> None:
    server = world.boot(world.admin)
    token = mint_token_from_file(
        world.node.settings.admin_key_path, "admin", timedelta(hours=1), read_only=True
    )
    reader = {"Authorization": f"Bearer {token}"}
    sid = server["id"]
    renamed = world.client.patch(f"/v1/servers/{sid}", json={"name": "x"}, headers=reader)
    resized = world.client.post(f"/v1/servers/{sid}/resize", json={"flavor": "small"},
                                headers=reader)  # fmt: skip
    assert (renamed.status_code, resized.status_code) == (403, 403)
    after = world.client.get(f"/v1/servers/{sid}", headers=world.admin).json()
    assert (after["name"], after["flavor_id"]) == (server["name"], server["flavor_id"])
