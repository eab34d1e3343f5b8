"""POST /v1/servers with a boot volume, and a flavor disk too small for the image, over HTTP."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from api.v1_world import V1World


def test_boot_volume_is_taken_by_the_server_and_freed_when_it_is_deleted(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    volume = world.client.post(
        "/v1/volumes", json={"name": "root", "size_gb": 1}, headers=alice
    ).json()
    created = world.client.post(
        "/v1/servers",
        json={"name": "vol", "flavor": "tiny", "image": "kernel", "boot_volume": "root"},
        headers=alice,
    )
    assert created.status_code == 202, created.text
    server = world.wait_server(created.json()["id"], alice)
    assert server["status"] == "ACTIVE" and server["boot_volume_id"] == volume["id"]
    shown = world.client.get(f"/v1/volumes/{volume['id']}", headers=alice).json()
    assert shown["status"] == "in-use"
    assert world.client.delete(f"/v1/volumes/{volume['id']}", headers=alice).status_code == 409
    assert world.client.delete(f"/v1/servers/{server['id']}", headers=alice).status_code == 202
    world.wait_server(server["id"], alice)
    freed = world.client.get(f"/v1/volumes/{volume['id']}", headers=alice).json()
    assert freed["status"] == "available"


def test_bad_boot_volumes_are_4xx_naming_the_volume_and_create_nothing(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    bob = world.member("bob", "proj-b")
    bobs = world.client.post("/v1/volumes", json={"name": "b", "size_gb": 1}, headers=bob).json()
    taken = world.client.post("/v1/volumes", json={"name": "t", "size_gb": 1}, headers=alice)
    body = {"name": "x", "flavor": "tiny", "image": "kernel"}
    holder = world.client.post(
        "/v1/servers", json={**body, "boot_volume": taken.json()["id"]}, headers=alice
    ).json()
    cases = {"nope": 404, bobs["id"]: 404, taken.json()["id"]: 409}
    for ident, status in cases.items():
        answer = world.client.post("/v1/servers", json={**body, "boot_volume": ident},
                                   headers=alice)  # fmt: skip
        assert answer.status_code == status, (ident, answer.text)
        assert ident in answer.json()["error"]["message"]
    servers = world.client.get("/v1/servers", headers=alice).json()
    assert [s["id"] for s in servers] == [holder["id"]]


def test_flavor_disk_smaller_than_the_image_is_400_without_host_paths(
    world: V1World, tmp_path: Path
) -> None:
    alice = world.member("alice", "proj-a")
    disk = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "2G"], check=True)
    made = world.client.post(
        "/v1/images", json={"name": "big", "disk_path": str(disk), "disk_format": "qcow2"},
        headers=world.admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    answer = world.client.post(
        "/v1/servers", json={"name": "x", "flavor": "tiny", "image": "big"}, headers=alice
    )
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert "flavor disk 1 GiB" in message and ">= 2 GiB" in message
    assert str(tmp_path) not in json.dumps(answer.json())
    assert world.client.get("/v1/servers", headers=alice).json() == []
