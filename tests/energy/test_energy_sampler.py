"""The sampler end to end on synthetic hardware: attribution, counters, shares, snapshots."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from support.synthetic_host import (
    InMemoryVMInventory,
    ManualClock,
    SyntheticDomainStats,
    SyntheticPowercap,
    SyntheticProc,
)
from wattvisor.energy import (
    EnergySampler,
    EnergyStateError,
    VMRecord,
)
from wattvisor.energy.sources import RaplSource, UtilisationModelSource

UUID_A = "aaaaaaaa-0000-4000-8000-000000000001"
UUID_B = "bbbbbbbb-0000-4000-8000-000000000002"
PKG = "intel-rapl:0"


class Host:
    """One synthetic host: RAPL tree, procfs, domain stats, inventory and a manual clock."""

    def __init__(
        self,
        tmp_path: Path,
        powercap: SyntheticPowercap,
        proc: SyntheticProc,
        stats: SyntheticDomainStats,
        clock: ManualClock,
    ) -> None:
        self.tmp_path = tmp_path
        self.powercap = powercap
        self.proc = proc
        self.stats = stats
        self.clock = clock
        self.inventory = InMemoryVMInventory()
        self.share = tmp_path / "share"
        powercap.add_zone(PKG, "package-0", energy_uj=5_000_000)
        proc.add_process(50, "bash", ["/bin/bash"])

    def sampler(self, **kwargs: object) -> EnergySampler:
        return EnergySampler(
            kwargs.pop("source", None) or RaplSource(self.powercap.root),  # type: ignore[arg-type]
            inventory=self.inventory,
            state_file=self.tmp_path / "state" / "energy.json",
            domain_stats=self.stats,
            procfs_root=self.proc.root,
            clock=self.clock,
            clock_ticks_per_s=100,
            **kwargs,  # type: ignore[arg-type]
        )

    def start_vm(
        self,
        uuid: str,
        name: str,
        pid: int,
        *,
        power_metrics: bool = False,
        project: str = "proj-1",
        libvirt_cpu: bool = True,
    ) -> None:
        self.inventory.put(
            VMRecord(uuid, name, project, power_metrics, (self.share,) if power_metrics else ())
        )
        self.proc.add_process(
            pid,
            "qemu-system-x86",
            [
                "/usr/bin/qemu-system-x86_64",
                "-name",
                f"guest={name},debug-threads=on",
                "-uuid",
                uuid,
            ],
        )
        self.stats.set(uuid, name, 0 if libvirt_cpu else None)

    def stop_vm(self, uuid: str, pid: int) -> None:
        self.proc.remove_process(pid)
        dom = self.stats.domains[uuid]
        self.stats.set(uuid, dom.name, None, active=False)

    def interval(
        self,
        joules: float,
        busy: int = 100,
        idle: int = 100,
        cpu: dict[int, int] | None = None,
        vm_ns: dict[str, int] | None = None,
    ) -> None:
        self.clock.advance(2.0)
        self.powercap.add_energy(PKG, int(joules * 1_000_000))
        self.proc.advance_cpu(busy, idle)
        for pid, ticks in (cpu or {}).items():
            self.proc.add_cpu(pid, ticks)
        for uuid, ns in (vm_ns or {}).items():
            self.stats.add_cpu(uuid, ns)


@pytest.fixture
def host(
    tmp_path: Path,
    powercap: SyntheticPowercap,
    proc: SyntheticProc,
    stats: SyntheticDomainStats,
    clock: ManualClock,
) -> Host:
    return Host(tmp_path, powercap, proc, stats, clock)


def test_first_sample_is_only_a_baseline(host: Host) -> None:
    sampler = host.sampler()
    assert sampler.sample() is None
    assert sampler.latest() is None


def test_vm_share_from_libvirt_stats_does_not_count_qemu_again(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200)
    sampler = host.sampler()
    sampler.sample()
    host.interval(100.0, busy=100, idle=100, cpu={50: 100, 200: 300}, vm_ns={UUID_A: 10**9})
    snap = sampler.sample()
    assert snap is not None
    assert snap.host.power_watts == pytest.approx(50.0)
    assert snap.host.idle_power_watts == pytest.approx(25.0)
    vm = snap.vms[UUID_A]
    assert (vm.cpu_source, vm.domain, vm.project) == ("libvirt", "instance-1", "proj-1")
    assert vm.energy_joules_total == pytest.approx(25.0)
    assert snap.interval.process_joules == {50: pytest.approx(25.0)}
    assert [p.pid for p in snap.top_processes] == [50]


def test_virtiofsd_in_the_domain_cgroup_is_not_counted_again(host: Host) -> None:
    """libvirt starts virtiofsd outside QEMU's tree but in the domain's cgroup, so the
    domain's cpu.time already holds its CPU time."""
    domain_cgroup = "0::/machine/qemu-1-instance-1.libvirt-qemu/emulator\n"
    host.proc.add_process(1, "init", ["/sbin/init"], cgroup="/init.scope", ppid=0)
    host.start_vm(UUID_A, "instance-1", 200)
    (host.proc.root / "200" / "cgroup").write_text(domain_cgroup)
    host.proc.add_process(
        300,
        "virtiofsd",
        ["/usr/lib/qemu/virtiofsd", "--fd=3"],
        cgroup="/machine/qemu-1-instance-1.libvirt-qemu/emulator",
    )
    sampler = host.sampler()
    sampler.sample()
    host.interval(100.0, busy=100, idle=100, cpu={50: 100, 300: 100}, vm_ns={UUID_A: 10**9})
    snap = sampler.sample()
    assert snap is not None
    assert 300 not in snap.interval.process_joules
    assert snap.interval.process_joules == {50: pytest.approx(25.0)}
    assert snap.vms[UUID_A].energy_joules_total == pytest.approx(25.0)


