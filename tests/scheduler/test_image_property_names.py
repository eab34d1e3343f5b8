"""A ``hw_*`` image property is one wattvisor applies, or it is refused when saved and at
server create: a typo gets the nearest known name, a Nova property wattvisor does not
apply is refused as such, and a flavor and image that contradict each other are refused
instead of one of them being dropped from the guest."""

from __future__ import annotations

import pytest

from wattvisor.config.settings import SchedulerSettings
from wattvisor.scheduler import (
    Flavor,
    ImageMeta,
    InvalidSpec,
    build_request_spec,
    run_prefilters,
    validate_image_properties,
)
from wattvisor.scheduler.image_property_names import (
    APPLIED_HW_PROPERTIES,
    NOVA_HW_PROPERTIES,
    nearest_known_name,
)
from wattvisor.scheduler.validation import (
    IMAGE_VALUE_RULES,
    TRAIT_PROPERTIES,
    request_problems,
)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("hw_disk_buss", "hw_disk_bus"),
        ("hw_vif_modle", "hw_vif_model"),
        ("hw_firmware", "hw_firmware_type"),
        ("hw_qemu_guestagent", "hw_qemu_guest_agent"),
    ],
)
def test_unknown_hw_property_is_refused_with_the_nearest_known_name(typo: str, meant: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        validate_image_properties({typo: "sata"})
    message = str(caught.value)
    assert f"image property {typo}=" in message
    assert f"did you mean {meant}?" in message
    assert "hw_disk_bus" in message  # what is accepted is listed


def test_hw_property_far_from_every_name_is_refused_without_a_guess() -> None:
    with pytest.raises(InvalidSpec, match="no known name is close"):
        validate_image_properties({"hw_zzzzzzzzzzzzzzzzzz": "1"})


@pytest.mark.parametrize("key", ["hw_boot_menu", "hw_cpu_policy", "hw_watchdog_action"])
def test_nova_property_that_is_not_applied_is_refused_as_such(key: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        validate_image_properties({key: "yes"})
    assert f"image property {key}='yes' is not applied to guests by wattvisor" in str(caught.value)


def test_every_applied_property_has_a_value_rule_and_nova_knows_it() -> None:
    for key in APPLIED_HW_PROPERTIES:
        assert key in TRAIT_PROPERTIES or key in IMAGE_VALUE_RULES, key
        assert key in NOVA_HW_PROPERTIES or key == "hw_power_metrics", key


def test_nearest_name_of_a_known_name_is_itself() -> None:
    assert nearest_known_name("hw_disk_bus") == "hw_disk_bus"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hw_machine_type", "q35"),
        ("hw_machine_type", "pc-i440fx-7.2"),
        ("hw_firmware_type", "UEFI"),
        ("hw_rng_model", "virtio"),
        ("hw_scsi_model", "virtio-scsi"),
        ("hw_qemu_guest_agent", "yes"),
        ("hw_pointer_model", "usbtablet"),
        ("os_type", "windows"),
        ("os_secure_boot", "optional"),
        ("hw_powermetrics", "true"),
    ],
)
def test_applied_property_with_a_nova_value_is_saved(key: str, value: str) -> None:
    validate_image_properties({key: value})


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("hw_firmware_type", "coreboot", "bios, uefi"),
        ("hw_rng_model", "egd", "virtio"),
        ("hw_scsi_model", "megaraid", "virtio-scsi"),
        ("hw_pointer_model", "mouse", "usbtablet"),
        ("hw_machine_type", "pc q35", "machine type name"),
        ("os_secure_boot", "maybe", "required, disabled, optional"),
        ("hw_powermetrics", "perhaps", "true"),
        ("hw_disk_bus", "xen", "virtio"),
        ("hw_cdrom_bus", "virtio", "ide"),
    ],
)
def test_applied_property_with_another_value_is_refused(
    key: str, value: str, accepted: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        validate_image_properties({key: value})
    message = str(caught.value)
    assert f"image property {key}={value!r}" in message or f"{key}={value} " in message
    assert accepted in message


def test_power_metrics_and_its_synonym_together_are_refused() -> None:
    with pytest.raises(InvalidSpec, match="means the same as hw_power_metrics"):
        validate_image_properties({"hw_powermetrics": "true", "hw_power_metrics": "true"})


def _spec(extra: dict[str, str], properties: dict[str, str]):  # type: ignore[no-untyped-def]
    flavor = Flavor(name="f", vcpus=1, memory_mb=128, extra_specs=extra)
    return build_request_spec(flavor, ImageMeta(properties), project_id="p", user_id="u")


def test_synonym_asks_for_power_metrics_like_the_canonical_name() -> None:
    spec = run_prefilters(_spec({}, {"hw_powermetrics": "yes"}), SchedulerSettings())
    assert "COMPUTE_SHARE_LOCAL_FS" in spec.required
    assert any("image property hw_powermetrics=yes" in line for line in spec.log)


def test_typo_in_an_image_saved_earlier_is_refused_at_server_create() -> None:
    with pytest.raises(InvalidSpec, match="did you mean hw_disk_bus"):
        run_prefilters(_spec({}, {"hw_disk_buss": "sata"}), SchedulerSettings())


def test_rng_asked_by_the_image_but_forbidden_by_the_flavor_is_refused() -> None:
    problems = request_problems({"hw_rng:allowed": "false"}, {"hw_rng_model": "virtio"})
    assert any("hw_rng:allowed=false does not allow" in str(p) for p in problems)
    assert request_problems({"hw_rng:allowed": "true"}, {"hw_rng_model": "virtio"}) == []


def test_secure_boot_required_without_uefi_is_refused() -> None:
    problems = request_problems({}, {"os_secure_boot": "required"})
    assert any("needs UEFI firmware" in str(p) for p in problems)
    problems = request_problems({"os:secure_boot": "required"}, {"hw_firmware_type": "bios"})
    assert any("it is bios" in str(p) for p in problems)
    assert request_problems({}, {"os_secure_boot": "required", "hw_firmware_type": "uefi"}) == []


def test_flavor_and_image_secure_boot_that_disagree_are_refused() -> None:
    problems = request_problems(
        {"os:secure_boot": "disabled"}, {"os_secure_boot": "required", "hw_firmware_type": "uefi"}
    )
    assert any("disagree" in str(p) for p in problems)


@pytest.mark.parametrize(
    ("key", "value", "trait"),
    [
        ("hw_disk_bus", "sata", "COMPUTE_STORAGE_BUS_SATA"),
        ("hw_cdrom_bus", "scsi", "COMPUTE_STORAGE_BUS_SCSI"),
        ("hw_vif_model", "e1000", "COMPUTE_NET_VIF_MODEL_E1000"),
        ("hw_video_model", "qxl", "COMPUTE_GRAPHICS_MODEL_QXL"),
        ("hw_architecture", "x86_64", "HW_ARCH_X86_64"),
    ],
)
def test_every_applied_property_with_a_trait_requires_it(key: str, value: str, trait: str) -> None:
    assert key in APPLIED_HW_PROPERTIES
    spec = run_prefilters(_spec({}, {key: value}), SchedulerSettings())
    assert trait in spec.required


def test_applied_properties_with_traits_are_exactly_the_prefilters() -> None:
    with_traits = {k for k in APPLIED_HW_PROPERTIES if k in TRAIT_PROPERTIES}
    assert with_traits == {
        "hw_disk_bus", "hw_cdrom_bus", "hw_vif_model", "hw_video_model", "hw_architecture",
    }  # fmt: skip
