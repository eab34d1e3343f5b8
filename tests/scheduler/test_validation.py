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


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hw:power_metrics", "on"),
        ("hw:cpu_policy", "dedicated"),
        ("hw:numa_nodes", "2"),
        ("hw:numa_cpus.0", "0-3,^2"),
        ("hw:numa_mem.1", "1024"),
        ("hw:mem_page_size", "2MB"),
        ("hw:watchdog_action", "poweroff"),
        ("hw:redirected_usb_ports", "15"),
        ("hw_rng:rate_bytes", "0"),
        ("hw_video:ram_max_mb", "64"),
        ("quota:cpu_quota", "-1"),
        ("quota:disk_read_bytes_sec", "1000"),
        ("quota:vif_outbound_peak", "200"),
        ("aggregate_instance_extra_specs:ssd", "true"),
        ("capabilities:hypervisor_type", "s== QEMU"),
        ("capabilities:cpu_info:features", "<in> aes"),
        ("pci_passthrough:alias", "a1:2, a2:1"),
        ("os:secure_boot", "required"),
        ("resources:VCPU", "0"),
        ("resources:MEMORY_MB", "2048"),
        ("resources1:CUSTOM_FPGA", "1"),
        ("resources_gpu:VGPU", "1"),
        ("trait2:CUSTOM_GOLD", "forbidden"),
        ("trait:HW_CPU_X86_AVX2", "required"),
        ("group_policy", "none"),
        ("hide_hypervisor_id", "true"),
    ],
)
def test_flavor_extra_spec_accepted_as_nova_accepts_it(key: str, value: str) -> None:
    validate_flavor_extra_specs({key: value})


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("resources:VCPU", "-1", "resources:VCPU='-1' is not accepted; accepted: an integer "
         "from 0 to 2147483647"),
        ("resources2:MEMORY_MB", "lots", "resources2:MEMORY_MB='lots' is not accepted"),
        ("resources:VCPUS", "1", "resources:VCPUS='1' names no resource class; accepted: "
         "<os-resource-classes name>, CUSTOM_ name (^CUSTOM_[A-Z0-9_]+$, at most 255 "
         "characters)"),
        ("resources:CUSTOM_fpga", "1", "names no resource class"),
        ("foo:bar", "1", "foo:bar='1' is in no known namespace (foo: is not one); known "
         "namespaces: aggregate_instance_extra_specs:, capabilities:, hw:, hw_rng:, hw_video:, "
         "os:, pci_passthrough:, quota:, resources[N]:, trait[N]:"),
        ("vmware:hw_version", "17", "is in no known namespace (vmware: is not one)"),
        ("powervm:proc_units", "1", "is in no known namespace (powervm: is not one)"),
        ("colour", "blue", "colour='blue' is not a known extra spec; known namespaces and "
         "keys: aggregate_instance_extra_specs:"),
        ("hw:power_metric", "true", "hw:power_metric='true' is not a known hw: key; known hw: "
         "keys: hw:power_metrics, "),
        ("hw:cpu_policy", "dedicatd", "accepted: dedicated, shared, mixed"),
        ("hw:numa_nodes", "0", "accepted: an integer >= 1"),
        ("hw:numa_mem.x", "1024", "is not a known hw: key"),
        ("hw:redirected_usb_ports", "16", "accepted: an integer from 0 to 15"),
        ("hw:mem_page_size", "huge", "large, small, any or a size such as 2MB"),
        ("hw_rng:rate_bytes", "-5", "accepted: an integer >= 0"),
        ("os:secure_boot", "yes", "accepted: disabled, required"),
        ("pci_passthrough:alias", "a1", "ALIAS:COUNT"),
        ("trait:CUSTOM_GOLD", "preferred", "accepted: required, forbidden"),
        ("trait3:NOT_A_TRAIT", "required", "trait3:NOT_A_TRAIT='required' names no trait"),
        ("group_policy", "sometimes", "accepted: isolate, none"),
        ("hw:cpu_policy\n", "shared", "has a key that is not accepted; accepted: keys of "
         "1-255 characters"),
        ("trait:CUSTOM_" + "G" * 300, "required", "(313 characters)='required' has a key "
         "that is not accepted; accepted: keys of 1-255 characters"),
        ("aggregate_instance_extra_specs:note", "x" * 256, "is too long; accepted: values of "
         "at most 255 characters"),
    ],
)  # fmt: skip
def test_unacceptable_flavor_extra_spec_is_named_with_what_is_accepted(
    key: str, value: str, said: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        validate_flavor_extra_specs({"hw:power_metrics": "true", key: value})
    assert said in str(caught.value)
    assert len(caught.value.problems) == 1


def test_every_bad_flavor_extra_spec_is_reported_at_once() -> None:
    with pytest.raises(InvalidSpec) as caught:
        validate_flavor_extra_specs({"foo:bar": "1", "resources:VCPU": "-1", "hw:x": "1"})
    assert [p.key for p in caught.value.problems] == ["foo:bar", "hw:x", "resources:VCPU"]


def test_a_trait_required_and_forbidden_in_different_groups_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="trait1:CUSTOM_GOLD=forbidden and "
                       "trait:CUSTOM_GOLD=required contradict each other"):  # fmt: skip
        validate_flavor_extra_specs(
            {"trait:CUSTOM_GOLD": "required", "trait1:CUSTOM_GOLD": "forbidden"}
        )
    validate_flavor_extra_specs({"trait:CUSTOM_GOLD": "required", "trait1:CUSTOM_GOLD": "required"})


def test_isolated_request_groups_that_no_single_host_can_meet_are_refused() -> None:
    specs = {"resources1:VCPU": "1", "resources2:VCPU": "1", "group_policy": "isolate"}
    with pytest.raises(InvalidSpec, match="group_policy='isolate' can never be met"):
        validate_flavor_extra_specs(specs)
    validate_flavor_extra_specs({**specs, "group_policy": "none"})
    validate_flavor_extra_specs({"resources1:VCPU": "1", "group_policy": "isolate"})


def test_power_metrics_with_their_host_trait_forbidden_is_refused_when_saved() -> None:
    specs = {"hw:power_metrics": "true", "trait:COMPUTE_SHARE_LOCAL_FS": "forbidden"}
    with pytest.raises(InvalidSpec, match="power metrics need a host with COMPUTE_SHARE_LOCAL_FS"):
        validate_flavor_extra_specs(specs)
    validate_flavor_extra_specs({**specs, "hw:power_metrics": "false"})
