"""POST /v1/servers/{id}/migrate, GET and DELETE /v1/servers/{id}/migration: admins only,
bad requests refused naming the value and changing nothing, failures said by the API."""

from __future__ import annotations

from api.v1_world import V1World


def test_members_cannot_migrate_see_or_cancel_migrations(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    server = world.boot(alice)
    sid = server["id"]
    for method, path in (
        ("POST", f"/v1/servers/{sid}/migrate"),
        ("GET", f"/v1/servers/{sid}/migration"),
        ("DELETE", f"/v1/servers/{sid}/migration"),
    ):
        response = world.client.request(method, path, headers=alice)
        assert response.status_code == 403, (method, response.text)
    after = world.client.get(f"/v1/servers/{sid}", headers=alice).json()
    assert (after["status"], after["task"], after["fault"]) == ("ACTIVE", None, None)


def test_an_unknown_host_or_the_servers_own_is_refused_naming_it(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    server = world.wait_server(world.boot(alice)["id"], world.admin)
    path = f"/v1/servers/{server['id']}/migrate"
    unknown = world.client.post(path, json={"host": "nowhere-7"}, headers=world.admin)
    assert unknown.status_code == 400, unknown.text
    assert "'nowhere-7'" in unknown.json()["error"]["message"]
    own = world.client.post(path, json={"host": server["host_id"]}, headers=world.admin)
    assert own.status_code == 400, own.text
    assert "already" in own.json()["error"]["message"]
    for body in ({"tunnel": "yes"}, {"host": ""}, {"host": "x", "extra": 1}):
        bad = world.client.post(path, json=body, headers=world.admin)
        assert bad.status_code == 422, (body, bad.text)
    never = world.client.get(f"/v1/servers/{server['id']}/migration", headers=world.admin)
    assert never.status_code == 404 and "never been migrated" in never.text
    after = world.client.get(f"/v1/servers/{server['id']}", headers=world.admin).json()
    assert (after["task"], after["fault"], after["host_id"]) == (None, None, server["host_id"])


def test_with_no_other_host_the_migration_fails_and_the_server_stays_where_it_was(
    world: V1World,
) -> None:
    alice = world.member("alice", "proj-a")
    server = world.wait_server(world.boot(alice)["id"], world.admin)
    sid = server["id"]
    accepted = world.client.post(f"/v1/servers/{sid}/migrate", json={}, headers=world.admin)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["state"] == "queued" and accepted.json()["tunnel"] is True
    # Only one migration of a server at a time: refused while the first is active (the
    # first may already have failed here, with no other host to go to: then it is taken).
    again = world.client.post(f"/v1/servers/{sid}/migrate", json={}, headers=world.admin)
    assert again.status_code in (202, 409), again.text
    if again.status_code == 409:
        assert "migrating" in again.text
    done = world.wait_server(sid, world.admin)
    migration = world.client.get(f"/v1/servers/{sid}/migration", headers=world.admin).json()
    assert migration["state"] == "failed"
    assert "no other host can take the server" in migration["fault"]
    assert (done["status"], done["host_id"]) == ("ACTIVE", server["host_id"])
    assert "no other host" in done["fault"]
    held = world.node.compute.scheduler.placement.get_allocations(sid)
    assert [part.provider_uuid for part in held.allocations] == [server["host_id"]]
    assert (
        world.node.compute.scheduler.placement.get_allocations(migration["id"]).generation is None
    )
    cancel = world.client.delete(f"/v1/servers/{sid}/migration", headers=world.admin)
    assert cancel.status_code == 409 and "no migration in progress" in cancel.text
