"""Scheduling against a real placement database: prefilters route VMs to capable hosts,
weighers rank, claims survive races, spawn failures move on, NoValidHost explains."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import pytest

from wattvisor.config.settings import SchedulerSettings
from wattvisor.placement import Inventory, Placement
from wattvisor.scheduler import (
    Claim,
    Flavor,
    ImageMeta,
    InvalidSpec,
    NoValidHost,
    Scheduler,
    SpawnFailed,
    build_request_spec,
    flavor_resources,
)

SMALL = Flavor("small", vcpus=1, memory_mb=512, root_gb=1)
POWER = Flavor("power", vcpus=1, memory_mb=512, root_gb=1, extra_specs={"hw:power_metrics": "true"})


def _host(
    placement: Placement,
    name: str,
    traits: list[str],
    *,
    vcpus: int = 8,
    memory_mb: int = 8192,
) -> str:
    rp = str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
    placement.ensure_provider(
        rp,
        name,
        {
            "VCPU": Inventory(total=vcpus),
            "MEMORY_MB": Inventory(total=memory_mb),
            "DISK_GB": Inventory(total=100),
        },
        traits,
    )
    return rp


def _spec(flavor: Flavor = SMALL, image: Mapping[str, str] | None = None):  # type: ignore[no-untyped-def]
    return build_request_spec(
        flavor, ImageMeta(dict(image or {})), project_id="proj", user_id="user"
    )


@pytest.fixture
def mixed(placement: Placement) -> Placement:
    _host(placement, "plain", ["HW_ARCH_X86_64", "COMPUTE_NET_VIF_MODEL_VIRTIO"], memory_mb=65536)
    _host(
        placement,
        "e1000",
        ["HW_ARCH_X86_64", "COMPUTE_NET_VIF_MODEL_E1000", "COMPUTE_NET_VIF_MODEL_VIRTIO"],
    )
    _host(
        placement,
        "share",
        ["HW_ARCH_X86_64", "COMPUTE_NET_VIF_MODEL_VIRTIO", "COMPUTE_SHARE_LOCAL_FS"],
    )
    return placement


def test_image_metadata_prefilter_routes_only_to_capable_hosts(mixed: Placement) -> None:
    scheduler = Scheduler(mixed)
    for _ in range(5):
        claim = scheduler.select_and_claim(_spec(image={"hw_vif_model": "e1000"}))
        assert claim.provider_name == "e1000"


def test_disabling_image_prefilter_restores_unconstrained_placement(mixed: Placement) -> None:
    scheduler = Scheduler(mixed, SchedulerSettings(image_metadata_prefilter=False))
    spec = _spec(image={"hw_vif_model": "e1000"})
    claim = scheduler.select_and_claim(spec)
    assert claim.provider_name == "plain"  # most free RAM, though it has no e1000
    assert "COMPUTE_NET_VIF_MODEL_E1000" not in spec.required


def test_power_metrics_from_flavor_requires_local_fs_share(mixed: Placement) -> None:
    scheduler = Scheduler(mixed)
    spec = _spec(POWER)
    claim = scheduler.select_and_claim(spec)
    assert claim.provider_name == "share"
    assert spec.reasons["COMPUTE_SHARE_LOCAL_FS"] == "flavor extra spec hw:power_metrics=true"


def test_power_metrics_from_image_requires_local_fs_share(mixed: Placement) -> None:
    claim = Scheduler(mixed).select_and_claim(_spec(image={"hw_power_metrics": "yes"}))
    assert claim.provider_name == "share"


def test_power_metrics_false_does_not_constrain(mixed: Placement) -> None:
    claim = Scheduler(mixed).select_and_claim(_spec(image={"hw_power_metrics": "false"}))
    assert claim.provider_name == "plain"


def test_flavor_and_image_disagreeing_on_power_metrics_is_an_error(mixed: Placement) -> None:
    with pytest.raises(InvalidSpec, match="disagree"):
        Scheduler(mixed).select_and_claim(_spec(POWER, {"hw_power_metrics": "false"}))


def test_disabled_power_metrics_prefilter_ignores_the_request(mixed: Placement) -> None:
    settings = SchedulerSettings(power_metrics_prefilter=False)
    claim = Scheduler(mixed, settings).select_and_claim(_spec(POWER))
    assert claim.provider_name == "plain"


def test_explicit_forbidden_trait_avoids_hosts(mixed: Placement) -> None:
    flavor = Flavor(
        "nos",
        1,
        512,
        1,
        extra_specs={
            "trait:COMPUTE_SHARE_LOCAL_FS": "forbidden",
            "trait:COMPUTE_NET_VIF_MODEL_E1000": "forbidden",
        },
    )
    claim = Scheduler(mixed).select_and_claim(_spec(flavor))
    assert claim.provider_name == "plain"
    image = {"trait:COMPUTE_NET_VIF_MODEL_E1000": "required"}
    assert Scheduler(mixed).select_and_claim(_spec(image=image)).provider_name == "e1000"


def test_flavor_requiring_what_image_forbids_is_an_error(mixed: Placement) -> None:
    with pytest.raises(InvalidSpec, match="COMPUTE_SHARE_LOCAL_FS"):
        Scheduler(mixed).select_and_claim(
            _spec(POWER, {"trait:COMPUTE_SHARE_LOCAL_FS": "forbidden"})
        )


def test_no_valid_host_says_what_removed_the_hosts(mixed: Placement) -> None:
    _host(mixed, "another-plain", ["HW_ARCH_X86_64"])
    flavor = Flavor("power", 1, 512, 1, extra_specs={"hw:power_metrics": "true"})
    spec = _spec(flavor, {"hw_vif_model": "e1000"})
    with pytest.raises(NoValidHost) as caught:
        Scheduler(mixed).select_and_claim(spec)
    assert caught.value.reasons == (
        "3 hosts lack COMPUTE_NET_VIF_MODEL_E1000 (required by image property hw_vif_model=e1000)",
        "1 host lacks COMPUTE_SHARE_LOCAL_FS (required by flavor extra spec hw:power_metrics=true)",
    )


def test_no_host_with_room_is_explained(mixed: Placement) -> None:
    big = Flavor("huge", vcpus=64, memory_mb=512)
    with pytest.raises(NoValidHost) as caught:
        Scheduler(mixed).select_and_claim(_spec(big))
    assert caught.value.reasons == (
        "3 hosts lack room for VCPU:64 (flavor huge requests 64, the largest free is 8)",
    )


def test_a_full_enabled_host_is_blamed_on_capacity_not_on_the_disabled_hosts_check(
    placement: Placement,
) -> None:
    _host(placement, "only", ["HW_ARCH_X86_64"], vcpus=8)
    with pytest.raises(NoValidHost) as caught:
        Scheduler(placement).select_and_claim(_spec(Flavor("big", vcpus=64, memory_mb=512)))
    text = str(caught.value)
    assert text == (
        "no valid host among 1 for MEMORY_MB:512, VCPU:64: 1 host lacks room for VCPU:64 "
        "(flavor big requests 64, the largest free is 8)"
    )
    assert "DISABLED" not in text


def test_a_disabled_host_is_blamed_on_being_disabled_even_when_it_is_also_full(
    placement: Placement,
) -> None:
    _host(placement, "off", ["COMPUTE_STATUS_DISABLED"], vcpus=2)
    _host(placement, "full", [], vcpus=2)
    with pytest.raises(NoValidHost) as caught:
        Scheduler(placement).select_and_claim(_spec(Flavor("four", vcpus=4, memory_mb=512)))
    assert caught.value.reasons == (
        "1 host is disabled by an operator (COMPUTE_STATUS_DISABLED)",
        "1 host lacks room for VCPU:4 (flavor four requests 4, the largest free is 2)",
    )


def test_every_host_is_blamed_on_the_first_check_it_fails(placement: Placement) -> None:
    """Disabled status, then traits (required, forbidden), then each resource class."""
    _host(placement, "disabled", ["COMPUTE_STATUS_DISABLED", "CUSTOM_GOLD"], vcpus=64)
    _host(placement, "no-gold", [], vcpus=64, memory_mb=65536)
    _host(placement, "gpu", ["CUSTOM_GOLD", "CUSTOM_GPU"], vcpus=64, memory_mb=65536)
    _host(placement, "small-ram", ["CUSTOM_GOLD"], vcpus=64, memory_mb=4096)
    _host(placement, "few-cpus", ["CUSTOM_GOLD"], vcpus=4, memory_mb=65536)
    flavor = Flavor(
        "gold",
        vcpus=16,
        memory_mb=16384,
        extra_specs={"trait:CUSTOM_GOLD": "required", "trait:CUSTOM_GPU": "forbidden"},
    )
    with pytest.raises(NoValidHost) as caught:
        Scheduler(placement).select_and_claim(_spec(flavor))
    assert caught.value.reasons == (
        "1 host is disabled by an operator (COMPUTE_STATUS_DISABLED)",
        "1 host lacks CUSTOM_GOLD (required by flavor extra spec trait:CUSTOM_GOLD=required)",
        "1 host has CUSTOM_GPU (forbidden by flavor extra spec trait:CUSTOM_GPU=forbidden)",
        "1 host lacks room for MEMORY_MB:16384 (flavor gold requests 16384, the largest free "
        "is 4096)",
        "1 host lacks room for VCPU:16 (flavor gold requests 16, the largest free is 4)",
    )
    assert "no valid host among 5 " in str(caught.value)


def test_capacity_blame_counts_what_is_already_allocated_and_missing_inventory(
    placement: Placement,
) -> None:
    busy = _host(placement, "busy", [], vcpus=8)
    bare = str(uuid.uuid5(uuid.NAMESPACE_DNS, "bare"))
    placement.ensure_provider(
        bare, "bare", {"VCPU": Inventory(total=8), "MEMORY_MB": Inventory(total=8192)}, []
    )
    placement.set_allocations(
        str(uuid.uuid4()), {busy: {"VCPU": 6}}, project_id="p", user_id="u",
        consumer_generation=None,
    )  # fmt: skip
    with pytest.raises(NoValidHost) as caught:
        Scheduler(placement).select_and_claim(_spec(Flavor("four", 4, 512, root_gb=1)))
    assert caught.value.reasons == (
        "1 host lacks room for DISK_GB:1 (flavor four requests 1, no DISK_GB at all)",
        "1 host lacks room for VCPU:4 (flavor four requests 4, the largest free is 2)",
    )


def test_largest_free_is_bounded_by_the_largest_single_allocation(placement: Placement) -> None:
    rp = str(uuid.uuid5(uuid.NAMESPACE_DNS, "capped"))
    placement.ensure_provider(
        rp, "capped",
        {"VCPU": Inventory(total=64, max_unit=4), "MEMORY_MB": Inventory(total=8192)}, [],
    )  # fmt: skip
    with pytest.raises(NoValidHost) as caught:
        Scheduler(placement).select_and_claim(_spec(Flavor("eight", 8, 512)))
    assert caught.value.reasons == (
        "1 host lacks room for VCPU:8 (flavor eight requests 8, the largest free is 4)",
    )


def test_no_host_registered_is_said_plainly(placement: Placement) -> None:
    with pytest.raises(NoValidHost) as caught:
        Scheduler(placement).select_and_claim(_spec())
    assert caught.value.reasons == ("no host is registered",)


def test_free_ram_weigher_spreads_memory(placement: Placement) -> None:
    _host(placement, "small-ram", [], memory_mb=2048)
    _host(placement, "big-ram", [], memory_mb=4096)
    scheduler = Scheduler(placement, SchedulerSettings(cpu_weight_multiplier=0))
    names = [
        scheduler.select_and_claim(_spec(Flavor("m", 1, 1024))).provider_name for _ in range(4)
    ]
    assert names[:2] == ["big-ram", "big-ram"]
    assert sorted(names) == ["big-ram", "big-ram", "big-ram", "small-ram"]


class _Watts:
    """Per-host lookups, as a source without a bulk table offers them."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def watts_per_used_vcpu(self, provider_uuid: str) -> float | None:
        return self.table.get(provider_uuid)


