"""``GET /v1/power/servers``: every visible server's latest figures in one request."""

from __future__ import annotations

from api.v1_world import V1World


def test_members_get_their_projects_servers_and_admins_all_highest_watts_first(
    world: V1World,
) -> None:
    alice = world.member("alice", "proj-a")
    bob = world.member("bob", "proj-b")
    mine = {world.boot(alice, name)["id"] for name in ("a1", "a2")}
    theirs = world.boot(bob, "b1")["id"]
    world.node.sampler.sample()
    world.node.sampler.sample()

    listed = world.client.get("/v1/power/servers", headers=alice)
    assert listed.status_code == 200, listed.text
    rows = listed.json()
    assert {r["id"] for r in rows} == mine
    assert {r["project"] for r in rows} == {"proj-a"}
    for row in rows:
        assert (row["source"], row["status"]) == ("estimate", "ACTIVE")
        assert (row["sampled"], row["measured"]) == (True, False)  # an estimate is not measured
        assert row["taken_at"] is not None and row["joules"] >= 0
        single = world.client.get(f"/v1/servers/{row['id']}/power", headers=alice).json()
        assert (single["watts"], single["joules"]) == (row["watts"], row["joules"])

    every = world.client.get("/v1/power/servers", headers=world.admin).json()
    assert {r["id"] for r in every} == mine | {theirs}
    watts = [r["watts"] for r in every]
    assert watts == sorted(watts, reverse=True)
    only_b = world.client.get("/v1/power/servers?project=proj-b", headers=world.admin).json()
    assert [r["id"] for r in only_b] == [theirs]


def test_a_member_asking_for_another_project_gets_not_found(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    world.boot(world.member("bob", "proj-b"), "b1")
    other = world.client.get("/v1/power/servers?project=proj-b", headers=alice)
    assert other.status_code == 404
    assert other.json()["error"]["message"] == "project 'proj-b' does not exist"
    own = world.client.get("/v1/power/servers?project=proj-a", headers=alice)
    assert own.status_code == 200 and own.json() == []


def test_deleted_servers_are_left_out_and_the_route_is_documented(world: V1World) -> None:
    server = world.boot(world.admin, "gone")
    deleted = world.client.delete(f"/v1/servers/{server['id']}", headers=world.admin)
    assert deleted.status_code == 202
    world.wait_server(server["id"], world.admin)
    assert world.client.get("/v1/power/servers", headers=world.admin).json() == []
    document = world.client.get("/openapi.json").json()
    operation = document["paths"]["/v1/power/servers"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["items"]["$ref"].endswith("/ServerPower")
    assert world.client.get("/v1/power/servers").status_code == 401