def test_virtiofsd_without_a_domain_cgroup_stays_another_process(host: Host) -> None:
    """Where every process shares PID 1's cgroup (no cgroup accounting), nothing can tie a
    helper to a domain, so it is not guessed."""
    host.proc.add_process(1, "init", ["/sbin/init"], cgroup="/", ppid=0)
    host.start_vm(UUID_A, "instance-1", 200)
    (host.proc.root / "200" / "cgroup").write_text("0::/\n")
    host.proc.add_process(300, "virtiofsd", ["/usr/lib/qemu/virtiofsd"], cgroup="/")
    sampler = host.sampler()
    sampler.sample()
    host.interval(100.0, busy=100, idle=100, cpu={50: 100, 300: 100}, vm_ns={UUID_A: 10**9})
    snap = sampler.sample()
    assert snap is not None
    assert 300 in snap.interval.process_joules


def test_vm_without_libvirt_cpu_time_uses_its_qemu_process_tree(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200, libvirt_cpu=False)
    host.proc.add_process(201, "qemu-helper", ["helper"], ppid=200)
    sampler = host.sampler()
    sampler.sample()
    host.interval(60.0, busy=150, idle=50, cpu={50: 50, 200: 80, 201: 20})
    snap = sampler.sample()
    assert snap is not None
    vm = snap.vms[UUID_A]
    assert vm.cpu_source == "procfs"
    assert vm.energy_joules_total == pytest.approx(60.0 * 0.75 * 100 / 150)
    assert set(snap.interval.process_joules) == {50}


def test_qemu_found_by_name_alone_is_matched_to_the_inventory(host: Host) -> None:
    host.inventory.put(VMRecord(UUID_B, "named-only", "p"))
    host.proc.add_process(300, "qemu-kvm", ["/usr/libexec/qemu-kvm", "-name", "guest=named-only"])
    sampler = host.sampler()
    sampler.sample()
    host.interval(10.0, cpu={300: 10})
    snap = sampler.sample()
    assert snap is not None
    assert snap.vms[UUID_B].cpu_source == "procfs"
    assert snap.vms[UUID_B].energy_joules_total == pytest.approx(5.0)


