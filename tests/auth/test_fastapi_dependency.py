"""Authentication over HTTP: 401 with a precise code per refusal, 403 when a valid token's
own checks refuse the request, 404 across projects."""

import logging
from datetime import timedelta
from typing import Annotated, Any

import pytest
from auth_users import NOW, KeyedUser
from biscuit_auth import Biscuit, BiscuitBuilder, BlockBuilder, KeyPair
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient

from support.user_registry import UserRegistry
from wattvisor.auth import Principal, can_see_project, mint_token, redact_for
from wattvisor.auth.fastapi import (
    install_auth_errors,
    make_admin_dependency,
    make_auth_dependency,
)
from wattvisor.config.settings import AuthSettings

SERVERS: dict[str, dict[str, Any]] = {
    "s-a": {
        "id": "s-a",
        "project_id": "proj-a",
        "host": "compute-1",
        "share_source_dir": "/var/lib/wattvisor/shares/s-a",
    },
    "s-b": {
        "id": "s-b",
        "project_id": "proj-b",
        "host": "compute-2",
        "share_source_dir": "/var/lib/wattvisor/shares/s-b",
    },
}


@pytest.fixture
def client(registry: UserRegistry) -> TestClient:
    app = FastAPI()
    install_auth_errors(app)
    current = make_auth_dependency(registry.lookup, AuthSettings(), clock=lambda: NOW)
    admin_only = make_admin_dependency(current)

    @app.get("/v1/servers/{server_id}")
    async def show(
        server_id: str, principal: Annotated[Principal, Depends(current)]
    ) -> dict[str, Any]:
        server = SERVERS.get(server_id)
        if server is None or not can_see_project(principal, server["project_id"]):
            raise HTTPException(404, f"server {server_id} not found")
        result: dict[str, Any] = redact_for(principal, server)
        return result

    @app.delete("/v1/servers/{server_id}")
    async def delete(
        server_id: str, principal: Annotated[Principal, Depends(current)]
    ) -> dict[str, str]:
        return {"deleted": server_id, "by": principal.user}

    @app.get("/v1/hosts")
    async def hosts(principal: Annotated[Principal, Depends(admin_only)]) -> list[str]:
        return ["compute-1", "compute-2"]

    return TestClient(app)


def _token(user: KeyedUser, **kwargs: Any) -> str:
    return mint_token(user.keys.private_key, user.name, timedelta(hours=1), now=NOW, **kwargs)


def _refused(response: Any, code: str) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, body
    return error


def _out_of_scope(response: Any) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer") and 'error="insufficient_scope"' in challenge
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "insufficient_scope", error
    return error


def test_owner_reads_own_server(client: TestClient, alice: KeyedUser) -> None:
    response = client.get("/v1/servers/s-a", headers={"Authorization": f"Bearer {_token(alice)}"})
    assert response.status_code == 200
    assert response.json() == {"id": "s-a", "project_id": "proj-a"}


def test_other_projects_server_is_not_found_not_forbidden(
    client: TestClient, alice: KeyedUser
) -> None:
    response = client.get("/v1/servers/s-b", headers={"Authorization": f"Bearer {_token(alice)}"})
    assert response.status_code == 404
    missing = client.get("/v1/servers/nope", headers={"Authorization": f"Bearer {_token(alice)}"})
    assert missing.status_code == 404 and missing.json() == {"detail": "server nope not found"}
    assert response.json() == {"detail": "server s-b not found"}


def test_admin_sees_host_details(client: TestClient, root: KeyedUser) -> None:
    response = client.get("/v1/servers/s-b", headers={"Authorization": f"Bearer {_token(root)}"})
    assert response.json()["host"] == "compute-2"


def test_missing_header_is_refused(client: TestClient) -> None:
    error = _refused(client.get("/v1/servers/s-a"), "missing_credentials")
    assert "Authorization: Bearer <token>" in error["message"]


def test_other_scheme_is_refused_by_name(client: TestClient) -> None:
    error = _refused(
        client.get("/v1/servers/s-a", headers={"Authorization": "Basic YTpi"}),
        "missing_credentials",
    )
    assert "'Basic'" in error["message"]


def test_garbage_token_is_refused(client: TestClient) -> None:
    response = client.get("/v1/servers/s-a", headers={"Authorization": "Bearer garbage"})
    error = _refused(response, "token_malformed")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "not a biscuit" in error["message"]


def test_forged_signature_is_refused(client: TestClient, alice: KeyedUser) -> None:
    token = _token(alice)
    index = len(token) - 10
    forged = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
    _refused(
        client.get("/v1/servers/s-a", headers={"Authorization": f"Bearer {forged}"}),
        "token_signature_invalid",
    )


def test_other_users_key_is_refused(client: TestClient, bob: KeyedUser) -> None:
    token = mint_token(bob.keys.private_key, "alice", timedelta(hours=1), now=NOW)
    error = _refused(
        client.get("/v1/servers/s-a", headers={"Authorization": f"Bearer {token}"}),
        "token_signature_invalid",
    )
    assert error["details"]["user"] == "alice"


