"""Host geolocation over the real API: what joining and heartbeats give, what an admin
sets with PATCH /v1/hosts/{id} (checked, kept, cleared), and that members see none of it."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from biscuit_auth import KeyPair
from fastapi.testclient import TestClient

from api.v1_world import Headers, V1World
from support.geo_databases import LINKOPING_V4, LONDON_V4, TOKYO_V6, pair, write_geo_database
from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token_from_file
from wattvisor.auth.service_tokens import mint_host_token
from wattvisor.config import load_settings


@pytest.fixture
def geo_world(tmp_path: Path) -> Iterator[V1World]:
    settings = load_settings(
        data_dir=tmp_path / "data",
        host={"libvirt_uri": "test:///default", "virt_type": "qemu",
              "instance_name_template": f"wvgeo-{secrets.token_hex(4)}-%04x"},
        energy={"source": "model", "interval_s": 0.5},
        compute={"ready_image": False, "workers": 1},
        geo={"database": str(write_geo_database(tmp_path / "city.mmdb"))},
    )  # fmt: skip
    node = AllInOne.build(settings)
    token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
    client = TestClient(node.app, raise_server_exceptions=False)
    try:
        yield V1World(node, client, {"Authorization": f"Bearer {token}"}, tmp_path / "unused")
    finally:
        client.close()
        node.stop()


def join(world: V1World, ip_addresses: list[str]) -> tuple[str, KeyPair]:
    issued = world.client.post("/v1/hosts/join-tokens", json={"ttl": "1h"}, headers=world.admin)
    assert issued.status_code == 201, issued.text
    keys = KeyPair()
    body = {
        "id": str(uuid.uuid4()), "name": f"edge-{secrets.token_hex(3)}",
        "libvirt_uri": "qemu:///system", "traits": [],
        "inventory": {"VCPU": 4, "MEMORY_MB": 4096, "DISK_GB": 20}, "energy_source": "rapl",
        "addresses": ["http://198.18.0.2:8775"], "public_key": repr(keys.public_key),
        "ip_addresses": ip_addresses,
    }  # fmt: skip
    response = world.client.post(
        "/v1/hosts/join", json=body, headers={"Authorization": f"Bearer {issued.json()['token']}"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["geolocation"] is not None
    return body["id"], keys


def host(world: V1World, host_id: str) -> dict[str, Any]:
    response = world.client.get(f"/v1/hosts/{host_id}", headers=world.admin)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def place(view: dict[str, Any]) -> tuple[list[str], str | None, str | None]:
    return view["geolocation"], view["geolocation_source"], view["geolocation_reason"]


def heartbeat(world: V1World, host_id: str, keys: KeyPair, addresses: list[str]) -> Any:
    token = mint_host_token(keys.private_key, host_id)
    response = world.client.post(
        f"/v1/hosts/{host_id}/heartbeat",
        json={"ip_addresses": addresses},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def patch(world: V1World, host_id: str, body: Any, headers: Headers | None = None) -> Any:
    return world.client.patch(f"/v1/hosts/{host_id}", json=body, headers=headers or world.admin)


def test_a_joined_host_shows_its_looked_up_pairs(geo_world: V1World) -> None:
    host_id, _ = join(geo_world, ["10.1.1.1", "81.2.69.142", "2001:218::3", "198.18.0.2"])
    assert place(host(geo_world, host_id)) == ([pair(LONDON_V4), pair(TOKYO_V6)], "lookup", None)
    listed = geo_world.client.get("/v1/hosts", headers=geo_world.admin).json()
    assert [h["geolocation"] for h in listed if h["id"] == host_id] == [
        [pair(LONDON_V4), pair(TOKYO_V6)]
    ]


def test_a_heartbeat_with_changed_addresses_refreshes_them(geo_world: V1World) -> None:
    host_id, keys = join(geo_world, ["81.2.69.142"])
    answer = heartbeat(geo_world, host_id, keys, ["89.160.20.1", "10.0.0.3"])
    assert answer["geolocation"] == [pair(LINKOPING_V4)]
    assert place(host(geo_world, host_id)) == ([pair(LINKOPING_V4)], "lookup", None)


def test_an_admin_pair_is_kept_until_null_returns_to_the_lookup(geo_world: V1World) -> None:
    host_id, keys = join(geo_world, ["81.2.69.142"])
    response = patch(geo_world, host_id, {"geolocation": ["48.8566,2.3522", "-33.87,151.21"]})
    assert response.status_code == 200, response.text
    pinned = (["48.8566,2.3522", "-33.87,151.21"], "admin", None)
    assert place(response.json()) == pinned
    heartbeat(geo_world, host_id, keys, ["89.160.20.1"])
    assert place(host(geo_world, host_id)) == pinned
    cleared = patch(geo_world, host_id, {"geolocation": None})
    assert cleared.status_code == 200, cleared.text
    assert place(cleared.json()) == ([pair(LINKOPING_V4)], "lookup", None)


def test_an_empty_admin_list_pins_no_location(geo_world: V1World) -> None:
    host_id, keys = join(geo_world, ["81.2.69.142"])
    assert place(patch(geo_world, host_id, {"geolocation": []}).json()) == ([], "admin", None)
    heartbeat(geo_world, host_id, keys, ["89.160.20.1"])
    assert host(geo_world, host_id)["geolocation"] == []


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("91,10", "latitude 91 is not accepted"),
        ("-90.5,10", "latitude -90.5 is not accepted"),
        ("10,180.5", "longitude 180.5 is not accepted"),
        ("10,-181", "longitude -181 is not accepted"),
        ("abc,10", "latitude 'abc' is not a number"),
        ("10,1e999", "longitude inf is not accepted"),
        ("10;20", "two numbers, one comma"),
        (42, "give a text 'latitude,longitude'"),
        ([10, 20], "give a text 'latitude,longitude'"),
    ],
)
def test_a_bad_pair_is_refused_naming_it_and_changes_nothing(
    geo_world: V1World, value: Any, words: str
) -> None:
    host_id, _ = join(geo_world, ["81.2.69.142"])
    before = host(geo_world, host_id)
    response = patch(geo_world, host_id, {"geolocation": ["1,2", value]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert words in error["message"]
    assert repr(value) in error["message"] or str(value) in error["message"]
    assert host(geo_world, host_id) == before


def test_a_patch_without_geolocation_or_with_other_fields_is_refused(geo_world: V1World) -> None:
    host_id, _ = join(geo_world, ["81.2.69.142"])
    empty = patch(geo_world, host_id, {})
    assert empty.status_code == 400 and "geolocation" in empty.json()["error"]["message"]
    other = patch(geo_world, host_id, {"name": "renamed"})
    assert other.status_code in (400, 422)
    assert host(geo_world, host_id)["geolocation_source"] == "lookup"


def test_patching_an_unknown_host_is_not_found(geo_world: V1World) -> None:
    missing = str(uuid.uuid4())
    response = patch(geo_world, missing, {"geolocation": ["1,2"]})
    assert response.status_code == 404
    assert missing in response.json()["error"]["message"]


def test_members_can_neither_see_nor_set_a_hosts_geolocation(geo_world: V1World) -> None:
    host_id, _ = join(geo_world, ["81.2.69.142"])
    member = geo_world.member("alice", "proj-a")
    assert geo_world.client.get(f"/v1/hosts/{host_id}", headers=member).status_code == 403
    assert geo_world.client.get("/v1/hosts", headers=member).status_code == 403
    refused = patch(geo_world, host_id, {"geolocation": ["1,2"]}, headers=member)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_required"
    assert place(host(geo_world, host_id)) == ([pair(LONDON_V4)], "lookup", None)


def test_a_host_token_cannot_set_its_own_geolocation(geo_world: V1World) -> None:
    host_id, keys = join(geo_world, ["81.2.69.142"])
    token = mint_host_token(keys.private_key, host_id)
    response = patch(
        geo_world, host_id, {"geolocation": ["1,2"]}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403
    assert host(geo_world, host_id)["geolocation_source"] == "lookup"


def test_the_local_host_says_why_its_geolocation_is_what_it_is(geo_world: V1World) -> None:
    local = host(geo_world, geo_world.node.provider_uuid)
    assert local["geolocation_source"] == "lookup"
    assert bool(local["geolocation"]) != bool(local["geolocation_reason"])