def test_energy_weigher_prefers_fewest_watts_per_vcpu(placement: Placement) -> None:
    hungry = _host(placement, "hungry", [])
    frugal = _host(placement, "frugal", [])
    _host(placement, "unmeasured", [])
    settings = SchedulerSettings(ram_weight_multiplier=0, cpu_weight_multiplier=0)
    scheduler = Scheduler(placement, settings, power=_Watts({hungry: 12.0, frugal: 4.0}))
    assert scheduler.select_and_claim(_spec()).provider_name == "frugal"


def test_energy_weigher_is_neutral_without_data(placement: Placement) -> None:
    _host(placement, "a", [], memory_mb=4096)
    _host(placement, "b", [], memory_mb=8192)
    scheduler = Scheduler(placement, power=_Watts({}))
    assert scheduler.select_and_claim(_spec()).provider_name == "b"


def test_claim_lost_to_a_concurrent_scheduler_moves_to_the_next_host(
    placement: Placement, store_url: str
) -> None:
    from wattvisor.store import make_engine

    best = _host(placement, "best", [], vcpus=1, memory_mb=16384)
    _host(placement, "second", [], vcpus=1, memory_mb=8192)
    rival_engine = make_engine(store_url)
    rival = Placement(rival_engine)

    class RivalClaimsDuringWeighing:
        """Takes the best host's only vCPU between candidate lookup and claim."""

        fired = False

        def watts_per_used_vcpu(self, provider_uuid: str) -> float | None:
            if not self.fired:
                self.fired = True
                rival.set_allocations(
                    str(uuid.uuid4()),
                    {best: {"VCPU": 1}},
                    project_id="p",
                    user_id="u",
                    consumer_generation=None,
                )
            return None

    scheduler = Scheduler(
        placement, SchedulerSettings(cpu_weight_multiplier=0), power=RivalClaimsDuringWeighing()
    )
    claim = scheduler.select_and_claim(_spec())
    assert claim.provider_name == "second"
    assert placement.get_usages(best).usages["VCPU"] == 1
    rival_engine.dispose()


