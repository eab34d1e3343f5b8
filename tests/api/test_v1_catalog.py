"""Flavors and images over /v1, and what `wattvisor up` offers from the start."""

from __future__ import annotations

import json

from api.v1_world import V1World
from wattvisor.allinone import AllInOne


def test_default_flavors_exist_once_across_restarts(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    flavors = world.client.get("/v1/flavors", headers=alice).json()
    assert [(f["name"], f["vcpus"], f["ram_mb"]) for f in flavors] == [
        ("small", 1, 512),
        ("tiny", 1, 256),
    ]
    again = AllInOne.build(world.node.settings)
    try:
        assert [f.name for f in again.compute.catalog.flavors()] == ["small", "tiny"]
    finally:
        again.stop()


def test_ready_image_boots_the_metrics_scenario_and_hides_its_paths(world: V1World) -> None:
    assert "switched off" in world.node.ensure_ready_image()  # compute.ready_image = false
    image, message = world.node.compute.ensure_ready_image()
    assert "busybox" in message
    if image is None:  # the guest image cannot be built on this machine
        assert "busybox" not in json.dumps(
            world.client.get("/v1/images", headers=world.admin).json()
        )
        return
    alice = world.member("alice", "proj-a")
    images = {i["name"]: i for i in world.client.get("/v1/images", headers=alice).json()}
    busybox = images["busybox"]
    assert busybox["boot"] == "kernel" and "wv.scenario=metrics" in busybox["cmdline"]
    assert "kernel_path" not in busybox and "initrd_path" not in busybox
    admin_view = world.client.get(f"/v1/images/{busybox['id']}", headers=world.admin).json()
    assert admin_view["kernel_path"].endswith("vmlinuz")
    assert world.node.compute.ensure_ready_image()[0] == image  # idempotent
    assert len(world.client.get("/v1/images", headers=alice).json()) == len(images)


def test_flavor_crud_by_admin(world: V1World) -> None:
    made = world.client.post(
        "/v1/flavors",
        json={"name": "metered", "vcpus": 2, "ram_mb": 1024, "disk_gb": 5,
              "extra_specs": {"hw:power_metrics": "true"}},
        headers=world.admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    flavor = made.json()
    assert world.client.get(f"/v1/flavors/{flavor['id']}", headers=world.admin).json() == flavor
    assert world.client.get("/v1/flavors/metered", headers=world.admin).json() == flavor
    duplicate = world.client.post(
        "/v1/flavors", json={"name": "metered", "vcpus": 1, "ram_mb": 64}, headers=world.admin
    )
    assert duplicate.status_code == 409
    assert world.client.delete("/v1/flavors/metered", headers=world.admin).status_code == 204
    assert world.client.get("/v1/flavors/metered", headers=world.admin).status_code == 404


def test_image_with_a_bad_property_is_refused(world: V1World) -> None:
    response = world.client.post(
        "/v1/images",
        json={"name": "odd", "kernel_path": str(world.kernel),
              "properties": {"hw_disk_bus": "floppy-ish"}},
        headers=world.admin,
    )  # fmt: skip
    assert response.status_code == 400
    error = response.json()["error"]
    assert "floppy-ish" in error["message"] and "virtio" in error["message"]
    assert world.client.get("/v1/images/odd", headers=world.admin).status_code == 404
