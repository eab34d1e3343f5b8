"""/v1 routes refuse query parameters they do not take: a mistyped ``wait_s`` used to be
ignored without a word, so the answer came at once and the caller never knew why."""

from __future__ import annotations

from api.v1_world import V1World


def test_a_mistyped_query_parameter_is_refused_naming_the_accepted_ones(
    world: V1World,
) -> None:
    member = world.member("alice", "pa")
    server = world.boot(member)
    response = world.client.get(f"/v1/servers/{server['id']}?wiat_s=5", headers=member)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "'wiat_s'" in error["message"]
    assert error["details"]["accepted"] == ["wait_s"]
    listing = world.client.get("/v1/servers?history=1000", headers=member)
    assert listing.status_code == 400, listing.text
    assert "(none)" in listing.json()["error"]["message"]


def test_a_long_or_numerous_unknown_parameters_are_echoed_short(world: V1World) -> None:
    member = world.member("alice", "pa")
    query = "&".join(f"{'k' * 2000}{i}=1" for i in range(20))
    response = world.client.get(f"/v1/power/servers?{query}", headers=member)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert len(message) < 1000 and "15 more" in message


def test_the_parameters_a_route_takes_are_accepted(world: V1World) -> None:
    member = world.member("alice", "pa")
    server = world.boot(member)
    shown = world.client.get(f"/v1/servers/{server['id']}?wait_s=0", headers=member)
    assert shown.status_code == 200, shown.text
    power = world.client.get("/v1/power/servers?project=pa", headers=member)
    assert power.status_code == 200, power.text