def test_unknown_and_known_user_names_get_the_same_answer(
    client: TestClient, registry: UserRegistry, alice: KeyedUser
) -> None:
    def refusal(name: str) -> tuple[int, str, Any]:
        token = mint_token(KeyPair().private_key, name, timedelta(hours=1), now=NOW)
        response = client.get("/v1/servers/s-a", headers={"Authorization": f"Bearer {token}"})
        challenge = response.headers["www-authenticate"].replace(name, "<name>")
        return response.status_code, challenge, response.json()

    known = refusal("alice")  # registered, but the token is signed with another key
    unknown = refusal("mallory")  # never registered
    assert known[0] == unknown[0] == 401
    assert known[1] == unknown[1]
    known_error, unknown_error = known[2]["error"], unknown[2]["error"]
    assert known_error["code"] == unknown_error["code"] == "token_signature_invalid"
    assert known_error["message"].replace("'alice'", "'mallory'") == unknown_error["message"]
    assert known_error["details"] == {"user": "alice"}
    assert unknown_error["details"] == {"user": "mallory"}


def test_missing_expiry_is_refused(client: TestClient, alice: KeyedUser) -> None:
    token = BiscuitBuilder('user("alice");').build(alice.keys.private_key).to_base64()
    _refused(
        client.get("/v1/servers/s-a", headers={"Authorization": f"Bearer {token}"}),
        "token_no_expiry",
    )


def test_expired_token_is_refused(client: TestClient, alice: KeyedUser) -> None:
    token = mint_token(
        alice.keys.private_key, "alice", timedelta(minutes=5), now=NOW - timedelta(hours=1)
    )
    error = _refused(
        client.get("/v1/servers/s-a", headers={"Authorization": f"Bearer {token}"}),
        "token_expired",
    )
    assert error["details"]["expired_at"] == "2026-11-22T11:05:00Z"


def test_user_only_in_attenuation_block_is_refused(client: TestClient, alice: KeyedUser) -> None:
    base = BiscuitBuilder("expires({e});", {"e": NOW + timedelta(hours=1)}).build(
        alice.keys.private_key
    )
    token = base.append(BlockBuilder('user("alice");')).to_base64()
    _refused(
        client.get("/v1/servers/s-a", headers={"Authorization": f"Bearer {token}"}),
        "token_no_user",
    )


def test_read_only_token_reads_but_cannot_delete(client: TestClient, alice: KeyedUser) -> None:
    headers = {"Authorization": f"Bearer {_token(alice, read_only=True)}"}
    assert client.get("/v1/servers/s-a", headers=headers).status_code == 200
    error = _out_of_scope(client.delete("/v1/servers/s-a", headers=headers))
    assert 'operation("read")' in error["message"]
    assert error["details"]["operation"] == "write"


def test_token_attenuated_by_its_holder_is_honoured(client: TestClient, alice: KeyedUser) -> None:
    narrowed = (
        Biscuit.from_base64(_token(alice), alice.keys.public_key)
        .append(BlockBuilder('check if method("GET")'))
        .to_base64()
    )
    headers = {"Authorization": f"Bearer {narrowed}"}
    assert client.get("/v1/servers/s-a", headers=headers).status_code == 200
    _out_of_scope(client.delete("/v1/servers/s-a", headers=headers))


def test_member_gets_403_on_admin_routes_and_admin_gets_in(
    client: TestClient, alice: KeyedUser, root: KeyedUser
) -> None:
    member = client.get("/v1/hosts", headers={"Authorization": f"Bearer {_token(alice)}"})
    assert member.status_code == 403
    assert member.json()["error"]["code"] == "admin_required"
    admin = client.get("/v1/hosts", headers={"Authorization": f"Bearer {_token(root)}"})
    assert admin.status_code == 200


def test_tokens_never_reach_the_logs(
    client: TestClient, alice: KeyedUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = _token(alice)
    bad = mint_token(KeyPair().private_key, "alice", timedelta(hours=1), now=NOW)
    client.get("/v1/servers/s-a", headers={"Authorization": f"Bearer {good}"})
    response = client.get("/v1/servers/s-a", headers={"Authorization": f"Bearer {bad}"})
    assert good[:40] not in caplog.text and bad[:40] not in caplog.text
    assert bad[:40] not in response.text


def test_without_the_error_handler_status_and_header_are_still_right(
    registry: UserRegistry,
) -> None:
    app = FastAPI()
    current = make_auth_dependency(registry.lookup, clock=lambda: NOW)

    @app.get("/x")
    async def x(principal: Annotated[Principal, Depends(current)]) -> str:
        return principal.user

    response = TestClient(app).get("/x")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["detail"]["error"]["code"] == "missing_credentials"


def test_openapi_declares_the_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["biscuit"]["scheme"] == "bearer"