def test_domain_unknown_to_inventory_counts_as_host_processes(host: Host) -> None:
    host.stats.set(UUID_B, "foreign", 0)
    host.proc.add_process(
        300, "qemu-system-x86",
        ["/usr/bin/qemu-system-x86_64", "-name", "guest=foreign", "-uuid", UUID_B],
    )  # fmt: skip
    sampler = host.sampler()
    sampler.sample()
    host.interval(10.0, cpu={300: 50}, vm_ns={UUID_B: 5 * 10**8})
    snap = sampler.sample()
    assert snap is not None
    assert snap.vms == {} and snap.projects == {}
    assert snap.interval.process_joules == {300: pytest.approx(5.0)}
    assert snap.host.other_processes_energy_joules_total == pytest.approx(5.0)


def test_domain_listed_as_not_wattvisors_is_never_a_vm(host: Host) -> None:
    """Someone else's guest: its QEMU is a host process, and a counter an older version
    kept for it (by name and uuid) is dropped."""
    host.start_vm(UUID_A, "instance-1", 200)
    host.start_vm(UUID_B, "their-db", 300, project="")
    sampler = host.sampler()
    sampler.sample()
    host.interval(20.0, cpu={300: 100}, vm_ns={UUID_A: 10**9, UUID_B: 10**9})
    older = sampler.sample()
    assert older is not None and set(older.vms) == {UUID_A, UUID_B}  # as before the upgrade

    host.inventory.put(VMRecord(UUID_B, "their-db", managed=False))
    host.interval(20.0, busy=150, idle=50, cpu={50: 50, 300: 100},
                  vm_ns={UUID_A: 10**9, UUID_B: 10**9})  # fmt: skip
    snap = sampler.sample()
    assert snap is not None
    assert set(snap.vms) == {UUID_A} and set(snap.projects) == {"proj-1"}
    # 15 J active over 2 s (VM A) + 0.5 s (bash) + 1 s (their QEMU, from procfs).
    assert snap.interval.vm_joules == {UUID_A: pytest.approx(15.0 * 1 / 2.5)}
    assert snap.interval.process_joules == {50: pytest.approx(3.0), 300: pytest.approx(6.0)}
    assert sampler.vm_history(UUID_B) == []
    state = (host.tmp_path / "state" / "energy.json").read_text()
    assert UUID_B not in state and "their-db" not in state


def test_restarted_domain_counts_its_new_cpu_time(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200)
    host.stats.add_cpu(UUID_A, 50 * 10**9)
    sampler = host.sampler()
    sampler.sample()
    host.stats.set(UUID_A, "instance-1", 10**9)  # cpu.time restarted from zero
    host.interval(10.0, cpu={50: 0})
    snap = sampler.sample()
    assert snap is not None
    assert snap.vms[UUID_A].energy_joules_total == pytest.approx(5.0)


def test_vm_that_stops_keeps_its_total_until_deleted(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200, power_metrics=True)
    sampler = host.sampler()
    sampler.sample()
    host.interval(20.0, vm_ns={UUID_A: 10**9})
    first = sampler.sample()
    assert first is not None
    total = first.vms[UUID_A].energy_joules_total
    assert total > 0
    host.stop_vm(UUID_A, 200)
    host.interval(20.0, cpu={50: 100})
    stopped = sampler.sample()
    assert stopped is not None
    assert stopped.vms[UUID_A].energy_joules_total == total
    assert (stopped.vms[UUID_A].power_watts, stopped.vms[UUID_A].running) == (0.0, False)
    assert (host.share / "instance-1" / "intel-rapl:0" / "energy_uj").exists()

    # Deleted while the inventory and libvirt still list it for one more sample.
    sampler.forget_vm(UUID_A)
    assert not (host.share / "instance-1").exists()
    host.interval(20.0, cpu={50: 100})
    lingering = sampler.sample()
    assert lingering is not None
    assert UUID_A not in lingering.vms
    assert not (host.share / "instance-1").exists()
    host.inventory.remove(UUID_A)
    host.stats.remove(UUID_A)
    host.interval(20.0, cpu={50: 100})
    after = sampler.sample()
    assert after is not None
    assert UUID_A not in after.vms
    assert sampler.vm_history(UUID_A) == []
    assert sampler.forgotten_vms == 0  # listed nowhere any more: nothing kept about it


