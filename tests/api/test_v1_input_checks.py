"""Input the API refuses with the value and what is accepted, writing nothing; reads of
a deleted server's parts; which methods each path answers (OPTIONS and 405)."""

from __future__ import annotations

from typing import Any

import pytest
from biscuit_auth import KeyPair

from api.v1_world import V1World


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json()["error"])


def _flavor_names(world: V1World) -> list[str]:
    return [f["name"] for f in world.client.get("/v1/flavors", headers=world.admin).json()]


@pytest.mark.parametrize(
    ("extra_specs", "said"),
    [
        ({"resources:VCPU": "-1"}, "resources:VCPU='-1' is not accepted; accepted: an integer"),
        ({"foo:bar": "1"}, "known namespaces: aggregate_instance_extra_specs:, capabilities:, "
         "hw:, hw_rng:, hw_video:, os:, pci_passthrough:, quota:, resources[N]:, trait[N]:"),
        ({"trait:CUSTOM_" + "X" * 300: "required"}, "keys of 1-255 characters"),
        ({"resources:CUSTOM_GPU": "1", "trait:NOT_A_TRAIT": "forbidden"}, "names no trait"),
    ],
)  # fmt: skip
def test_flavor_with_bad_extra_specs_is_refused_and_not_saved(
    world: V1World, extra_specs: dict[str, str], said: str
) -> None:
    before = _flavor_names(world)
    response = world.client.post(
        "/v1/flavors",
        json={"name": "bad", "vcpus": 1, "ram_mb": 256, "extra_specs": extra_specs},
        headers=world.admin,
    )
    error = _error(response, 400)
    assert error["code"] == "invalid_request" and said in error["message"]
    assert _flavor_names(world) == before


@pytest.mark.parametrize("flavor_id", ["../../x", "a/b", "..", ".hidden", "-x", "a b", "é", "a\n"])
def test_flavor_id_outside_the_safe_pattern_is_refused(world: V1World, flavor_id: str) -> None:
    before = _flavor_names(world)
    response = world.client.post(
        "/v1/flavors",
        json={"name": "odd-id", "vcpus": 1, "ram_mb": 256, "id": flavor_id},
        headers=world.admin,
    )
    if any(ord(c) < 0x20 for c in flavor_id):  # the printable-text rule answers first
        assert "U+000A" in _error(response, 422)["message"]
    else:
        error = _error(response, 400)
        assert (
            "1-36 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
            in (error["message"])
        )
    assert _flavor_names(world) == before


def test_a_flavor_id_may_not_be_another_flavors_name(world: V1World) -> None:
    made = world.client.post(
        "/v1/flavors", json={"name": "m1.big", "vcpus": 2, "ram_mb": 512, "id": "m1-big"},
        headers=world.admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    shadow = world.client.post(
        "/v1/flavors", json={"name": "other", "vcpus": 1, "ram_mb": 256, "id": "tiny"},
        headers=world.admin,
    )  # fmt: skip
    assert "clashes with flavor 'tiny'" in _error(shadow, 409)["message"]
    assert world.client.get("/v1/flavors/tiny", headers=world.admin).json()["name"] == "tiny"


@pytest.mark.parametrize("project", ["a/b", "proj\nx", "proj\x00", "..", " lead", "p" * 65])
def test_user_with_a_project_outside_the_safe_pattern_is_refused(
    world: V1World, project: str
) -> None:
    response = world.client.post(
        "/v1/users",
        json={"name": "eve", "project": project, "public_key": repr(KeyPair().public_key)},
        headers=world.admin,
    )
    if any(ord(c) < 0x20 for c in project):  # the printable-text rule answers first
        assert "contains U+00" in _error(response, 422)["message"]
    else:
        error = _error(response, 400)
        assert (
            "1-64 characters from A-Z a-z 0-9 . _ @ -, starting with a letter or digit"
            in (error["message"])
        )
    assert world.client.get("/v1/users/eve", headers=world.admin).status_code == 404


def test_moving_a_user_into_a_bad_project_changes_nothing(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    key = world.client.get("/v1/users/alice", headers=world.admin).json()["public_key"]
    moved = world.client.put(
        "/v1/users/alice", json={"project": "proj-a/../b", "public_key": key},
        headers=world.admin,
    )  # fmt: skip
    _error(moved, 400)
    assert world.client.get("/v1/me", headers=alice).json()["project"] == "proj-a"


def test_parts_of_a_deleted_server_are_gone(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    sid = world.boot(alice)["id"]
    assert world.client.get(f"/v1/servers/{sid}/metadata", headers=alice).status_code == 200
    assert world.client.delete(f"/v1/servers/{sid}", headers=alice).status_code == 202
    assert world.wait_server(sid, alice)["status"] == "DELETED"
    for part in ("metadata", "power", "interfaces", "volumes"):
        for who in (alice, world.admin):
            response = world.client.get(f"/v1/servers/{sid}/{part}", headers=who)
            assert _error(response, 404)["code"] == "not_found", part
    assert world.client.get(f"/v1/servers/{sid}", headers=alice).json()["status"] == "DELETED"


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/servers", "GET, OPTIONS, POST"),
        ("/v1/servers/some-id", "DELETE, GET, OPTIONS, PATCH"),
        ("/v1/servers/some-id/volumes", "GET, OPTIONS, POST"),
        ("/v1/flavors/tiny", "DELETE, GET, OPTIONS"),
        ("/v1/users/bob", "DELETE, GET, OPTIONS, PUT"),
    ],
)
def test_options_lists_every_method_of_the_path(world: V1World, path: str, allow: str) -> None:
    response = world.client.options(path)
    assert response.status_code == 204
    assert response.headers["Allow"] == allow


def test_a_wrong_method_is_a_405_with_the_whole_allow_list(world: V1World) -> None:
    wrong = world.client.put("/v1/servers", headers=world.admin)
    error = _error(wrong, 405)
    assert wrong.headers["Allow"] == "GET, OPTIONS, POST"
    assert error["details"]["allowed"] == "GET, OPTIONS, POST"
    assert "allowed: GET, OPTIONS, POST" in error["message"]


def test_placement_405_carries_allow_in_placement_shape(world: V1World) -> None:
    response = world.client.patch(
        "/placement/resource_providers", headers={**world.admin, "OpenStack-API-Version":
                                                   "placement 1.39"},
    )  # fmt: skip
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    assert response.json()["errors"][0]["status"] == 405
    options = world.client.options("/placement/resource_providers/x/traits", headers=world.admin)
    assert options.status_code == 405 and options.headers["Allow"] == "DELETE, GET, PUT"
