"""Prometheus exporter of the energy sampler's latest snapshot.

A scrape renders the snapshot the sampler last published; it never starts a
sample and never calls libvirt, so it costs the same whatever the host is doing.
Names follow Prometheus conventions (base units, ``_total`` counters); every
series that may come from the utilisation model carries ``source`` so an
estimate is always recognisable. scaphandre-named series are an opt-in extra for
existing dashboards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from wattvisor.energy.snapshot import EnergySnapshot

_SCAPH_VALUE_SOURCE = {"rapl": "powercap_rapl", "scaphandre": "scaphandre", "estimate": "estimate"}


class SnapshotProvider(Protocol):
    """What the exporter reads: the sampler satisfies it."""

    @property
    def source_label(self) -> str: ...

    def latest(self) -> EnergySnapshot | None: ...


class EnergyCollector(Collector):
    """Renders one snapshot per scrape; the series set is bounded by VMs + top-N processes."""

    def __init__(
        self,
        provider: SnapshotProvider,
        *,
        compat_series: bool = False,
        process_pids: bool = False,
    ) -> None:
        self._provider = provider
        self._compat = compat_series
        self._pids = process_pids

    def describe(self) -> list[Metric]:
        # Returning nothing keeps registration from calling collect() early.
        return []

    def collect(self) -> Iterator[Metric]:
        provider = self._provider
        yield InfoMetricFamily(
            "wattvisor_energy_source",
            "Where host energy comes from: rapl, scaphandre, or estimate (CPU-utilisation model).",
            value={"source": provider.source_label},
        )
        snap = provider.latest()
        if snap is None:
            return
        yield from self._host(snap)
        yield from self._vms(snap)
        processes = _by_pid(snap) if self._pids else _by_comm(snap)
        yield from self._processes(snap, processes)
        if self._compat:
            yield from self._compatibility(snap, processes)

    @staticmethod
    def _host(snap: EnergySnapshot) -> Iterator[Metric]:
        src = [snap.source]
        host = snap.host
        for name, doc, total in (
            (
                "wattvisor_host_energy_joules",
                "Energy used by the whole host.",
                host.energy_joules_total,
            ),
            (
                "wattvisor_host_idle_energy_joules",
                "Share of host energy not attributed to any workload (idle CPU time).",
                host.idle_energy_joules_total,
            ),
            (
                "wattvisor_host_other_processes_energy_joules",
                "Energy attributed to host processes that are not VMs.",
                host.other_processes_energy_joules_total,
            ),
        ):
            counter = CounterMetricFamily(name, doc, labels=["source"])
            counter.add_metric(src, total)
            yield counter
        for name, doc, value in (
            (
                "wattvisor_host_power_watts",
                "Host power over the last sample interval.",
                host.power_watts,
            ),
            (
                "wattvisor_host_idle_power_watts",
                "Idle part of host power over the last interval.",
                host.idle_power_watts,
            ),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["source"])
            gauge.add_metric(src, value)
            yield gauge
        busy = GaugeMetricFamily(
            "wattvisor_host_cpu_busy_ratio", "Busy share of host CPU time over the last interval."
        )
        busy.add_metric([], snap.busy_fraction)
        yield busy
        stamp = GaugeMetricFamily(
            "wattvisor_energy_sample_timestamp_seconds",
            "Unix time of the sample these figures come from (detects a stalled sampler).",
        )
        stamp.add_metric([], snap.taken_at)
        yield stamp

    @staticmethod
    def _vms(snap: EnergySnapshot) -> Iterator[Metric]:
        labels = ["instance", "domain", "project", "source"]
        energy = CounterMetricFamily(
            "wattvisor_vm_energy_joules", "Energy attributed to a VM on this host.", labels=labels
        )
        power = GaugeMetricFamily(
            "wattvisor_vm_power_watts", "VM power over the last sample interval.", labels=labels
        )
        for vm in snap.vms.values():
            values = [vm.uuid, vm.domain, vm.project, snap.source]
            energy.add_metric(values, vm.energy_joules_total)
            power.add_metric(values, vm.power_watts)
        yield energy
        yield power
        project_power = GaugeMetricFamily(
            "wattvisor_project_power_watts",
            "Sum of a project's VM power on this host.",
            labels=["project", "source"],
        )
        project_energy = CounterMetricFamily(
            "wattvisor_project_energy_joules",
            "Sum of a project's VM energy totals on this host.",
            labels=["project", "source"],
        )
        for project in snap.projects.values():
            project_power.add_metric([project.project, snap.source], project.power_watts)
            project_energy.add_metric([project.project, snap.source], project.energy_joules_total)
        yield project_power
        yield project_energy

    def _processes(
        self, snap: EnergySnapshot, processes: list[tuple[str, str, float]]
    ) -> Iterator[Metric]:
        labels = ["pid", "comm", "source"] if self._pids else ["comm", "source"]
        gauge = GaugeMetricFamily(
            "wattvisor_process_power_watts",
            "Power of the most power-hungry non-VM host processes (top N only"
            + ("" if self._pids else ", summed by command name")
            + ").",
            labels=labels,
        )
        for pid, comm, watts in processes:
            values = [pid, comm, snap.source] if self._pids else [comm, snap.source]
            gauge.add_metric(values, watts)
        yield gauge

    @staticmethod
    def _compatibility(
        snap: EnergySnapshot, processes: list[tuple[str, str, float]]
    ) -> Iterator[Metric]:
        value_source = _SCAPH_VALUE_SOURCE.get(snap.source, snap.source)
        host = GaugeMetricFamily(
            "scaph_host_power_microwatts",
            "Power measurement on the whole host, in microwatts (scaphandre-compatible).",
            labels=["value_source"],
        )
        host.add_metric([value_source], snap.host.power_watts * 1e6)
        yield host
        process = GaugeMetricFamily(
            "scaph_process_power_consumption_microwatts",
            "Power of a process, in microwatts (scaphandre-compatible; VMs as qemu processes).",
            labels=["pid", "exe", "cmdline", "vmname"],
        )
        for pid, comm, watts in processes:
            process.add_metric([pid, comm, comm, ""], watts * 1e6)
        for vm in snap.vms.values():
            if vm.running:
                # scaphandre renders argv without separators; OpenNebula greps nameguest=NAME,
                cmdline = f"qemu-system-x86_64-nameguest={vm.domain},debug-threads=on-uuid{vm.uuid}"
                process.add_metric(
                    ["", "qemu-system-x86_64", cmdline, vm.domain], vm.power_watts * 1e6
                )
        yield process
        vm_gauge = GaugeMetricFamily(
            "wattvisor_vm_power_consumption_uW",
            "VM power in microwatts (OpenNebula-style gauge).",
            labels=["instance", "domain", "project", "source"],
        )
        for vm in snap.vms.values():
            vm_gauge.add_metric([vm.uuid, vm.domain, vm.project, snap.source], vm.power_watts * 1e6)
        yield vm_gauge


def _by_pid(snap: EnergySnapshot) -> list[tuple[str, str, float]]:
    return [(str(p.pid), p.comm, p.power_watts) for p in snap.top_processes]


def _by_comm(snap: EnergySnapshot) -> list[tuple[str, str, float]]:
    """Top processes summed by command name, so that leaving out the pid keeps series unique."""
    watts: dict[str, float] = {}
    for top in snap.top_processes:
        watts[top.comm] = watts.get(top.comm, 0.0) + top.power_watts
    return [("", comm, value) for comm, value in watts.items()]


def make_metrics_registry(
    provider: SnapshotProvider,
    *,
    compat_series: bool = False,
    process_pids: bool = False,
    extra: Sequence[Collector] = (),
) -> CollectorRegistry:
    """A registry holding only wattvisor's energy series (no process/GC defaults).

    ``process_pids`` labels the top processes with their pids. It is off by default: a pid
    is a new series whenever a process restarts (churn in Prometheus' index for no added
    meaning), and it tells whoever can scrape which pid to look at. ``extra`` collectors
    add series about the host itself (``wattvisor_host_info``).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        EnergyCollector(provider, compat_series=compat_series, process_pids=process_pids)
    )
    for collector in extra:
        registry.register(collector)
    return registry
