"""Image properties follow the key and length rules of flavor extra specs: they are
shown to every member, so a key of any length or a value of kilobytes is refused when
the image is saved, naming the rule, and no image is made."""

from __future__ import annotations

import pytest

from api.v1_world import V1World


@pytest.mark.parametrize(
    ("properties", "accepted"),
    [
        ({"k" * 300: "v"}, "keys of 1-255 characters"),
        ({"bad/key": "v"}, "keys of 1-255 characters"),
        ({"os_distro": "v" * 5000}, "values of at most 255 characters"),
    ],
)
def test_image_properties_outside_the_rules_are_refused(
    world: V1World, properties: dict[str, str], accepted: str
) -> None:
    response = world.client.post(
        "/v1/images",
        json={"name": "odd", "kernel_path": str(world.kernel), "properties": properties},
        headers=world.admin,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert accepted in error["message"]
    assert len(error["message"]) < 1000
    names = [i["name"] for i in world.client.get("/v1/images", headers=world.admin).json()]
    assert "odd" not in names


def test_image_properties_within_the_rules_are_kept(world: V1World) -> None:
    properties = {"os_distro": "alpine", "hw_vif_model": "virtio", "trait:CUSTOM_X": "required"}
    response = world.client.post(
        "/v1/images",
        json={"name": "fine", "kernel_path": str(world.kernel), "properties": properties},
        headers=world.admin,
    )
    assert response.status_code == 201, response.text
    assert response.json()["properties"] == properties


def test_image_with_a_misspelt_hw_property_is_refused_with_the_nearest_name(
    world: V1World,
) -> None:
    response = world.client.post(
        "/v1/images",
        json={
            "name": "typo",
            "kernel_path": str(world.kernel),
            "properties": {"hw_disk_buss": "sata"},
        },
        headers=world.admin,
    )
    assert response.status_code == 400, response.text
    assert "did you mean hw_disk_bus?" in response.json()["error"]["message"]
    names = [i["name"] for i in world.client.get("/v1/images", headers=world.admin).json()]
    assert "typo" not in names