def test_migration_away_and_back_continues_the_counter(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200)
    sampler = host.sampler()
    sampler.sample()
    host.interval(20.0, vm_ns={UUID_A: 10**9})
    before = sampler.sample()
    assert before is not None
    total = before.vms[UUID_A].energy_joules_total
    # Migrated away: the domain, its process and its inventory entry are gone from this host.
    host.proc.remove_process(200)
    host.stats.remove(UUID_A)
    host.inventory.remove(UUID_A)
    host.interval(20.0, cpu={50: 100})
    away = sampler.sample()
    assert away is not None
    assert away.vms[UUID_A].energy_joules_total == total
    # ... and back, with a fresh cpu.time.
    host.start_vm(UUID_A, "instance-1", 210)
    host.stats.set(UUID_A, "instance-1", 2 * 10**9)
    host.interval(20.0, cpu={50: 0})
    back = sampler.sample()
    assert back is not None
    assert back.vms[UUID_A].energy_joules_total == pytest.approx(total + 10.0)


def test_totals_survive_an_agent_restart(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200)
    first = host.sampler()
    first.sample()
    host.interval(40.0, vm_ns={UUID_A: 10**9}, cpu={50: 100})
    snap = first.sample()
    assert snap is not None
    host_total, vm_total = snap.host.energy_joules_total, snap.vms[UUID_A].energy_joules_total

    second = host.sampler()
    assert second.sample() is None
    host.interval(40.0, vm_ns={UUID_A: 10**9}, cpu={50: 100})
    again = second.sample()
    assert again is not None
    assert again.host.energy_joules_total == pytest.approx(host_total + 40.0)
    assert again.vms[UUID_A].energy_joules_total == pytest.approx(vm_total + 10.0)


def test_rapl_reset_by_reboot_neither_jumps_nor_goes_back(host: Host) -> None:
    host.powercap.set_energy(PKG, 200_000_000_000)
    first = host.sampler()
    first.sample()
    host.interval(30.0)
    snap = first.sample()
    assert snap is not None
    total = snap.host.energy_joules_total
    host.powercap.set_energy(PKG, 1_000)  # reboot: the counter starts again near zero
    second = host.sampler()
    second.sample()
    host.interval(12.0)
    again = second.sample()
    assert again is not None
    assert again.host.energy_joules_total == pytest.approx(total + 12.0)


def test_guest_share_is_the_vm_total_wrapping_like_rapl(host: Host) -> None:
    from wattvisor.energy.guest_share import GuestShareWriter

    host.start_vm(UUID_A, "instance-1", 200, power_metrics=True)
    sampler = host.sampler(guest_shares=GuestShareWriter(max_energy_range_uj=30_000_000))
    created = sampler.prepare_guest_share(host.inventory.vms()[0])
    energy_file = host.share / "instance-1" / "intel-rapl:0" / "energy_uj"
    assert created == [host.share / "instance-1"]
    assert energy_file.read_text() == "0\n"
    sampler.sample()
    readings = []
    for _ in range(4):
        host.interval(40.0, busy=100, idle=0, vm_ns={UUID_A: 10**9})
        snap = sampler.sample()
        assert snap is not None
        readings.append(int(energy_file.read_text()))
        total_uj = int(snap.vms[UUID_A].energy_joules_total * 1_000_000)
        assert readings[-1] == total_uj % 30_000_000
    assert readings == [10_000_000, 20_000_000, 0, 10_000_000]


