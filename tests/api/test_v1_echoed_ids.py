"""Ids and names from the URL path (or a body) that name nothing are echoed short and
escaped in 404 and 409 answers: a path segment can be kilobytes long or hold control
characters, and an error must not repeat it whole or raw."""

from __future__ import annotations

import json

import pytest

from api.v1_world import V1World

LONG = "x" * 5000


def _assert_short_and_escaped(body: dict[str, object]) -> None:
    text = json.dumps(body, ensure_ascii=False)
    assert len(text) < 1000, text[:300]
    assert "\x00" not in text and "\u202e" not in text, text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/servers/{id}",
        "/v1/servers/{id}/power",
        "/v1/servers/{id}/metadata",
        "/v1/servers/{id}/interfaces",
        "/v1/volumes/{id}",
        "/v1/flavors/{id}",
        "/v1/images/{id}",
        "/v1/projects/{id}/power",
    ],
)
@pytest.mark.parametrize("ident", [LONG, "%00abc", "%E2%80%AEabc"])
def test_unknown_ids_in_the_path_are_echoed_short_and_escaped(
    world: V1World, path: str, ident: str
) -> None:
    member = world.member("alice", "pa")
    response = world.client.get(path.format(id=ident), headers=member)
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["error"]["code"] == "not_found"
    _assert_short_and_escaped(body)
    if ident == LONG:
        assert "(5000 characters)" in body["error"]["message"]


def test_unknown_alias_and_body_ids_are_echoed_short(world: V1World) -> None:
    member = world.member("alice", "pa")
    server = world.boot(member)
    detach = world.client.delete(f"/v1/servers/{server['id']}/volumes/{LONG}", headers=member)
    assert detach.status_code == 404, detach.text
    _assert_short_and_escaped(detach.json())
    for body in ({"name": "v", "size_gb": 1, "server_id": "y" * 255},):
        made = world.client.post("/v1/volumes", json=body, headers=member)
        assert made.status_code == 404, made.text
        _assert_short_and_escaped(made.json())
    boot = world.client.post(
        "/v1/servers", json={"name": "n", "flavor": "tiny", "image": "z" * 255}, headers=member
    )
    assert boot.status_code == 404, boot.text
    _assert_short_and_escaped(boot.json())


@pytest.mark.parametrize("path", ["/v1/users/{id}", "/v1/hosts/{id}", "/v1/hosts/{id}/power"])
@pytest.mark.parametrize("ident", [LONG, "%00abc"])
def test_unknown_ids_in_admin_paths_are_echoed_short_and_escaped(
    world: V1World, path: str, ident: str
) -> None:
    response = world.client.get(path.format(id=ident), headers=world.admin)
    assert response.status_code == 404, response.text
    _assert_short_and_escaped(response.json())


def test_a_long_image_path_that_is_no_file_is_echoed_short(world: V1World) -> None:
    response = world.client.post(
        "/v1/images",
        json={"name": "i", "kernel_path": str(world.kernel), "initrd_path": "/no/" + LONG[:4000]},
        headers=world.admin,
    )
    assert response.status_code == 400, response.text
    _assert_short_and_escaped(response.json())
    assert "initrd_path" in response.json()["error"]["message"]
