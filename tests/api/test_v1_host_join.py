"""Joining over the real API: join tokens (admin), the join (join token), and what host,
user and controller tokens may call afterwards."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from biscuit_auth import KeyPair

from api.v1_world import Headers, V1World
from wattvisor.auth import mint_token
from wattvisor.auth.keys import load_private_key
from wattvisor.auth.service_tokens import mint_controller_token, mint_host_token, mint_join_token


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def facts(name: str = "edge-1", host_id: str | None = None) -> tuple[dict[str, Any], KeyPair]:
    keys = KeyPair()
    body = {
        "id": host_id or str(uuid.uuid4()),
        "name": name,
        "libvirt_uri": "qemu:///system",
        "traits": ["HW_CPU_X86_AVX2", "COMPUTE_NET_VIF_MODEL_VIRTIO"],
        "inventory": {"VCPU": 16, "MEMORY_MB": 32768, "DISK_GB": 200},
        "energy_source": "rapl",
        "addresses": ["https://198.18.0.2:8775"],
        "public_key": repr(keys.public_key),
    }
    return body, keys


def join_token(world: V1World, ttl: str = "1h") -> dict[str, Any]:
    response = world.client.post("/v1/hosts/join-tokens", json={"ttl": ttl}, headers=world.admin)
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


def registered(world: V1World) -> tuple[int, int]:
    """(hosts the API lists, placement providers)."""
    hosts = world.client.get("/v1/hosts", headers=world.admin).json()
    return len(hosts), len(world.node.placement.list_providers())


def joined_host(world: V1World, name: str = "edge-1") -> tuple[str, KeyPair]:
    body, keys = facts(name)
    response = world.client.post(
        "/v1/hosts/join", json=body, headers=bearer(join_token(world)["token"])
    )
    assert response.status_code == 201, response.text
    return body["id"], keys


def test_a_join_token_registers_the_host_with_its_facts(world: V1World) -> None:
    issued = join_token(world)
    body, _keys = facts()
    response = world.client.post("/v1/hosts/join", json=body, headers=bearer(issued["token"]))
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["host_id"] == body["id"]
    assert answer["cluster_id"] == issued["cluster_id"]
    assert [k["valid_until"] for k in answer["cluster_keys"]] == [None]
    host = world.client.get(f"/v1/hosts/{body['id']}", headers=world.admin).json()
    assert host["name"] == "edge-1"
    assert host["inventory"] == {"VCPU": 16, "MEMORY_MB": 32768, "DISK_GB": 200}
    assert "HW_CPU_X86_AVX2" in host["traits"]


def test_only_admins_get_join_tokens(world: V1World) -> None:
    member = world.member("alice", "proj-a")
    response = world.client.post("/v1/hosts/join-tokens", json={"ttl": "1h"}, headers=member)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_required"


def test_a_join_token_lifetime_that_cannot_be_parsed_is_refused(world: V1World) -> None:
    response = world.client.post(
        "/v1/hosts/join-tokens", json={"ttl": "forever"}, headers=world.admin
    )
    assert response.status_code == 400
    assert "'forever'" in response.json()["error"]["message"]


def _cluster_key(world: V1World) -> Any:
    return load_private_key(world.node.settings.cluster_key_path)


def _cluster_id(world: V1World) -> str:
    return str(join_token(world)["cluster_id"])


REFUSALS = ["expired", "reused", "forged", "foreign cluster", "malformed", "missing", "user"]


@pytest.mark.parametrize("kind", REFUSALS)
def test_a_bad_join_token_registers_nothing_and_says_why(world: V1World, kind: str) -> None:
    used = join_token(world)
    first, _ = facts("first")
    assert (
        world.client.post("/v1/hosts/join", json=first, headers=bearer(used["token"])).status_code
        == 201
    )
    before = registered(world)
    cluster = used["cluster_id"]
    soon = datetime.now(UTC) + timedelta(hours=1)
    headers: Headers
    if kind == "expired":
        past = datetime.now(UTC) - timedelta(hours=2)
        headers = bearer(mint_join_token(_cluster_key(world), cluster, str(uuid.uuid4()), past))
        code, words = "token_expired", "expired at"
    elif kind == "reused":
        headers, code, words = bearer(used["token"]), "join_token_used", "used already"
    elif kind == "forged":
        token = mint_join_token(KeyPair().private_key, cluster, str(uuid.uuid4()), soon)
        headers, code, words = bearer(token), "token_signature_invalid", "signature invalid"
    elif kind == "foreign cluster":
        other = str(uuid.uuid4())
        token = mint_join_token(KeyPair().private_key, other, str(uuid.uuid4()), soon)
        headers, code, words = bearer(token), "token_foreign_cluster", other
    elif kind == "malformed":
        headers, code, words = bearer("bm90IGEgYmlzY3VpdA"), "token_malformed", "not a biscuit"
    elif kind == "missing":
        headers, code, words = {}, "missing_credentials", "no credentials"
    else:
        headers, code, words = world.admin, "token_wrong_kind", "a user token is not accepted"
    body, _ = facts("second")
    response = world.client.post("/v1/hosts/join", json=body, headers=headers)
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert words in error["message"]
    assert registered(world) == before
    lookup = world.client.get(f"/v1/hosts/{body['id']}", headers=world.admin)
    assert lookup.status_code == 404


def test_a_join_with_bad_facts_registers_nothing_and_keeps_the_token(world: V1World) -> None:
    issued = join_token(world)
    before = registered(world)
    body, _ = facts()
    bad = {**body, "traits": ["NOT_A_TRAIT"]}
    response = world.client.post("/v1/hosts/join", json=bad, headers=bearer(issued["token"]))
    assert response.status_code == 400
    assert "NOT_A_TRAIT" in response.json()["error"]["message"]
    missing = {k: v for k, v in body.items() if k != "public_key"}
    response = world.client.post("/v1/hosts/join", json=missing, headers=bearer(issued["token"]))
    assert response.status_code == 422
    assert registered(world) == before
    response = world.client.post("/v1/hosts/join", json=body, headers=bearer(issued["token"]))
    assert response.status_code == 201


def test_a_host_token_calls_its_heartbeat_and_learns_the_cluster_keys(world: V1World) -> None:
    host_id, keys = joined_host(world)
    response = world.client.post(
        f"/v1/hosts/{host_id}/heartbeat", headers=bearer(mint_host_token(keys.private_key, host_id))
    )
    assert response.status_code == 200, response.text
    assert response.json()["host_id"] == host_id
    assert len(response.json()["cluster_keys"]) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/servers"),
        ("GET", "/v1/me"),
        ("GET", "/v1/hosts"),
        ("POST", "/v1/hosts/join-tokens"),
        ("GET", "/placement/resource_providers"),
    ],
)
def test_a_host_token_cannot_call_user_or_admin_routes(
    world: V1World, method: str, path: str
) -> None:
    host_id, keys = joined_host(world)
    headers = bearer(mint_host_token(keys.private_key, host_id))
    response = world.client.request(method, path, headers=headers)
    assert response.status_code == 403, response.text


def test_a_host_token_cannot_act_for_another_host(world: V1World) -> None:
    host_id, keys = joined_host(world, "edge-1")
    other_id, _ = joined_host(world, "edge-2")
    response = world.client.post(
        f"/v1/hosts/{other_id}/heartbeat",
        headers=bearer(mint_host_token(keys.private_key, host_id)),
    )
    assert response.status_code == 403
    assert f"cannot act for host '{other_id}'" in response.json()["error"]["message"]
    # Nor by naming the other host in its token: the signature is checked with its keys.
    response = world.client.post(
        f"/v1/hosts/{other_id}/heartbeat",
        headers=bearer(mint_host_token(keys.private_key, other_id)),
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_signature_invalid"


@pytest.mark.parametrize("who", ["member", "admin"])
def test_user_tokens_cannot_call_host_endpoints(world: V1World, who: str) -> None:
    host_id, _ = joined_host(world)
    headers = world.admin if who == "admin" else world.member("alice", "proj-a")
    for path in (f"/v1/hosts/{host_id}/heartbeat", f"/v1/hosts/{host_id}/credentials"):
        response = world.client.post(path, json={"public_key": "x"}, headers=headers)
        assert response.status_code == 403, response.text
        assert "host endpoint" in response.json()["error"]["message"]


def test_a_controller_token_is_refused_by_the_controller_api(world: V1World) -> None:
    cluster = _cluster_id(world)
    token = mint_controller_token(_cluster_key(world), cluster)
    for method, path in (("GET", "/v1/me"), ("GET", "/v1/hosts")):
        response = world.client.request(method, path, headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "token_wrong_kind"


def test_a_host_rotates_its_key_and_the_old_one_ends(world: V1World) -> None:
    host_id, old = joined_host(world)
    new = KeyPair()
    rotated = world.client.post(
        f"/v1/hosts/{host_id}/credentials",
        json={"public_key": repr(new.public_key)},
        headers=bearer(mint_host_token(old.private_key, host_id)),
    )
    assert rotated.status_code == 200, rotated.text

    def heartbeat(keys: KeyPair) -> int:
        token = mint_host_token(keys.private_key, host_id)
        return world.client.post(
            f"/v1/hosts/{host_id}/heartbeat", headers=bearer(token)
        ).status_code

    assert heartbeat(new) == 200
    assert heartbeat(old) == 200  # grace period (auth.host_key_grace_s)
    newest = KeyPair()
    revoked = world.client.post(
        f"/v1/hosts/{host_id}/credentials",
        json={"public_key": repr(newest.public_key), "revoke_old": True},
        headers=bearer(mint_host_token(new.private_key, host_id)),
    )
    assert revoked.status_code == 200, revoked.text
    assert heartbeat(newest) == 200
    assert heartbeat(new) == 401
    # The key in grace may not rotate: it is not the current key.
    stolen = world.client.post(
        f"/v1/hosts/{host_id}/credentials",
        json={"public_key": repr(KeyPair().public_key)},
        headers=bearer(mint_host_token(old.private_key, host_id)),
    )
    assert stolen.status_code == 409


def test_a_user_token_with_a_host_name_is_still_a_user_token(world: V1World) -> None:
    """A member named like a host id gets nothing of a host's."""
    host_id, _ = joined_host(world)
    keys = KeyPair()
    world.client.post(
        "/v1/users",
        json={"name": "mallory", "project": "p", "role": "member",
              "public_key": repr(keys.public_key)},
        headers=world.admin,
    )  # fmt: skip
    token = mint_token(keys.private_key, "mallory", timedelta(minutes=5))
    response = world.client.post(f"/v1/hosts/{host_id}/heartbeat", headers=bearer(token))
    assert response.status_code == 403


def test_a_bad_join_token_is_refused_before_the_body_is_read(world: V1World) -> None:
    """Only the headers decide: 30 MiB announced, 1 KiB sent, and the connection closed."""
    import json

    from api.served_app import exchange, serving

    forged = mint_join_token(
        KeyPair().private_key, _cluster_id(world), str(uuid.uuid4()),
        datetime.now(UTC) + timedelta(hours=1),
    )  # fmt: skip
    head = "\n".join(
        [
            "POST /v1/hosts/join HTTP/1.1",
            "Host: localhost",
            f"Authorization: Bearer {forged}",
            "Content-Type: application/json",
            f"Content-Length: {30 * 1024 * 1024}",
            "",
        ]
    )
    with serving(world.node.app) as port:
        response = exchange(port, head, [b"{" + b" " * 1023])
    assert response.status == 401
    assert json.loads(response.body)["error"]["code"] == "token_signature_invalid"
    assert response.closed
