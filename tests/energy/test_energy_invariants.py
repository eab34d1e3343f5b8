"""Property-based check of the energy invariants over random histories.

Histories mix busy and idle intervals, counter wraparound (a tiny RAPL range
makes the counter wrap every few samples), VMs starting, stopping, migrating
away and back, and agent restarts. After every sample:

* the host energy of the interval equals what the meter moved, wrap included;
* host = idle + Σ VMs + Σ other processes, per interval and in total (≤ 1%);
* every ``_joules_total`` is monotonic, including across restarts;
* a VM that is not running keeps its last total.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.synthetic_host import (
    InMemoryVMInventory,
    ManualClock,
    SyntheticDomainStats,
    SyntheticPowercap,
    SyntheticProc,
)
from wattvisor.energy import EnergySampler, VMRecord
from wattvisor.energy.sources import RaplSource

MAX_RANGE_UJ = 50_000_000
VMS = [
    ("11111111-0000-4000-8000-000000000001", "vm-libvirt-1", True),
    ("22222222-0000-4000-8000-000000000002", "vm-libvirt-2", True),
    ("33333333-0000-4000-8000-000000000003", "vm-procfs,,odd", False),
]
OTHER_PIDS = [40, 41, 42]

interval = st.tuples(
    st.just("interval"),
    st.integers(min_value=0, max_value=45_000_000),  # µJ, below one counter range
    st.integers(min_value=0, max_value=200),  # busy ticks
    st.integers(min_value=0, max_value=200),  # idle ticks
    st.lists(st.integers(min_value=0, max_value=100), min_size=3, max_size=3),
    st.lists(st.integers(min_value=0, max_value=2 * 10**9), min_size=3, max_size=3),
)
event = st.one_of(
    interval,
    interval,
    interval,
    st.tuples(st.sampled_from(["stop", "start", "away"]), st.integers(min_value=0, max_value=2)),
    st.just(("restart",)),
)


class World:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.clock = ManualClock()
        self.powercap = SyntheticPowercap(base / "sys")
        self.powercap.add_zone(
            "intel-rapl:0",
            "package-0",
            energy_uj=MAX_RANGE_UJ - 1,
            max_energy_range_uj=MAX_RANGE_UJ,
        )
        self.proc = SyntheticProc(base / "proc")
        for pid in OTHER_PIDS:
            self.proc.add_process(pid, f"worker {pid}", ["/bin/worker"])
        self.stats = SyntheticDomainStats()
        self.inventory = InMemoryVMInventory()
        self.state: dict[int, str] = {}
        self.pids: dict[int, int] = {}
        self.next_pid = 1000
        for index in range(len(VMS)):
            self.start(index)

    def sampler(self) -> EnergySampler:
        return EnergySampler(
            RaplSource(self.powercap.root),
            inventory=self.inventory,
            state_file=self.base / "state.json",
            domain_stats=self.stats,
            procfs_root=self.proc.root,
            clock=self.clock,
            clock_ticks_per_s=100,
        )

    def start(self, index: int) -> None:
        if self.state.get(index) == "running":
            return
        uuid, name, libvirt_cpu = VMS[index]
        self.inventory.put(VMRecord(uuid, name.replace(",,", ","), "p", True, (self.base / "s",)))
        pid = self.next_pid
        self.next_pid += 1
        self.proc.add_process(
            pid, "qemu-system-x86", ["qemu-system-x86_64", "-name", f"guest={name}", "-uuid", uuid]
        )
        self.pids[index] = pid
        self.stats.set(uuid, name.replace(",,", ","), 0 if libvirt_cpu else None)
        self.state[index] = "running"

    def stop(self, index: int, *, away: bool) -> None:
        if self.state.get(index) != "running":
            return
        uuid, name, _ = VMS[index]
        self.proc.remove_process(self.pids.pop(index))
        if away:
            self.stats.remove(uuid)
            self.inventory.remove(uuid)
        else:
            self.stats.set(uuid, name, None, active=False)
        self.state[index] = "away" if away else "stopped"

    def advance(self, uj: int, busy: int, idle: int, cpu: list[int], vm_ns: list[int]) -> None:
        self.clock.advance(2.0)
        self.powercap.add_energy("intel-rapl:0", uj)
        self.proc.advance_cpu(busy, idle)
        for pid, ticks in zip(OTHER_PIDS, cpu, strict=True):
            self.proc.add_cpu(pid, ticks)
        for index, ns in enumerate(vm_ns):
            if self.state.get(index) != "running":
                continue
            uuid, _, libvirt_cpu = VMS[index]
            if libvirt_cpu:
                self.stats.add_cpu(uuid, ns)
            else:
                self.proc.add_cpu(self.pids[index], ns // 10**7)


def _totals(snapshot_vms: dict[str, float], host: float, idle: float, other: float) -> None:
    parts = idle + sum(snapshot_vms.values()) + other
    assert parts == pytest.approx(host, rel=0.01, abs=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, min_size=1, max_size=25))
def test_energy_is_conserved_and_counters_only_grow(events: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory(prefix="wattvisor-invariants-") as tmp:
        world = World(Path(tmp))
        sampler = world.sampler()
        sampler.sample()
        last_host = last_idle = last_other = 0.0
        last_vm: dict[str, float] = {}
        pending_uj = 0
        for step in events:
            kind = step[0]
            if kind == "restart":
                sampler = world.sampler()
                sampler.sample()
                pending_uj = 0
                continue
            if kind in ("stop", "away", "start"):
                index = int(step[1])  # type: ignore[call-overload]
                if kind == "start":
                    world.start(index)
                else:
                    world.stop(index, away=kind == "away")
                continue
            _, uj, busy, idle, cpu, vm_ns = step
            world.advance(uj, busy, idle, cpu, vm_ns)  # type: ignore[arg-type]
            pending_uj = uj  # type: ignore[assignment]
            snap = sampler.sample()
            assert snap is not None
            interval_energy = snap.interval
            assert interval_energy.host_joules == pytest.approx(pending_uj / 1e6, abs=1e-6)
            _totals(
                dict(interval_energy.vm_joules),
                interval_energy.host_joules,
                interval_energy.idle_joules,
                interval_energy.other_joules,
            )
            host = snap.host
            _totals(
                {u: v.energy_joules_total for u, v in snap.vms.items()},
                host.energy_joules_total,
                host.idle_energy_joules_total,
                host.other_processes_energy_joules_total,
            )
            assert host.energy_joules_total >= last_host
            assert host.idle_energy_joules_total >= last_idle
            assert host.other_processes_energy_joules_total >= last_other
            for uuid, vm in snap.vms.items():
                assert vm.energy_joules_total >= last_vm.get(uuid, 0.0)
                if not vm.running:
                    assert vm.energy_joules_total == last_vm.get(uuid, 0.0)
                    assert vm.power_watts == 0.0
            assert set(last_vm) <= set(snap.vms)
            last_host, last_idle = host.energy_joules_total, host.idle_energy_joules_total
            last_other = host.other_processes_energy_joules_total
            last_vm = {u: v.energy_joules_total for u, v in snap.vms.items()}
            for index, (uuid, name, _) in enumerate(VMS):
                if world.state.get(index) == "running":
                    share = world.base / "s" / name.replace(",,", ",") / "intel-rapl:0"
                    value = int((share / "energy_uj").read_text())
                    assert value == int(last_vm[uuid] * 1e6) % 262_143_328_850
