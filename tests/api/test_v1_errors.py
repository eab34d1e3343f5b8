"""One error shape everywhere on /v1, and a rejected request changes nothing."""

from __future__ import annotations

import logging
import socket

import pytest
from biscuit_auth import KeyPair

from api.v1_world import V1World


def _error(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]  # type: ignore[no-any-return]


def test_every_route_needs_a_token(world: V1World) -> None:
    for path in ("/v1/servers", "/v1/flavors", "/v1/hosts", "/v1/users", "/v1/me"):
        response = world.client.get(path)
        assert response.status_code == 401, path
        assert _error(response)["code"] == "missing_credentials"


def test_validation_errors_name_field_value_and_what_is_accepted(world: V1World) -> None:
    response = world.client.post(
        "/v1/flavors", json={"name": "zero", "vcpus": 0, "ram_mb": 256, "colour": "red"},
        headers=world.admin,
    )  # fmt: skip
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "invalid_request"
    problems = {p["field"]: p for p in error["details"]["problems"]}  # type: ignore[index]
    assert problems["vcpus"]["value"] == 0 and problems["vcpus"]["accepted"] == ">= 1"
    assert "colour" in problems
    assert "vcpus" in str(error["message"])
    names = [f["name"] for f in world.client.get("/v1/flavors", headers=world.admin).json()]
    assert "zero" not in names


def test_bad_extra_spec_is_refused_with_accepted_values(world: V1World) -> None:
    response = world.client.post(
        "/v1/flavors",
        json={"name": "m", "vcpus": 1, "ram_mb": 256, "extra_specs": {"hw:power_metrics": "maybe"}},
        headers=world.admin,
    )
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "invalid_request" and "'maybe'" in str(error["message"])
    assert world.client.get("/v1/flavors/m", headers=world.admin).status_code == 404


def test_unknown_routes_and_methods_use_the_same_shape(world: V1World) -> None:
    missing = world.client.get("/v1/nothing-here", headers=world.admin)
    assert missing.status_code == 404 and _error(missing)["code"] == "not_found"
    wrong = world.client.put("/v1/servers", headers=world.admin)
    assert wrong.status_code == 405
    error = _error(wrong)
    assert error["code"] == "method_not_allowed" and "GET" in str(error["message"])