def test_model_source_snapshot_is_an_estimate(host: Host) -> None:
    sampler = host.sampler(source=UtilisationModelSource(idle_watts=40.0, max_watts=140.0))
    sampler.sample()
    host.interval(0.0, busy=50, idle=150, cpu={50: 50})
    snap = sampler.sample()
    assert snap is not None
    assert snap.source == "estimate" and snap.is_estimate
    assert snap.host.power_watts == pytest.approx(40.0 + 100.0 * 0.25)


def test_failed_reading_skips_one_interval_and_counters_resume(host: Host) -> None:
    sampler = host.sampler()
    sampler.sample()
    host.interval(10.0)
    first = sampler.sample()
    assert first is not None
    host.powercap.energy_file(PKG).unlink()
    host.clock.advance(2.0)
    assert sampler.sample() is None
    assert sampler.latest() is first
    host.powercap.set_energy(PKG, 1_000_000)
    host.clock.advance(2.0)
    assert sampler.sample() is None  # new baseline
    host.interval(4.0)
    resumed = sampler.sample()
    assert resumed is not None
    assert resumed.host.energy_joules_total == pytest.approx(14.0)


def test_corrupt_state_file_is_reported_and_left_alone(host: Host) -> None:
    state = host.tmp_path / "state" / "energy.json"
    state.parent.mkdir()
    state.write_text("{not json")
    with pytest.raises(EnergyStateError, match="move it aside"):
        host.sampler()
    assert state.read_text() == "{not json"


def test_history_gives_recent_points_per_vm_project_and_host(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200)
    sampler = host.sampler(history_samples=3)
    sampler.sample()
    for _ in range(5):
        host.interval(10.0, vm_ns={UUID_A: 10**9})
        sampler.sample()
    points = sampler.vm_history(UUID_A.upper())
    assert len(points) == 3
    assert [p.energy_joules_total for p in points] == pytest.approx([15.0, 20.0, 25.0])
    assert all(p.power_watts == pytest.approx(2.5) for p in points)
    assert len(sampler.project_history("proj-1", limit=2)) == 2
    assert [p.energy_joules_total for p in sampler.host_history()] == pytest.approx(
        [30.0, 40.0, 50.0]
    )
    assert sampler.vm_history("unknown") == []


def test_top_processes_are_bounded(host: Host) -> None:
    for pid in range(100, 140):
        host.proc.add_process(pid, f"worker-{pid}", ["/bin/worker"])
    sampler = host.sampler(top_processes=5)
    sampler.sample()
    host.interval(10.0, cpu={pid: pid for pid in range(100, 140)})
    snap = sampler.sample()
    assert snap is not None
    assert [p.pid for p in snap.top_processes] == [139, 138, 137, 136, 135]


def test_background_thread_samples_on_its_own(host: Host) -> None:
    sampler = EnergySampler(
        UtilisationModelSource(10.0, 20.0),
        inventory=host.inventory,
        state_file=host.tmp_path / "bg.json",
        procfs_root=host.proc.root,
        interval_s=0.05,
    )
    sampler.start()
    try:
        deadline = time.monotonic() + 20
        while sampler.latest() is None and time.monotonic() < deadline:
            host.proc.advance_cpu(1, 1)
            time.sleep(0.02)
        assert sampler.running
    finally:
        sampler.stop()
    assert sampler.latest() is not None
    assert not sampler.running


