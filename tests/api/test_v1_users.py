"""/v1/users (admin): users are registered by public key; their tokens then work."""

from __future__ import annotations

from datetime import timedelta

from biscuit_auth import KeyPair

from api.v1_world import V1World
from wattvisor.auth import mint_token


def _bearer(keys: KeyPair, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(keys.private_key, name, timedelta(minutes=5))}"}


def test_registered_user_can_use_its_token(world: V1World) -> None:
    keys = KeyPair()
    response = world.client.post(
        "/v1/users",
        json={"name": "carol", "project": "proj-c", "public_key": repr(keys.public_key)},
        headers=world.admin,
    )
    assert response.status_code == 201, response.text
    assert response.json()["role"] == "member"
    token = mint_token(keys.private_key, "carol", timedelta(minutes=5))
    me = world.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json() == {
        "user": "carol",
        "project": "proj-c",
        "role": "member",
    }
    names = [u["name"] for u in world.client.get("/v1/users", headers=world.admin).json()]
    assert names == ["admin", "carol"]


def test_rotated_key_invalidates_the_old_token(world: V1World) -> None:
    old, new = KeyPair(), KeyPair()
    world.client.post(
        "/v1/users",
        json={"name": "dave", "project": "p", "public_key": repr(old.public_key)},
        headers=world.admin,
    )
    old_token = {
        "Authorization": f"Bearer {mint_token(old.private_key, 'dave', timedelta(minutes=5))}"
    }
    assert world.client.get("/v1/me", headers=old_token).status_code == 200
    rotated = world.client.put(
        "/v1/users/dave",
        json={"project": "p", "role": "member", "public_key": repr(new.public_key)},
        headers=world.admin,
    )
    assert rotated.status_code == 200, rotated.text
    assert world.client.get("/v1/me", headers=old_token).status_code == 401
    new_token = {
        "Authorization": f"Bearer {mint_token(new.private_key, 'dave', timedelta(minutes=5))}"
    }
    assert world.client.get("/v1/me", headers=new_token).status_code == 200
    assert world.client.delete("/v1/users/dave", headers=world.admin).status_code == 204
    assert world.client.get("/v1/me", headers=new_token).status_code == 401


def test_bad_registrations_are_refused_and_change_nothing(world: V1World) -> None:
    bad_key = world.client.post(
        "/v1/users", json={"name": "eve", "project": "p", "public_key": "AAAA"},
        headers=world.admin,
    )  # fmt: skip
    assert bad_key.status_code == 400
    assert "public key 'AAAA'" in bad_key.json()["error"]["message"]
    bad_role = world.client.post(
        "/v1/users",
        json={"name": "eve", "project": "p", "role": "owner", "public_key": "x"},
        headers=world.admin,
    )
    assert bad_role.status_code == 422
    [problem] = bad_role.json()["error"]["details"]["problems"]
    assert problem["field"] == "role" and "admin" in problem["accepted"]
    taken = world.client.post(
        "/v1/users",
        json={"name": "admin", "project": "p", "public_key": repr(KeyPair().public_key)},
        headers=world.admin,
    )
    assert taken.status_code == 409
    assert world.client.delete("/v1/users/admin", headers=world.admin).status_code == 409
    names = [u["name"] for u in world.client.get("/v1/users", headers=world.admin).json()]
    assert names == ["admin"]
