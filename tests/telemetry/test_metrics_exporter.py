"""The exposition a scrape returns, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from support.synthetic_host import InMemoryVMInventory
from telemetry.conftest import sampled_host
from wattvisor.energy import DomainCpu, EnergySampler
from wattvisor.energy.sources import UtilisationModelSource
from wattvisor.telemetry import make_metrics_registry

BUSY_VM = "aaaaaaaa-1111-4111-8111-000000000001"
IDLE_VM = "bbbbbbbb-2222-4222-8222-000000000002"


Series = dict[str, list[tuple[dict[str, str], float]]]


def _samples(sampler: EnergySampler, *, compat: bool = False, pids: bool = False) -> Series:
    registry = make_metrics_registry(sampler, compat_series=compat, process_pids=pids)
    text = generate_latest(registry).decode()
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def test_host_series_in_base_units_with_source(sampler: EnergySampler) -> None:
    series = _samples(sampler)
    assert series["wattvisor_host_energy_joules_total"] == [({"source": "rapl"}, 100.0)]
    assert series["wattvisor_host_power_watts"] == [({"source": "rapl"}, 50.0)]
    assert series["wattvisor_host_idle_power_watts"] == [({"source": "rapl"}, pytest.approx(10.0))]
    assert series["wattvisor_energy_source_info"] == [({"source": "rapl"}, 1.0)]


def test_vm_series_are_labelled_by_instance_domain_project(sampler: EnergySampler) -> None:
    series = _samples(sampler)
    energy = {
        labels["instance"]: (labels, value)
        for labels, value in series["wattvisor_vm_energy_joules_total"]
    }
    assert energy[BUSY_VM][0] == {
        "instance": BUSY_VM,
        "domain": "instance-busy",
        "project": "project-a",
        "source": "rapl",
    }
    # active = 80 J over 8 s of CPU: busy VM 3 s, idle VM 1 s, rsync 0.4 s -> shares of 4.4 s
    assert energy[BUSY_VM][1] == pytest.approx(80.0 * 3 / 4.4)
    assert energy[IDLE_VM][1] == pytest.approx(80.0 * 1 / 4.4)
    power = {labels["instance"]: value for labels, value in series["wattvisor_vm_power_watts"]}
    assert power[BUSY_VM] == pytest.approx(energy[BUSY_VM][1] / 2)
    projects = {
        labels["project"]: value for labels, value in series["wattvisor_project_power_watts"]
    }
    assert set(projects) == {"project-a", "project-b"}


def test_process_series_carry_no_command_line_and_no_pid(sampler: EnergySampler) -> None:
    series = _samples(sampler)
    ((labels, value),) = series["wattvisor_process_power_watts"]
    assert labels == {"comm": "rsync (copy)", "source": "rapl"}
    assert value == pytest.approx(80.0 * 0.4 / 4.4 / 2)
    assert "secret" not in generate_latest(make_metrics_registry(sampler)).decode()


def test_process_pids_only_when_the_operator_asks(sampler: EnergySampler) -> None:
    series = _samples(sampler, pids=True)
    ((labels, _value),) = series["wattvisor_process_power_watts"]
    assert labels == {"pid": "77", "comm": "rsync (copy)", "source": "rapl"}


def test_processes_of_one_name_are_summed_without_pids(tmp_path: Path) -> None:
    sampler = sampled_host(tmp_path, twin_rsync=True)
    ((labels, value),) = _samples(sampler)["wattvisor_process_power_watts"]
    assert labels == {"comm": "rsync (copy)", "source": "rapl"}
    # rsync 0.4 s + its twin 0.4 s of 4.8 s CPU time, of 80 J active over 2 s.
    assert value == pytest.approx(80.0 * 0.8 / 4.8 / 2)
    by_pid = _samples(sampler, pids=True)["wattvisor_process_power_watts"]
    assert sorted(labels["pid"] for labels, _ in by_pid) == ["77", "78"]
    compat = _samples(sampler, compat=True)["scaph_process_power_consumption_microwatts"]
    hosts = [(labels, v) for labels, v in compat if not labels["vmname"]]
    assert hosts == [
        (
            {"pid": "", "exe": "rsync (copy)", "cmdline": "rsync (copy)", "vmname": ""},
            pytest.approx(value * 1e6),
        )
    ]


def test_model_figures_are_labelled_estimate(model_sampler: EnergySampler) -> None:
    series = _samples(model_sampler)
    for name in (
        "wattvisor_host_energy_joules_total",
        "wattvisor_host_power_watts",
        "wattvisor_vm_energy_joules_total",
        "wattvisor_vm_power_watts",
        "wattvisor_process_power_watts",
        "wattvisor_energy_source_info",
    ):
        assert series[name], name
        assert all(labels["source"] == "estimate" for labels, _ in series[name]), name


def test_compat_series_only_when_asked(sampler: EnergySampler) -> None:
    assert not any(name.startswith("scaph_") for name in _samples(sampler))
    series = _samples(sampler, compat=True)
    assert series["scaph_host_power_microwatts"] == [
        ({"value_source": "powercap_rapl"}, pytest.approx(50_000_000.0))
    ]
    vm_rows = [
        labels
        for labels, _ in series["scaph_process_power_consumption_microwatts"]
        if labels["vmname"]
    ]
    assert {row["vmname"] for row in vm_rows} == {"instance-busy", "instance-idle"}
    assert all(f"nameguest={row['vmname']}," in row["cmdline"] for row in vm_rows)
    uw = {labels["instance"]: v for labels, v in series["wattvisor_vm_power_consumption_uW"]}
    assert uw[BUSY_VM] == pytest.approx(80.0 * 3 / 4.4 / 2 * 1e6)


def test_scrape_before_first_sample_has_only_the_source(tmp_path: Path) -> None:
    sampler = EnergySampler(
        UtilisationModelSource(1.0, 2.0),
        inventory=InMemoryVMInventory(),
        state_file=tmp_path / "s.json",
        procfs_root=tmp_path,
    )
    assert list(_samples(sampler)) == ["wattvisor_energy_source_info"]


def test_scrape_does_not_sample(sampler: EnergySampler) -> None:
    before = sampler.latest()
    for _ in range(3):
        _samples(sampler)
    assert sampler.latest() is before
    assert len(sampler.host_history()) == 1


class _StuckHypervisor:
    """Domain stats that hang until released, like an unresponsive libvirtd."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def domain_cpu(self) -> Mapping[str, DomainCpu] | None:
        self.entered.set()
        self.release.wait(60)
        return {}


def test_scrape_answers_while_the_sampler_waits_on_libvirt(sampler: EnergySampler) -> None:
    stuck = _StuckHypervisor()
    sampler.domain_stats = stuck
    worker = threading.Thread(target=sampler.sample, daemon=True)
    worker.start()
    try:
        assert stuck.entered.wait(30)
        series = _samples(sampler)
        assert not stuck.release.is_set()
        assert worker.is_alive()  # the sample is still stuck while the scrape has answered
        assert series["wattvisor_vm_power_watts"]
    finally:
        stuck.release.set()
        worker.join(30)
