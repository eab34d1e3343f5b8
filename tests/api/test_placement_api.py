"""The Placement-compatible API answers with Placement's status codes, bodies, headers
and error format (microversion 1.39)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from support.fd_budget import open_descriptors
from wattvisor.api import create_app
from wattvisor.config.settings import Settings
from wattvisor.placement import Placement

H = {"OpenStack-API-Version": "placement 1.39"}


@pytest.fixture
def client(placement: Placement, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=tmp_path), placement=placement)
    with TestClient(app) as test_client:
        yield test_client


def _error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    (error,) = body["errors"]
    assert error["status"] == status
    assert error["request_id"] == response.headers["openstack-request-id"]
    assert error["request_id"].startswith("req-")
    assert error["title"]
    if code is not None:
        assert error["code"] == code
    return dict(error)


def _provider(client: TestClient, name: str, **inventory: int) -> str:
    response = client.post("/placement/resource_providers", json={"name": name}, headers=H)
    assert response.status_code == 200, response.text
    rp = str(response.json()["uuid"])
    if inventory:
        response = client.put(
            f"/placement/resource_providers/{rp}/inventories",
            json={
                "resource_provider_generation": 0,
                "inventories": {rc: {"total": total} for rc, total in inventory.items()},
            },
            headers=H,
        )
        assert response.status_code == 200, response.text
    return rp


def _allocate(
    client: TestClient, consumer: str, rp: str, generation: int | None = None, **resources: int
) -> Any:
    return client.put(
        f"/placement/allocations/{consumer}",
        json={
            "allocations": {rp: {"resources": resources}},
            "project_id": "proj",
            "user_id": "user",
            "consumer_generation": generation,
            "consumer_type": "INSTANCE",
        },
        headers=H,
    )


def test_every_response_carries_version_and_request_id(client: TestClient) -> None:
    response = client.get("/placement/resource_providers", headers=H)
    assert response.status_code == 200
    assert response.json() == {"resource_providers": []}
    assert response.headers["openstack-api-version"] == "placement 1.39"
    assert response.headers["openstack-request-id"].startswith("req-")


def test_version_document_offers_1_39(client: TestClient) -> None:
    body = client.get("/placement/").json()
    assert body["versions"][0]["max_version"] == "1.39"


def test_too_new_microversion_is_not_acceptable(client: TestClient) -> None:
    response = client.get(
        "/placement/resource_providers", headers={"OpenStack-API-Version": "placement 1.99"}
    )
    _error(response, 406)


def test_create_provider_returns_body_with_links(client: TestClient) -> None:
    rp = str(uuid.uuid4())
    response = client.post(
        "/placement/resource_providers", json={"name": "cn1", "uuid": rp}, headers=H
    )
    assert response.status_code == 200
    assert response.headers["location"].endswith(f"/resource_providers/{rp}")
    body = response.json()
    assert body["uuid"] == rp
    assert body["generation"] == 0
    assert body["root_provider_uuid"] == rp
    assert body["parent_provider_uuid"] is None
    assert {link["rel"] for link in body["links"]} >= {"self", "inventories", "usages", "traits"}
    assert client.get(f"/placement/resource_providers/{rp}", headers=H).json()["name"] == "cn1"


def test_create_provider_before_1_20_answers_201_without_body(client: TestClient) -> None:
    response = client.post(
        "/placement/resource_providers",
        json={"name": "old"},
        headers={"OpenStack-API-Version": "placement 1.10"},
    )
    assert response.status_code == 201
    assert response.content == b""
    assert "location" in response.headers


def test_duplicate_provider_name_conflicts(client: TestClient) -> None:
    _provider(client, "cn1")
    response = client.post("/placement/resource_providers", json={"name": "cn1"}, headers=H)
    _error(response, 409, "placement.duplicate_name")


def test_bad_provider_body_is_400(client: TestClient) -> None:
    response = client.post("/placement/resource_providers", json={"nom": "x"}, headers=H)
    _error(response, 400)


def test_missing_provider_is_404_in_placement_format(client: TestClient) -> None:
    response = client.get(f"/placement/resource_providers/{uuid.uuid4()}", headers=H)
    _error(response, 404)
    response = client.get("/placement/no_such_thing", headers=H)
    _error(response, 404)


def test_inventories_round_trip_with_defaults(client: TestClient) -> None:
    rp = _provider(client, "cn1", VCPU=8)
    body = client.get(f"/placement/resource_providers/{rp}/inventories", headers=H).json()
    assert body == {
        "inventories": {
            "VCPU": {
                "allocation_ratio": 1.0,
                "max_unit": 2147483647,
                "min_unit": 1,
                "reserved": 0,
                "step_size": 1,
                "total": 8,
            }
        },
        "resource_provider_generation": 1,
    }


def test_stale_inventory_generation_is_409_concurrent_update(client: TestClient) -> None:
    rp = _provider(client, "cn1", VCPU=8)
    response = client.put(
        f"/placement/resource_providers/{rp}/inventories",
        json={"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 4}}},
        headers=H,
    )
    _error(response, 409, "placement.concurrent_update")
    body = client.get(f"/placement/resource_providers/{rp}/inventories", headers=H).json()
    assert body["inventories"]["VCPU"]["total"] == 8


def test_removing_inventory_in_use_is_409_inuse(client: TestClient) -> None:
    rp = _provider(client, "cn1", VCPU=8, DISK_GB=10)
    assert _allocate(client, str(uuid.uuid4()), rp, DISK_GB=1).status_code == 204
    response = client.put(
        f"/placement/resource_providers/{rp}/inventories",
        json={"resource_provider_generation": 2, "inventories": {"VCPU": {"total": 8}}},
        headers=H,
    )
    _error(response, 409, "placement.inventory.inuse")


def test_traits_put_and_get(client: TestClient) -> None:
    rp = _provider(client, "cn1")
    assert client.put("/placement/traits/CUSTOM_GOLD", headers=H).status_code == 201
    assert client.put("/placement/traits/CUSTOM_GOLD", headers=H).status_code == 204
    _error(client.put("/placement/traits/GOLD", headers=H), 400)
    response = client.put(
        f"/placement/resource_providers/{rp}/traits",
        json={"traits": ["CUSTOM_GOLD", "HW_ARCH_X86_64"], "resource_provider_generation": 0},
        headers=H,
    )
    assert response.status_code == 200
    assert response.json() == {
        "traits": ["CUSTOM_GOLD", "HW_ARCH_X86_64"],
        "resource_provider_generation": 1,
    }
    stale = client.put(
        f"/placement/resource_providers/{rp}/traits",
        json={"traits": [], "resource_provider_generation": 0},
        headers=H,
    )
    _error(stale, 409, "placement.concurrent_update")
    unknown = client.put(
        f"/placement/resource_providers/{rp}/traits",
        json={"traits": ["CUSTOM_NOPE"], "resource_provider_generation": 1},
        headers=H,
    )
    _error(unknown, 400)
    listed = client.get("/placement/traits?name=startswith:CUSTOM_", headers=H).json()
    assert listed == {"traits": ["CUSTOM_GOLD"]}
    assert "HW_ARCH_X86_64" in client.get("/placement/traits", headers=H).json()["traits"]


def test_allocations_lifecycle(client: TestClient) -> None:
    rp = _provider(client, "cn1", VCPU=8, MEMORY_MB=1024)
    consumer = str(uuid.uuid4())
    assert client.get(f"/placement/allocations/{consumer}", headers=H).json() == {"allocations": {}}
    assert _allocate(client, consumer, rp, VCPU=2, MEMORY_MB=512).status_code == 204
    body = client.get(f"/placement/allocations/{consumer}", headers=H).json()
    assert body == {
        "allocations": {rp: {"generation": 2, "resources": {"VCPU": 2, "MEMORY_MB": 512}}},
        "project_id": "proj",
        "user_id": "user",
        "consumer_generation": 1,
        "consumer_type": "INSTANCE",
    }
    usages = client.get(f"/placement/resource_providers/{rp}/usages", headers=H).json()
    assert usages == {"usages": {"MEMORY_MB": 512, "VCPU": 2}, "resource_provider_generation": 2}
    _error(_allocate(client, consumer, rp, None, VCPU=1), 409, "placement.concurrent_update")
    assert _allocate(client, consumer, rp, 1, VCPU=1).status_code == 204
    assert client.delete(f"/placement/allocations/{consumer}", headers=H).status_code == 204
    _error(client.delete(f"/placement/allocations/{consumer}", headers=H), 404)


def test_allocation_over_capacity_is_409_and_on_missing_provider_400(client: TestClient) -> None:
    rp = _provider(client, "cn1", VCPU=2)
    error = _error(_allocate(client, str(uuid.uuid4()), rp, VCPU=3), 409)
    assert error["code"] == "placement.undefined_code"
    _error(_allocate(client, str(uuid.uuid4()), str(uuid.uuid4()), VCPU=1), 400)
    _error(_allocate(client, "not-a-uuid", rp, VCPU=1), 400)


def test_allocations_at_1_38_need_consumer_type(client: TestClient) -> None:
    rp = _provider(client, "cn1", VCPU=2)
    response = client.put(
        f"/placement/allocations/{uuid.uuid4()}",
        json={
            "allocations": {rp: {"resources": {"VCPU": 1}}},
            "project_id": "p",
            "user_id": "u",
            "consumer_generation": None,
        },
        headers=H,
    )
    _error(response, 400)


def test_provider_with_allocations_cannot_be_deleted(client: TestClient) -> None:
    rp = _provider(client, "cn1", VCPU=2)
    consumer = str(uuid.uuid4())
    _allocate(client, consumer, rp, VCPU=1)
    _error(
        client.delete(f"/placement/resource_providers/{rp}", headers=H),
        409,
        "placement.resource_provider.inuse",
    )
    client.delete(f"/placement/allocations/{consumer}", headers=H)
    assert client.delete(f"/placement/resource_providers/{rp}", headers=H).status_code == 204
    _error(client.get(f"/placement/resource_providers/{rp}", headers=H), 404)


def test_allocation_candidates_body(client: TestClient) -> None:
    rp1 = _provider(client, "cn1", VCPU=4, MEMORY_MB=2048)
    rp2 = _provider(client, "cn2", VCPU=4, MEMORY_MB=2048)
    client.put(
        f"/placement/resource_providers/{rp2}/traits",
        json={"traits": ["HW_ARCH_X86_64"], "resource_provider_generation": 1},
        headers=H,
    )
    _allocate(client, str(uuid.uuid4()), rp1, VCPU=1)
    body = client.get(
        "/placement/allocation_candidates?resources=VCPU:2,MEMORY_MB:512", headers=H
    ).json()
    assert sorted(next(iter(r["allocations"])) for r in body["allocation_requests"]) == sorted(
        [rp1, rp2]
    )
    request = next(r for r in body["allocation_requests"] if rp1 in r["allocations"])
    assert request == {
        "allocations": {rp1: {"resources": {"VCPU": 2, "MEMORY_MB": 512}}},
        "mappings": {"": [rp1]},
    }
    assert body["provider_summaries"][rp1] == {
        "resources": {
            "VCPU": {"capacity": 4, "used": 1},
            "MEMORY_MB": {"capacity": 2048, "used": 0},
        },
        "traits": [],
        "parent_provider_uuid": None,
        "root_provider_uuid": rp1,
    }
    required = client.get(
        "/placement/allocation_candidates?resources=VCPU:1&required=HW_ARCH_X86_64", headers=H
    ).json()
    assert list(required["provider_summaries"]) == [rp2]
    forbidden = client.get(
        "/placement/allocation_candidates?resources=VCPU:1&required=!HW_ARCH_X86_64", headers=H
    ).json()
    assert list(forbidden["provider_summaries"]) == [rp1]
    any_of = client.get(
        "/placement/allocation_candidates?resources=VCPU:1&required=in:HW_ARCH_X86_64,"
        "HW_ARCH_AARCH64",
        headers=H,
    ).json()
    assert list(any_of["provider_summaries"]) == [rp2]
    limited = client.get(
        "/placement/allocation_candidates?resources=VCPU:1&limit=1", headers=H
    ).json()
    assert len(limited["allocation_requests"]) == 1
    assert len(limited["provider_summaries"]) == 1


def test_allocation_candidates_bad_queries_are_400(client: TestClient) -> None:
    _error(client.get("/placement/allocation_candidates", headers=H), 400)
    _error(client.get("/placement/allocation_candidates?resources=VCPU", headers=H), 400)
    _error(
        client.get("/placement/allocation_candidates?resources=VCPU:1&required=NOPE", headers=H),
        400,
    )
    _error(client.get("/placement/allocation_candidates?resources=VCPU:1&limit=0", headers=H), 400)
    _error(
        client.get("/placement/allocation_candidates?resources=VCPU:1&resources=VCPU:2", headers=H),
        400,
        "placement.query.duplicate_key",
    )
    _error(client.get("/placement/allocation_candidates?resources.1=VCPU:1", headers=H), 400)


def test_no_candidates_is_an_empty_200(client: TestClient) -> None:
    _provider(client, "cn1", VCPU=1)
    response = client.get("/placement/allocation_candidates?resources=VCPU:2", headers=H)
    assert response.status_code == 200
    assert response.json() == {"allocation_requests": [], "provider_summaries": {}}


def test_resource_providers_filter_by_resources_and_required(client: TestClient) -> None:
    rp1 = _provider(client, "cn1", VCPU=1)
    _provider(client, "cn2", VCPU=8)
    body = client.get("/placement/resource_providers?resources=VCPU:2", headers=H).json()
    assert [p["name"] for p in body["resource_providers"]] == ["cn2"]
    body = client.get(f"/placement/resource_providers?uuid={rp1}", headers=H).json()
    assert [p["name"] for p in body["resource_providers"]] == ["cn1"]


def test_custom_resource_class_via_api(client: TestClient) -> None:
    assert client.put("/placement/resource_classes/CUSTOM_FPGA", headers=H).status_code == 201
    assert client.put("/placement/resource_classes/CUSTOM_FPGA", headers=H).status_code == 204
    rp = _provider(client, "cn1", CUSTOM_FPGA=2)
    body = client.get("/placement/allocation_candidates?resources=CUSTOM_FPGA:2", headers=H)
    assert list(body.json()["provider_summaries"]) == [rp]


def test_non_json_body_is_415(client: TestClient) -> None:
    response = client.post(
        "/placement/resource_providers",
        content=b"name=x",
        headers={**H, "Content-Type": "application/x-www-form-urlencoded"},
    )
    _error(response, 415)


def test_single_inventory_show_update_delete(client: TestClient) -> None:
    rp = _provider(client, "cn1", VCPU=8, DISK_GB=100)
    shown = client.get(f"/placement/resource_providers/{rp}/inventories/VCPU", headers=H)
    assert shown.json()["total"] == 8
    assert shown.json()["resource_provider_generation"] == 1
    updated = client.put(
        f"/placement/resource_providers/{rp}/inventories/VCPU",
        json={"resource_provider_generation": 1, "total": 16, "allocation_ratio": 2.0},
        headers=H,
    )
    assert updated.status_code == 200
    assert updated.json()["total"] == 16
    assert updated.json()["resource_provider_generation"] == 2
    stale = client.put(
        f"/placement/resource_providers/{rp}/inventories/VCPU",
        json={"resource_provider_generation": 1, "total": 4},
        headers=H,
    )
    _error(stale, 409, "placement.concurrent_update")
    assert (
        client.delete(
            f"/placement/resource_providers/{rp}/inventories/DISK_GB", headers=H
        ).status_code
        == 204
    )
    _error(client.get(f"/placement/resource_providers/{rp}/inventories/DISK_GB", headers=H), 404)


def test_provider_allocations_list_consumers(client: TestClient) -> None:
    rp = _provider(client, "cn1", VCPU=8)
    consumer = str(uuid.uuid4())
    _allocate(client, consumer, rp, VCPU=3)
    body = client.get(f"/placement/resource_providers/{rp}/allocations", headers=H).json()
    assert body == {
        "allocations": {consumer: {"resources": {"VCPU": 3}, "consumer_generation": 1}},
        "resource_provider_generation": 2,
    }


def test_placement_dependencies_guard_every_placement_route(
    placement: Placement, tmp_path: Path
) -> None:
    from fastapi import Depends, Header, HTTPException

    def admin_only(x_auth_token: str | None = Header(default=None)) -> None:
        if x_auth_token != "admin":
            raise HTTPException(status_code=403, detail="admin token required")

    app = create_app(
        Settings(data_dir=tmp_path),
        placement=placement,
        placement_dependencies=[Depends(admin_only)],
    )
    with TestClient(app) as guarded:
        _error(guarded.get("/placement/resource_providers", headers=H), 403)
        ok = guarded.get("/placement/resource_providers", headers={**H, "X-Auth-Token": "admin"})
        assert ok.status_code == 200


def test_app_without_a_service_migrates_its_own_sqlite_store(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    with TestClient(app) as fresh:
        assert fresh.get("/placement/resource_providers", headers=H).json() == {
            "resource_providers": []
        }
    assert (tmp_path / "data" / "wattvisor.db").exists()


def test_app_without_a_service_closes_its_store_when_it_shuts_down(tmp_path: Path) -> None:
    for _round in range(3):
        with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as app:
            assert app.get("/placement/resource_providers", headers=H).status_code == 200
    store_files = [t for _fd, t in open_descriptors() if t.startswith(str(tmp_path))]
    assert store_files == []


def test_custom_names_over_255_characters_are_a_400_and_nothing_is_created(
    client: TestClient,
) -> None:
    too_long = "CUSTOM_" + "X" * 300
    for path in ("traits", "resource_classes"):
        error = _error(client.put(f"/placement/{path}/{too_long}", headers=H), 400)
        assert "307 characters" in error["detail"] and "at most 255" in error["detail"]
        assert client.get(f"/placement/{path}/{too_long}", headers=H).status_code == 404
    assert client.put(f"/placement/traits/CUSTOM_{'X' * 248}", headers=H).status_code == 201


def test_consumer_strings_longer_than_the_columns_are_a_400(client: TestClient) -> None:
    rp = _provider(client, "cn1", VCPU=4)
    consumer = str(uuid.uuid4())
    body = {
        "allocations": {rp: {"resources": {"VCPU": 1}}},
        "project_id": "p",
        "user_id": "u",
        "consumer_generation": None,
        "consumer_type": "INSTANCE",
    }
    for key, value, rule in (
        ("project_id", "p" * 256, "1-255 characters"),
        ("consumer_type", "A" * 256, "at most 255 characters"),
    ):
        response = client.put(
            f"/placement/allocations/{consumer}", json={**body, key: value}, headers=H
        )
        detail = _error(response, 400)["detail"]
        assert key in detail and rule in detail and "(256 characters)" in detail
    assert client.get(f"/placement/allocations/{consumer}", headers=H).json()["allocations"] == {}


def test_custom_trait_delete_rules(client: TestClient) -> None:
    rp = _provider(client, "cn1")
    client.put("/placement/traits/CUSTOM_GOLD", headers=H)
    client.put(
        f"/placement/resource_providers/{rp}/traits",
        json={"traits": ["CUSTOM_GOLD"], "resource_provider_generation": 0},
        headers=H,
    )
    _error(client.delete("/placement/traits/CUSTOM_GOLD", headers=H), 409)
    _error(client.delete("/placement/traits/HW_ARCH_X86_64", headers=H), 400)
    _error(client.delete("/placement/traits/CUSTOM_NOPE", headers=H), 404)
    client.delete(f"/placement/resource_providers/{rp}/traits", headers=H)
    assert client.delete("/placement/traits/CUSTOM_GOLD", headers=H).status_code == 204
    assert client.get("/placement/traits/CUSTOM_GOLD", headers=H).status_code == 404


def test_custom_resource_class_show_and_delete_rules(client: TestClient) -> None:
    client.put("/placement/resource_classes/CUSTOM_FPGA", headers=H)
    shown = client.get("/placement/resource_classes/CUSTOM_FPGA", headers=H)
    assert shown.json()["name"] == "CUSTOM_FPGA"
    rp = _provider(client, "cn1", CUSTOM_FPGA=1)
    _error(client.delete("/placement/resource_classes/CUSTOM_FPGA", headers=H), 409)
    _error(client.delete("/placement/resource_classes/VCPU", headers=H), 400)
    client.delete(f"/placement/resource_providers/{rp}/inventories", headers=H)
    assert client.delete("/placement/resource_classes/CUSTOM_FPGA", headers=H).status_code == 204
    _error(client.get("/placement/resource_classes/CUSTOM_FPGA", headers=H), 404)


def test_post_allocations_moves_a_claim_atomically(client: TestClient) -> None:
    source = _provider(client, "src", VCPU=2)
    target = _provider(client, "dst", VCPU=2)
    instance = str(uuid.uuid4())
    migration = str(uuid.uuid4())
    assert _allocate(client, instance, source, VCPU=2).status_code == 204
    body = {
        instance: {
            "allocations": {target: {"resources": {"VCPU": 2}}},
            "project_id": "proj",
            "user_id": "user",
            "consumer_generation": 1,
            "consumer_type": "INSTANCE",
        },
        migration: {
            "allocations": {source: {"resources": {"VCPU": 2}}},
            "project_id": "proj",
            "user_id": "user",
            "consumer_generation": None,
            "consumer_type": "MIGRATION",
        },
    }
    response = client.post("/placement/allocations", json=body, headers=H)
    assert response.status_code == 204, response.text
    held = client.get(f"/placement/allocations/{instance}", headers=H).json()
    assert list(held["allocations"]) == [target]
    assert held["consumer_generation"] == 2
    moved = client.get(f"/placement/allocations/{migration}", headers=H).json()
    assert moved["consumer_type"] == "MIGRATION"
    stale = client.post("/placement/allocations", json=body, headers=H)
    _error(stale, 409, "placement.concurrent_update")


def test_openapi_document_lists_the_placement_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/placement/allocation_candidates" in paths
    assert "/placement/resource_providers/{uuid}/inventories" in paths


def test_bodies_are_validated_by_the_models_in_placements_words(client: TestClient) -> None:
    rp = _provider(client, "validated")
    response = client.put(
        f"/placement/resource_providers/{rp}/inventories",
        json={"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 0}}},
        headers=H,
    )
    detail = _error(response, 400)["detail"]
    assert detail.startswith("JSON does not validate: 0 is less than the minimum of 1")
    assert "['inventories']['properties']['VCPU']['properties']['total']" in detail
    response = client.post(
        "/placement/resource_providers", json={"name": "x", "colour": "red"}, headers=H
    )
    assert (
        "Additional properties are not allowed ('colour' was unexpected)"
        in (_error(response, 400)["detail"])
    )
    # parent_provider_uuid only exists from 1.14.
    response = client.post(
        "/placement/resource_providers",
        json={"name": "old", "parent_provider_uuid": rp},
        headers={"OpenStack-API-Version": "placement 1.13"},
    )
    assert "'parent_provider_uuid' was unexpected" in _error(response, 400)["detail"]
    # Nothing was written by the refused requests.
    listed = client.get("/placement/resource_providers", headers=H).json()
    assert [p["name"] for p in listed["resource_providers"]] == ["validated"]


def test_the_openapi_document_describes_placement_bodies(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    put = paths["/placement/resource_providers/{uuid}/inventories"]["put"]
    schema = put["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["inventories", "resource_provider_generation"]
    assert (
        schema["properties"]["inventories"]["additionalProperties"]["properties"]["total"][
            "minimum"
        ]
        == 1
    )


def test_links_carry_the_root_path_of_a_proxy(placement: Placement, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), placement=placement)
    with TestClient(app, root_path="/cloud") as proxied:
        response = proxied.post(
            "/placement/resource_providers", json={"name": "behind-proxy"}, headers=H
        )
        assert response.status_code == 200, response.text
        rp = response.json()["uuid"]
        # Location is absolute, as Placement sends it; the proxy's prefix is in it.
        assert response.headers["location"] == (
            f"http://testserver/cloud/placement/resource_providers/{rp}"
        )
        self_link = [x for x in response.json()["links"] if x["rel"] == "self"]
        assert self_link == [{"rel": "self", "href": f"/cloud/placement/resource_providers/{rp}"}]


def test_cors_answers_only_the_configured_origins(placement: Placement, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api={"cors_allowed_origins": ["http://ok.example"]})
    with TestClient(create_app(settings, placement=placement)) as cors_client:
        preflight = {"access-control-request-method": "GET"}
        ok = cors_client.options(
            "/placement/", headers={"origin": "http://ok.example", **preflight}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "http://ok.example"
        bad = cors_client.get("/placement/", headers={"origin": "http://bad.example"})
        assert bad.status_code == 200
        assert "access-control-allow-origin" not in bad.headers
    with TestClient(create_app(Settings(data_dir=tmp_path), placement=placement)) as plain:
        response = plain.get("/placement/", headers={"origin": "http://ok.example"})
        assert "access-control-allow-origin" not in response.headers


def test_allocations_written_before_1_38_have_the_unknown_consumer_type(
    client: TestClient,
) -> None:
    rp = _provider(client, "typed", VCPU=4)
    consumer = str(uuid.uuid4())
    response = client.put(
        f"/placement/allocations/{consumer}",
        json={
            "allocations": {rp: {"resources": {"VCPU": 1}}},
            "project_id": "proj",
            "user_id": "user",
            "consumer_generation": None,
        },
        headers={"OpenStack-API-Version": "placement 1.37"},
    )
    assert response.status_code == 204, response.text
    held = client.get(f"/placement/allocations/{consumer}", headers=H).json()
    assert held["consumer_type"] == "unknown"
    # A later write at 1.37 keeps a type once one was named.
    typed = str(uuid.uuid4())
    assert _allocate(client, typed, rp, VCPU=1).status_code == 204
    generation = client.get(f"/placement/allocations/{typed}", headers=H).json()[
        "consumer_generation"
    ]
    response = client.put(
        f"/placement/allocations/{typed}",
        json={
            "allocations": {rp: {"resources": {"VCPU": 2}}},
            "project_id": "proj",
            "user_id": "user",
            "consumer_generation": generation,
        },
        headers={"OpenStack-API-Version": "placement 1.37"},
    )
    assert response.status_code == 204, response.text
    held = client.get(f"/placement/allocations/{typed}", headers=H).json()
    assert held["consumer_type"] == "INSTANCE"
    usages = client.get("/placement/usages", params={"project_id": "proj"}, headers=H).json()[
        "usages"
    ]
    assert usages["unknown"] == {"consumer_count": 1, "VCPU": 1}