def test_spawn_failure_releases_claim_and_tries_next_host(mixed: Placement) -> None:
    scheduler = Scheduler(mixed)
    tried: list[str] = []

    def spawn(claim: Claim) -> None:
        tried.append(claim.provider_name)
        if claim.provider_name == "plain":
            raise SpawnFailed("qemu exited")

    claim = scheduler.schedule(_spec(), spawn)
    assert tried[0] == "plain"
    assert claim.provider_name == tried[1] != "plain"
    plain = mixed.list_providers(name="plain")[0].uuid
    assert mixed.get_usages(plain).usages["VCPU"] == 0
    assert [a.provider_uuid for a in mixed.get_allocations(claim.consumer_uuid).allocations] == [
        claim.provider_uuid
    ]


def test_spawn_attempts_are_bounded(mixed: Placement) -> None:
    scheduler = Scheduler(mixed, SchedulerSettings(max_attempts=2))
    tried: list[str] = []

    def spawn(claim: Claim) -> None:
        tried.append(claim.provider_name)
        raise SpawnFailed("no")

    consumer = str(uuid.uuid4())
    with pytest.raises(NoValidHost, match="spawning failed on 2 host"):
        scheduler.schedule(_spec(), spawn, consumer)
    assert len(tried) == 2 and len(set(tried)) == 2
    assert mixed.get_allocations(consumer).allocations == ()