def test_sampler_from_settings_uses_configured_roots_and_state(host: Host) -> None:
    from wattvisor.config.settings import Settings

    settings = Settings(
        data_dir=host.tmp_path / "data",
        energy={
            "source": "auto",
            "powercap_root": host.powercap.root,
            "procfs_root": host.proc.root,
            "interval_s": 5,
            "top_processes": 3,
        },
    )
    sampler = EnergySampler.from_settings(settings, inventory=host.inventory)
    assert sampler.source_label == "rapl"
    assert "energy source (auto): RAPL powercap" in sampler.explanation
    assert (sampler.interval_s, sampler.top_processes) == (5, 3)
    sampler.sample()
    host.clock.advance(2.0)
    host.powercap.add_energy(PKG, 1_000_000)
    host.proc.advance_cpu(1, 1)
    time.sleep(0.01)
    assert sampler.sample() is not None
    assert (host.tmp_path / "data" / "energy-state.json").is_file()


def test_real_proc_of_this_machine_is_attributed_and_conserved(tmp_path: Path) -> None:
    sampler = EnergySampler(
        UtilisationModelSource(idle_watts=30.0, max_watts=90.0),
        inventory=InMemoryVMInventory(),
        state_file=tmp_path / "state.json",
        procfs_root=Path("/proc"),
    )
    sampler.sample()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        sum(range(10_000))  # use some CPU so this process shows up
    snap = sampler.sample()
    assert snap is not None
    interval = snap.interval
    parts = interval.idle_joules + sum(interval.vm_joules.values()) + interval.other_joules
    assert parts == pytest.approx(interval.host_joules, rel=0.01)
    assert 30.0 <= snap.host.power_watts <= 90.0
    assert os.getpid() in {p.pid for p in snap.top_processes}


def test_preparing_a_forgotten_vm_again_brings_it_back(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200, power_metrics=True)
    sampler = host.sampler()
    sampler.forget_vm(UUID_A)
    sampler.prepare_guest_share(host.inventory.vms()[0])
    sampler.sample()
    host.interval(20.0, vm_ns={UUID_A: 10**9})
    snap = sampler.sample()
    assert snap is not None
    assert snap.vms[UUID_A].energy_joules_total == pytest.approx(10.0)


def test_restarted_vm_is_followed_to_its_new_qemu_process(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200, libvirt_cpu=False)
    sampler = host.sampler()
    sampler.sample()
    host.interval(10.0, cpu={200: 50, 50: 50})
    assert sampler.sample() is not None
    host.proc.remove_process(200)
    host.proc.add_process(
        260, "qemu-system-x86",
        ["/usr/bin/qemu-system-x86_64", "-name", "guest=instance-1", "-uuid", UUID_A],
    )  # fmt: skip
    host.interval(10.0, cpu={260: 30, 50: 10})
    snap = sampler.sample()
    assert snap is not None
    assert snap.vms[UUID_A].cpu_source == "procfs"
    # 5 J active; the new QEMU used 30 ticks of its own since it started, bash 10.
    assert snap.interval.vm_joules[UUID_A] == pytest.approx(5.0 * 30 / 40)
    assert set(snap.interval.process_joules) == {50}


class _FailingOnce(SyntheticDomainStats):
    def __init__(self, inner: SyntheticDomainStats) -> None:
        super().__init__()
        self.domains = inner.domains
        self.fail = False

    def domain_cpu(self) -> dict[str, object] | None:  # type: ignore[override]
        if self.fail:
            self.fail = False
            raise RuntimeError("libvirt went away mid-sample")
        return super().domain_cpu()  # type: ignore[return-value]


def test_cpu_time_used_before_a_failed_sample_is_still_counted(host: Host) -> None:
    """A sample that fails after reading /proc must not make the next one miss CPU time."""
    failing = _FailingOnce(host.stats)
    sampler = EnergySampler(
        RaplSource(host.powercap.root),
        inventory=host.inventory,
        state_file=host.tmp_path / "state" / "energy.json",
        domain_stats=failing,
        procfs_root=host.proc.root,
        clock=host.clock,
        clock_ticks_per_s=100,
    )
    sampler.sample()
    host.interval(10.0, cpu={50: 40})
    failing.fail = True
    with pytest.raises(RuntimeError):
        sampler.sample()
    host.interval(10.0)  # bash sleeps from here on
    snap = sampler.sample()
    assert snap is not None
    assert snap.interval.process_joules == {50: pytest.approx(snap.interval.active_joules)}
    assert snap.interval.active_joules > 0


