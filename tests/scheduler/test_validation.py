"""Flavor extra specs and image properties are checked against one schema when saved."""

from __future__ import annotations

import pytest

from wattvisor.scheduler import (
    InvalidSpec,
    accepted_values,
    validate_flavor_extra_specs,
    validate_image_properties,
)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hw_vif_model", "virtio"),
        ("hw_vif_model", "spapr-vlan"),
        ("hw_vif_model", "E1000E"),
        ("hw_video_model", "qxl"),
        ("hw_disk_bus", "sata"),
        ("hw_cdrom_bus", "ide"),
        ("hw_architecture", "x86_64"),
        ("hw_architecture", "amd64"),
        ("hypervisor_type", "qemu"),
        ("vm_mode", "hvm"),
        ("hw_power_metrics", "yes"),
        ("hw_power_metrics", "False"),
        ("trait:COMPUTE_SHARE_LOCAL_FS", "required"),
        ("trait:CUSTOM_GOLD", "forbidden"),
        ("os_distro", "anything-not-in-the-schema"),
    ],
)
def test_acceptable_image_property_is_saved(key: str, value: str) -> None:
    validate_image_properties({key: value})


@pytest.mark.parametrize(
    ("key", "value", "one_accepted"),
    [
        ("hw_vif_model", "virtio-net", "virtio"),
        ("hw_video_model", "vesa", "cirrus"),
        ("hw_disk_bus", "nvme", "sata"),
        ("hw_cdrom_bus", "floppy", "ide"),
        ("hw_architecture", "armv7l", "aarch64"),
        ("hypervisor_type", "esx", "kvm"),
        ("vm_mode", "paravirt", "hvm"),
        ("hw_power_metrics", "maybe", "true"),
        ("trait:COMPUTE_SHARE_LOCAL_FS", "preferred", "required"),
    ],
)
def test_unknown_image_property_value_is_rejected_with_what_is_accepted(
    key: str, value: str, one_accepted: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        validate_image_properties({key: value})
    message = str(caught.value)
    assert f"image property {key}={value!r} is not accepted" in message
    assert one_accepted in message
    assert caught.value.problems[0].key == key


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidSpec) as caught:
        validate_image_properties({"hw_vif_model": "x", "hw_disk_bus": "y"})
    assert [p.key for p in caught.value.problems] == ["hw_disk_bus", "hw_vif_model"]


def test_flavor_power_metrics_accepts_usual_boolean_spellings() -> None:
    for value in ("true", "True", "1", "yes", "on", "false", "0", "no", "off"):
        validate_flavor_extra_specs({"hw:power_metrics": value})
    with pytest.raises(InvalidSpec, match="hw:power_metrics='enabled'"):
        validate_flavor_extra_specs({"hw:power_metrics": "enabled"})


def test_flavor_trait_spec_needs_a_real_trait_name() -> None:
    validate_flavor_extra_specs({"trait:HW_ARCH_X86_64": "required"})
    with pytest.raises(InvalidSpec, match="trait:NOT_A_TRAIT"):
        validate_flavor_extra_specs({"trait:NOT_A_TRAIT": "required"})


def test_accepted_models_cover_every_os_traits_model() -> None:
    import os_traits

    vif = {
        t.removeprefix("COMPUTE_NET_VIF_MODEL_").lower()
        for t in os_traits.get_traits()
        if t.startswith("COMPUTE_NET_VIF_MODEL_")
    }
    assert vif <= {v.replace("-", "_") for v in accepted_values("hw_vif_model")}
    assert "lan9118" in accepted_values("hw_vif_model")
    assert "bochs" in accepted_values("hw_video_model")