def test_claiming_for_a_consumer_that_holds_a_claim_fails_at_once(mixed: Placement) -> None:
    from wattvisor.placement import ConsumerConflict

    scheduler = Scheduler(mixed)
    claim = scheduler.select_and_claim(_spec())
    with pytest.raises(ConsumerConflict):
        scheduler.select_and_claim(_spec(), claim.consumer_uuid)
    scheduler.release(claim)
    again = scheduler.select_and_claim(_spec(), claim.consumer_uuid)
    assert again.consumer_uuid == claim.consumer_uuid


def test_prefilters_explain_what_they_added(mixed: Placement) -> None:
    spec = Scheduler(mixed).prepare(_spec(POWER, {"hw_disk_bus": "virtio"}))
    assert (
        "image_metadata: required COMPUTE_STORAGE_BUS_VIRTIO because image property "
        "hw_disk_bus=virtio" in spec.log
    )
    assert (
        "power_metrics: required COMPUTE_SHARE_LOCAL_FS because flavor extra spec "
        "hw:power_metrics=true" in spec.log
    )


class _WattsTable(_Watts):
    def watts_per_used_vcpu_table(self) -> dict[str, float]:
        return self.table


def test_energy_weigher_uses_a_whole_table_when_offered(placement: Placement) -> None:
    hungry = _host(placement, "hungry", [])
    frugal = _host(placement, "frugal", [])
    settings = SchedulerSettings(ram_weight_multiplier=0, cpu_weight_multiplier=0)
    scheduler = Scheduler(placement, settings, power=_WattsTable({hungry: 9.0, frugal: 3.0}))
    assert scheduler.select_and_claim(_spec()).provider_name == "frugal"