def test_a_vm_record_changed_in_the_inventory_shows_from_the_next_sample(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200, power_metrics=True, project="p1")
    sampler = host.sampler()
    sampler.sample()
    host.interval(10.0, vm_ns={UUID_A: 10**9})
    first = sampler.sample()
    assert first is not None and first.vms[UUID_A].project == "p1"
    host.inventory.put(VMRecord(UUID_A, "instance-1", "p2", True, (host.share,)))
    host.interval(10.0, vm_ns={UUID_A: 10**9})
    later = sampler.sample()
    assert later is not None and later.vms[UUID_A].project == "p2"
    assert set(later.projects) == {"p2"}


def test_a_vm_started_after_sampling_began_gets_its_counter_and_share(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200, power_metrics=True)
    sampler = host.sampler()
    sampler.sample()
    host.interval(10.0, vm_ns={UUID_A: 10**9})
    sampler.sample()
    host.start_vm(UUID_B, "instance-2", 201, power_metrics=True)
    host.interval(10.0, vm_ns={UUID_A: 10**9, UUID_B: 10**9})
    snap = sampler.sample()
    assert snap is not None and snap.vms[UUID_B].energy_joules_total > 0
    counter = host.share / "instance-2" / "intel-rapl:0" / "energy_uj"
    assert int(counter.read_text()) == int(snap.vms[UUID_B].energy_joules_total * 1_000_000)


def test_a_vm_migrated_here_continues_its_counter_and_its_project_counts_only_this_host(
    host: Host,
) -> None:
    host.start_vm(UUID_A, "instance-1", 200, power_metrics=True, project="proj-m")
    host.start_vm(UUID_B, "instance-2", 201, project="proj-m")
    sampler = host.sampler()
    # It used 1234.5 J on its source before it left; its counter starts there.
    sampler.arrive_vm(host.inventory.vms()[0], 1234.5)
    counter = host.share / "instance-1" / "intel-rapl:0" / "energy_uj"
    assert int(counter.read_text()) == 1_234_500_000
    assert sampler.vm_total(UUID_A) == pytest.approx(1234.5)
    sampler.sample()
    seen = [1_234_500_000]
    for _ in range(3):
        host.interval(20.0, busy=100, idle=0, vm_ns={UUID_A: 10**9, UUID_B: 10**9})
        snap = sampler.sample()
        assert snap is not None
        seen.append(int(counter.read_text()))
    assert seen == sorted(seen) and seen[-1] > seen[0]
    here = snap.vms[UUID_A].energy_joules_total - 1234.5
    assert here > 0
    assert seen[-1] == int(snap.vms[UUID_A].energy_joules_total * 1_000_000)
    # The project's total on this host is what its VMs used here: no source energy.
    project = snap.projects["proj-m"].energy_joules_total
    assert project == pytest.approx(here + snap.vms[UUID_B].energy_joules_total)
    # A second hand-over with a lower total (a late, stale answer) never lowers it.
    sampler.arrive_vm(host.inventory.vms()[0], 10.0)
    assert sampler.vm_total(UUID_A) == pytest.approx(snap.vms[UUID_A].energy_joules_total)
    # The carried part survives a restart of the sampler (its state file).
    again = host.sampler()
    assert again.vm_total(UUID_A) == pytest.approx(snap.vms[UUID_A].energy_joules_total)


def test_a_negative_handed_over_total_is_refused(host: Host) -> None:
    host.start_vm(UUID_A, "instance-1", 200, power_metrics=True)
    with pytest.raises(ValueError, match=r"-1\.0"):
        host.sampler().arrive_vm(host.inventory.vms()[0], -1.0)
