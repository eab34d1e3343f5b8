"""Before a route runs: the token is checked from the headers alone, bodies over
``api.max_body_bytes`` are refused with 413 without being read whole, and a 422 does
not echo a whole bad value back. Over real HTTP (uvicorn) and at the ASGI level."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from biscuit_auth import KeyPair

from api.served_app import exchange, serving
from api.v1_world import V1World
from wattvisor.auth import mint_token, mint_token_from_file

MIB = 1024 * 1024
ANNOUNCED = 30 * MIB


@pytest.fixture
def port(world: V1World) -> Iterator[int]:
    with serving(world.node.app) as served:
        yield served


def _head(method: str, path: str, *headers: str) -> str:
    return "\n".join([f"{method} {path} HTTP/1.1", "Host: localhost", *headers, ""])


def _admin_token(world: V1World) -> str:
    path = world.node.settings.admin_key_path
    return mint_token_from_file(path, "admin", timedelta(hours=1))


def test_a_huge_body_without_a_token_is_refused_before_it_is_read(
    world: V1World, port: int
) -> None:
    # 30 MiB announced, 1 KiB sent: the answer can only come from the headers.
    head = _head(
        "POST", "/v1/flavors", "Content-Type: application/json", f"Content-Length: {ANNOUNCED}"
    )
    response = exchange(port, head, [b"{" + b" " * 1023])
    assert response.status == 401
    assert json.loads(response.body)["error"]["code"] == "missing_credentials"
    assert response.closed  # the rest of the body is not read either


def test_a_body_announced_too_large_is_refused_with_413_at_once(world: V1World, port: int) -> None:
    head = _head(
        "POST", "/v1/flavors", f"Authorization: Bearer {_admin_token(world)}",
        "Content-Type: application/json", f"Content-Length: {ANNOUNCED}",
    )  # fmt: skip
    response = exchange(port, head, [b"{" + b" " * 1023])
    assert response.status == 413
    error = json.loads(response.body)["error"]
    assert error["code"] == "too_large" and "api.max_body_bytes" in error["message"]
    assert error["details"]["max_body_bytes"] == MIB
    assert response.closed


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(world: V1World, port: int) -> None:
    head = _head(
        "POST", "/v1/flavors", f"Authorization: Bearer {_admin_token(world)}",
        "Content-Type: application/json", "Transfer-Encoding: chunked",
    )  # fmt: skip
    size = MIB + 1  # one byte over, in one chunk, and the body never ends
    response = exchange(port, head, [f"{size:x}\r\n".encode() + b" " * size + b"\r\n"])
    assert response.status == 413, response.body
    assert json.loads(response.body)["error"]["code"] == "too_large"
    assert response.closed
    names = [f["name"] for f in world.client.get("/v1/flavors", headers=world.admin).json()]
    assert names == ["small", "tiny"]


def test_an_endless_chunked_body_is_not_read_past_the_limit(world: V1World) -> None:
    chunk = b" " * 1024
    taken = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal taken
        taken += 1
        return {"type": "http.request", "body": chunk, "more_body": taken < ANNOUNCED // 1024}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/flavors", "raw_path": b"/v1/flavors", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8774),
        "headers": [
            (b"host", b"localhost"), (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
            (b"authorization", f"Bearer {_admin_token(world)}".encode()),
        ],
    }  # fmt: skip
    asyncio.run(world.node.app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert taken == MIB // 1024 + 1  # read up to the first chunk past the limit, no further


def test_a_bad_value_is_echoed_short_in_a_422(world: V1World) -> None:
    huge = "x" * 100_000
    response = world.client.post(
        "/v1/flavors", json={"name": huge, "vcpus": 1, "ram_mb": 256}, headers=world.admin
    )
    assert response.status_code == 422
    assert len(response.content) < 2_000
    (problem,) = response.json()["error"]["details"]["problems"]
    assert problem["field"] == "name" and "255" in problem["accepted"]
    assert problem["value"] == "x" * 64 + "... (100000 characters)"


def test_read_only_token_writing_gets_403_insufficient_scope(world: V1World) -> None:
    keys = KeyPair()
    world.client.post(
        "/v1/users", headers=world.admin,
        json={"name": "rita", "project": "p", "public_key": repr(keys.public_key)},
    )  # fmt: skip
    token = mint_token(keys.private_key, "rita", timedelta(hours=1), read_only=True)
    headers = {"Authorization": f"Bearer {token}"}
    assert world.client.get("/v1/servers", headers=headers).status_code == 200
    response = world.client.post(
        "/v1/servers", json={"name": "w", "flavor": "tiny", "image": "kernel"}, headers=headers
    )
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert response.json()["error"]["code"] == "insufficient_scope"
    assert world.client.get("/v1/servers", headers=world.admin).json() == []


def _placement_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert set(error) == {"status", "title", "detail", "code", "request_id"}
    assert error["status"] == status and error["code"] == code and error["title"]
    assert error["request_id"] == response.headers["x-request-id"]
    return dict(error)


def test_placement_checks_the_token_before_the_microversion(world: V1World) -> None:
    unsupported = {"OpenStack-API-Version": "placement 9.99"}
    response = world.client.get("/placement/resource_providers", headers=unsupported)
    _placement_error(response, 401, "missing_credentials")
    assert response.headers["www-authenticate"].startswith("Bearer")
    admin = world.client.get(
        "/placement/resource_providers", headers={**world.admin, **unsupported}
    )
    assert admin.status_code == 406  # only an authenticated request reaches the version check


def test_placement_refuses_members_and_read_only_writes_in_its_own_shape(
    world: V1World,
) -> None:
    alice = world.member("alice", "proj-a")
    version = {"OpenStack-API-Version": "placement 1.39"}
    member = world.client.get("/placement/resource_providers", headers={**alice, **version})
    assert "needs role 'admin'" in _placement_error(member, 403, "admin_required")["detail"]
    path = world.node.settings.admin_key_path
    read_only = mint_token_from_file(path, "admin", timedelta(hours=1), read_only=True)
    headers = {"Authorization": f"Bearer {read_only}", **version}
    assert world.client.get("/placement/traits", headers=headers).status_code == 200
    write = world.client.put("/placement/traits/CUSTOM_SCOPE_TEST", headers=headers)
    _placement_error(write, 403, "insufficient_scope")
    assert 'error="insufficient_scope"' in write.headers["www-authenticate"]
    missing = world.client.get("/placement/traits/CUSTOM_SCOPE_TEST", headers=world.admin)
    assert missing.status_code == 404