def test_members_cannot_use_admin_routes(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    for method, path, body in (
        ("POST", "/v1/flavors", {"name": "x", "vcpus": 1, "ram_mb": 64}),
        ("GET", "/v1/hosts", None), ("GET", "/v1/users", None),
        ("POST", "/v1/users", {"name": "eve", "project": "p", "public_key": "x"}),
    ):  # fmt: skip
        response = world.client.request(method, path, json=body, headers=alice)
        assert response.status_code == 403, (path, response.text)
        assert _error(response)["code"] == "admin_required"


def test_unknown_flavor_is_a_404_naming_the_flavors(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    response = world.client.post(
        "/v1/servers", json={"name": "w", "flavor": "huge", "image": "kernel"}, headers=alice
    )
    assert response.status_code == 404
    assert "small, tiny" in str(_error(response)["message"])
    assert world.client.get("/v1/servers", headers=world.admin).json() == []


def test_openapi_document_describes_the_v1_api(world: V1World) -> None:
    document = world.client.get("/openapi.json").json()
    paths = document["paths"]
    for path in ("/v1/servers", "/v1/servers/{server_id}/power", "/v1/hosts/{host_id}/disable",
                 "/v1/projects/{project_id}/power", "/v1/users", "/v1/volumes"):  # fmt: skip
        assert path in paths, path
    assert "ServerCreate" in document["components"]["schemas"]
    assert "ErrorResponse" in document["components"]["schemas"]


def test_host_errors_reach_members_as_a_request_id_and_admins_in_full(
    world: V1World, caplog: pytest.LogCaptureFixture
) -> None:
    alice = world.member("alice", "proj-a")
    server = world.boot(alice)
    domain = world.client.get(f"/v1/servers/{server['id']}", headers=world.admin).json()[
        "domain_name"
    ]
    volume = world.client.post(
        "/v1/volumes", json={"name": "d", "size_gb": 1, "format": "raw"}, headers=alice
    ).json()
    attach = f"/v1/servers/{server['id']}/volumes"
    caplog.set_level(logging.WARNING)
    # libvirt's test driver cannot attach disks: the host refuses, naming the domain.
    response = world.client.post(attach, json={"volume_id": volume["id"]}, headers=alice)
    assert response.status_code == 502
    error = _error(response)
    request_id = response.headers["x-request-id"]
    assert error["code"] == "host_error" and error["details"] == {"request_id": request_id}
    assert volume["id"] in str(error["message"]) and request_id in str(error["message"])
    for secret in (domain, socket.gethostname(), str(world.node.settings.data_dir)):
        assert secret not in response.text, (secret, response.text)
    logged = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert logged and domain in logged[0]  # the detail is in the log, under that id

    admin = world.client.post(attach, json={"volume_id": volume["id"]}, headers=world.admin)
    assert admin.status_code == 502
    admin_error = _error(admin)
    assert domain in str(admin_error["message"])
    assert admin_error["details"]["request_id"] == admin.headers["x-request-id"] != request_id


def test_every_response_carries_a_request_id(world: V1World) -> None:
    ok = world.client.get("/v1/flavors", headers=world.admin)
    refused = world.client.get("/v1/flavors")
    ids = {ok.headers["x-request-id"], refused.headers["x-request-id"]}
    assert len(ids) == 2 and all(i.startswith("req-") for i in ids)


def test_names_with_control_or_bidi_characters_are_422_naming_the_field(
    world: V1World,
) -> None:
    alice = world.member("alice", "proj-a")
    key = repr(KeyPair().public_key)
    for bad in ("web\x00", "\x1b[31mred", "evil\u202etxt.exe", "a\u2066b", "nel\x85", "z\u200bw"):
        for headers, path, body, field in (
            (alice, "/v1/servers", {"name": bad, "flavor": "tiny", "image": "kernel"}, "name"),
            (alice, "/v1/volumes", {"name": bad, "size_gb": 1, "format": "raw"}, "name"),
            (world.admin, "/v1/flavors", {"name": bad, "vcpus": 1, "ram_mb": 256}, "name"),
            (world.admin, "/v1/images", {"name": bad, "kernel_path": str(world.kernel)}, "name"),
            (world.admin, "/v1/users", {"name": bad, "project": "p", "public_key": key}, "name"),
            (world.admin, "/v1/users", {"name": "u", "project": bad, "public_key": key},
             "project"),
        ):  # fmt: skip
            response = world.client.post(path, json=body, headers=headers)
            assert response.status_code == 422, (path, bad, response.text)
            (problem,) = _error(response)["details"]["problems"]  # type: ignore[index]
            assert problem["field"] == field and "U+" in problem["message"], problem
            assert "\\u" in problem["value"] and "\x1b" not in response.text
            assert "\u202e" not in response.text and "\x85" not in response.text
    assert world.client.get("/v1/servers", headers=alice).json() == []
    assert world.client.get("/v1/volumes", headers=alice).json() == []
    users = [u["name"] for u in world.client.get("/v1/users", headers=world.admin).json()]
    assert users == ["admin", "alice"]


def test_an_unexpected_error_is_a_500_whose_request_id_is_in_header_body_and_log(
    world: V1World, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    def boom() -> None:
        raise RuntimeError("secret host detail /var/lib/x")

    app = world.client.app
    assert isinstance(app, FastAPI)
    app.add_api_route("/v1/boom-for-test", boom)
    client = TestClient(app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR):
        response = client.get("/v1/boom-for-test", headers=world.admin)
    assert response.status_code == 500
    error = _error(response)
    rid = response.headers["X-Request-Id"]
    assert error["code"] == "internal_error" and error["details"] == {"request_id": rid}
    assert "secret host detail" not in response.text
    assert any(rid in record.getMessage() for record in caplog.records)
