"""Request bodies take numbers as numbers and flags as flags: JSON true is not a volume
size of 1 GiB, nor the string "1" one vCPU. A value of the wrong JSON type is refused
with 422 naming the field, and nothing is made."""

from __future__ import annotations

from typing import Any

import pytest

from api.v1_world import V1World


@pytest.mark.parametrize("size", [True, "1", 1.0])
def test_volume_size_of_another_json_type_is_refused(world: V1World, size: Any) -> None:
    member = world.member("alice", "pa")
    response = world.client.post("/v1/volumes", json={"name": "v", "size_gb": size}, headers=member)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["problems"][0]["field"] == "size_gb"
    assert world.client.get("/v1/volumes", headers=member).json() == []


def test_flavor_counts_and_server_flags_of_another_json_type_are_refused(
    world: V1World,
) -> None:
    flavor = world.client.post(
        "/v1/flavors", json={"name": "f", "vcpus": "2", "ram_mb": True}, headers=world.admin
    )
    assert flavor.status_code == 422, flavor.text
    fields = {p["field"] for p in flavor.json()["error"]["details"]["problems"]}
    assert fields == {"vcpus", "ram_mb"}
    member = world.member("alice", "pa")
    server = world.client.post(
        "/v1/servers",
        json={"name": "s", "flavor": "tiny", "image": "kernel", "power_metrics": "yes"},
        headers=member,
    )
    assert server.status_code == 422, server.text
    assert world.client.get("/v1/servers", headers=member).json() == []


def test_numbers_and_flags_of_the_right_type_are_accepted(world: V1World) -> None:
    member = world.member("alice", "pa")
    response = world.client.post(
        "/v1/volumes", json={"name": "v", "size_gb": 2, "format": "raw"}, headers=member
    )
    assert response.status_code == 201, response.text
    assert response.json()["size_gb"] == 2
