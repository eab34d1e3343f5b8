"""Flavors and images are validated when saved; a rejected one leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattvisor.compute import Compute, Conflict, InvalidRequest, NotFound


def test_default_flavors_are_created_once(compute: Compute) -> None:
    again = compute.ensure_default_flavors()
    names = [f.name for f in compute.catalog.flavors()]
    assert names == ["small", "tiny"]
    tiny = compute.catalog.flavor("tiny")
    assert (tiny.vcpus, tiny.ram_mb, tiny.disk_gb) == (1, 256, 1)
    assert {f.id for f in again} == {f.id for f in compute.catalog.flavors()}


def test_flavor_with_a_bad_extra_spec_is_refused_and_not_saved(compute: Compute) -> None:
    with pytest.raises(InvalidRequest) as caught:
        compute.catalog.create_flavor("metrics", 1, 256, 1, extra_specs={"hw:power_metrics": "si"})
    assert "'si'" in caught.value.message and "true" in caught.value.message
    assert caught.value.details["problems"]
    with pytest.raises(NotFound):
        compute.catalog.flavor("metrics")


def test_flavor_names_are_unique(compute: Compute) -> None:
    with pytest.raises(Conflict, match="tiny"):
        compute.catalog.create_flavor("tiny", 2, 512, 1)


def test_flavor_is_found_by_id_or_name(compute: Compute) -> None:
    made = compute.catalog.create_flavor(
        "power", 1, 256, 1, extra_specs={"hw:power_metrics": "true"}
    )
    assert compute.catalog.flavor(made.id) == compute.catalog.flavor("power") == made
    compute.catalog.delete_flavor("power")
    with pytest.raises(NotFound, match="tiny"):  # the message lists what exists
        compute.catalog.flavor(made.id)


def test_image_property_is_checked_with_accepted_values(compute: Compute, tmp_path: Path) -> None:
    kernel = tmp_path / "k"
    kernel.write_bytes(b"k")
    with pytest.raises(InvalidRequest) as caught:
        compute.catalog.create_image(
            "bad", kernel_path=str(kernel), properties={"hw_vif_model": "virtio-net"}
        )
    assert "virtio-net" in caught.value.message and "e1000" in caught.value.message
    assert compute.catalog.images() == []


def test_image_needs_exactly_one_way_to_boot(compute: Compute, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 512)
    with pytest.raises(InvalidRequest, match="exactly one"):
        compute.catalog.create_image("none")
    with pytest.raises(InvalidRequest, match="exactly one"):
        compute.catalog.create_image("both", kernel_path=str(disk), disk_path=str(disk))
    with pytest.raises(InvalidRequest, match="not an existing file"):
        compute.catalog.create_image("missing", kernel_path=str(tmp_path / "nope"))
    with pytest.raises(InvalidRequest, match="disk_format 'vmdk'"):
        compute.catalog.create_image("vmdk", disk_path=str(disk), disk_format="vmdk")
    image = compute.catalog.create_image("disk", disk_path=str(disk))
    assert image.boot == "disk" and image.disk_format == "raw"
    assert [i.name for i in compute.catalog.images()] == ["disk"]