def test_hypervisor_nobody_reports_is_no_valid_host_not_an_error(mixed: Placement) -> None:
    with pytest.raises(NoValidHost) as caught:
        Scheduler(mixed).select_and_claim(_spec(image={"hypervisor_type": "xen"}))
    assert caught.value.reasons == (
        "3 hosts lack CUSTOM_HYPERVISOR_XEN (required by image property hypervisor_type=xen)",
    )


def test_image_saved_with_a_bad_value_is_refused_at_boot_with_the_accepted_values(
    mixed: Placement,
) -> None:
    with pytest.raises(InvalidSpec, match=r"hw_vif_model='virtio-net' is not accepted.*e1000"):
        Scheduler(mixed).select_and_claim(_spec(image={"hw_vif_model": "virtio-net"}))


def test_spawn_failure_on_the_only_host_names_the_error_in_no_valid_host(
    placement: Placement,
) -> None:
    _host(placement, "only", [])

    def spawn(claim: Claim) -> None:
        raise SpawnFailed("domain 'instance-1' failed to start: cannot open console.log")

    with pytest.raises(NoValidHost) as caught:
        Scheduler(placement).schedule(_spec(), spawn)
    assert caught.value.spawn_failures == (
        "only: domain 'instance-1' failed to start: cannot open console.log",
    )
    assert "only: domain 'instance-1' failed to start: cannot open console.log" in str(caught.value)
    assert caught.value.reasons == ("1 host failed to spawn this server and was not retried",)


def test_a_prepared_spec_is_not_prefiltered_again(mixed: Placement) -> None:
    scheduler = Scheduler(mixed)
    spec = scheduler.prepare(_spec(POWER))
    log = list(spec.log)
    scheduler.schedule(spec, lambda claim: None, prefiltered=True)
    assert spec.log == log


class _NoPowerWanted:
    def watts_per_used_vcpu(self, provider_uuid: str) -> float | None:
        raise AssertionError("a single candidate needs no weighing")


def test_a_single_candidate_is_chosen_without_asking_the_weighers(placement: Placement) -> None:
    _host(placement, "only", [])
    claim = Scheduler(placement, power=_NoPowerWanted()).select_and_claim(_spec())
    assert claim.provider_name == "only"


def test_resources_extra_specs_replace_and_add_to_the_flavor_amounts() -> None:
    flavor = Flavor(
        "tuned", vcpus=2, memory_mb=1024, root_gb=10,
        extra_specs={"resources:VCPU": "4", "resources:DISK_GB": "0",
                     "resources1:MEMORY_MB": "512", "resources2:CUSTOM_FPGA": "1"},
    )  # fmt: skip
    assert flavor_resources(flavor) == {"VCPU": 4, "MEMORY_MB": 1536, "CUSTOM_FPGA": 1}


def test_a_stored_flavor_with_a_negative_resource_amount_is_refused_at_boot() -> None:
    flavor = Flavor("old", 1, 512, extra_specs={"resources:VCPU": "-1"})
    with pytest.raises(InvalidSpec, match=r"resources:VCPU='-1' is not accepted"):
        flavor_resources(flavor)


def test_numbered_trait_groups_constrain_the_host_like_unnumbered_ones(mixed: Placement) -> None:
    flavor = Flavor(
        "grouped", 1, 512, 1,
        extra_specs={"resources1:VCPU": "1", "trait1:COMPUTE_NET_VIF_MODEL_E1000": "required"},
    )  # fmt: skip
    spec = _spec(flavor)
    claim = Scheduler(mixed).select_and_claim(spec)
    assert claim.provider_name == "e1000"
    assert spec.resources["VCPU"] == 2
    assert spec.reasons["COMPUTE_NET_VIF_MODEL_E1000"] == (
        "flavor extra spec trait1:COMPUTE_NET_VIF_MODEL_E1000=required"
    )
