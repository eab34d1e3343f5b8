"""The all-in-one node: the local host registered with placement as an operator expects."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fd_budget import open_descriptors
from wattvisor.allinone import AllInOne, placement_inventories
from wattvisor.config import load_settings
from wattvisor.host.driver import Inventory
from wattvisor.host.networks import NetworkSpec


def test_inventories_carry_reservations_and_ratios(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        host={
            "reserved_host_memory_mb": 1024,
            "cpu_allocation_ratio": 2.0,
            "reserved_host_disk_gb": 5,
        },
    )
    inv = placement_inventories(settings, Inventory(vcpu=8, memory_mb=16384, disk_gb=100))
    assert inv["VCPU"].total == 8 and inv["VCPU"].allocation_ratio == 2.0
    assert inv["MEMORY_MB"].reserved == 1024 and inv["MEMORY_MB"].max_unit == 16384
    assert inv["DISK_GB"].reserved == 5
    tiny = placement_inventories(settings, Inventory(vcpu=1, memory_mb=512, disk_gb=1))
    assert tiny["MEMORY_MB"].reserved == 512  # never more than the host has


@pytest.fixture
def node(tmp_path: Path) -> Iterator[AllInOne]:
    settings = load_settings(
        data_dir=tmp_path,
        host={"libvirt_uri": "test:///default", "virt_type": "qemu"},
        energy={"source": "model", "interval_s": 0.1},
    )
    built = AllInOne.build(settings)
    yield built
    built.stop()


def test_build_registers_the_host_with_its_traits(node: AllInOne) -> None:
    provider = node.placement.get_provider(node.provider_uuid)
    traits = node.placement.get_provider_traits(node.provider_uuid)
    assert provider.uuid == node.provider_uuid
    assert traits.traits == node.driver.traits()
    assert "COMPUTE_STORAGE_BUS_VIRTIO" in traits.traits
    assert set(node.placement.get_inventories(node.provider_uuid).inventories) == {
        "VCPU",
        "MEMORY_MB",
        "DISK_GB",
    }


def test_stop_closes_the_store(tmp_path: Path) -> None:
    before = open_descriptors()
    settings = load_settings(
        data_dir=tmp_path, host={"libvirt_uri": "test:///default", "virt_type": "qemu"},
        energy={"source": "model", "interval_s": 0.1},
    )  # fmt: skip
    for _round in range(3):
        AllInOne.build(settings).stop()
    # A node stopped and built again (tests, a restart in-process) must not keep the
    # previous one's database files open.
    left = open_descriptors() - before
    assert not [target for _fd, target in left if target.startswith(str(tmp_path))]


def test_rebuild_is_idempotent(node: AllInOne) -> None:
    again = AllInOne.build(node.settings)
    try:
        assert again.provider_uuid == node.provider_uuid
        assert len(again.placement.list_providers()) == 1
    finally:
        again.stop()


def test_energy_weigher_source_reports_local_host_after_a_sample(node: AllInOne) -> None:
    from wattvisor.allinone import LocalHostPower

    power = LocalHostPower(node.sampler, node.placement, node.provider_uuid)
    assert power.watts_per_used_vcpu(node.provider_uuid) is None  # nothing measured yet
    node.sampler.sample()
    node.sampler.sample()
    value = power.watts_per_used_vcpu(node.provider_uuid)
    assert value is not None and value > 0
    assert power.watts_per_used_vcpu("another-host") is None


def test_energy_figure_is_worked_out_once_per_sample(node: AllInOne) -> None:
    from wattvisor.allinone import LocalHostPower

    power = LocalHostPower(node.sampler, node.placement, node.provider_uuid)
    node.sampler.sample()
    node.sampler.sample()
    idle = power.watts_per_used_vcpu(node.provider_uuid)
    assert idle is not None
    node.placement.set_allocations(
        "8f4c1a2e-0d47-4c5e-9b1e-3f2a6d7c8b90", {node.provider_uuid: {"VCPU": 4}},
        project_id="p", user_id="u",
        consumer_generation=None,
    )  # fmt: skip
    assert power.watts_per_used_vcpu(node.provider_uuid) == idle  # same sample, same figure
    node.sampler.sample()
    latest = node.sampler.latest()
    assert latest is not None
    assert power.watts_per_used_vcpu(node.provider_uuid) == latest.host.power_watts / 4


def test_freeze_startup_heap_keeps_startup_objects_out_of_collections(node: AllInOne) -> None:
    import gc

    from wattvisor.allinone import freeze_startup_heap

    node.start()
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        # The node built above (its app, placement index, services) is now frozen.
        assert frozen > before + 10_000
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_start_up_makes_the_local_hosts_network_ready(node: AllInOne) -> None:
    spec = node.compute.servers.addresses.spec
    assert spec == NetworkSpec.from_settings(node.settings.host.network)
    network = node.driver.connection.call(lambda c: c.networkLookupByName(spec.name))
    assert network.isActive() and network.autostart()
    assert not any("network" in note for note in node.notes)


def test_a_network_the_host_cannot_provide_is_a_start_up_note(tmp_path: Path) -> None:
    missing = f"wvtest-absent-{secrets.token_hex(4)}"
    settings = load_settings(
        data_dir=tmp_path,
        host={"libvirt_uri": "test:///default", "virt_type": "qemu",
              "network": {"mode": "network", "name": missing}},
        energy={"source": "model", "interval_s": 0.1},
    )  # fmt: skip
    built = AllInOne.build(settings)
    try:
        [note] = [n for n in built.notes if missing in n]
        assert note.startswith("servers will not build until their network works")
        assert "does not exist" in note
    finally:
        built.stop()
