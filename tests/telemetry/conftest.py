"""A sampled host with two VMs on synthetic hardware, for exporter tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.synthetic_host import (
    InMemoryVMInventory,
    ManualClock,
    SyntheticDomainStats,
    SyntheticPowercap,
    SyntheticProc,
)
from wattvisor.energy import EnergySampler, VMRecord
from wattvisor.energy.sources import RaplSource, UtilisationModelSource

# The same identifiers are spelled out in the tests that check them.
BUSY_VM = "aaaaaaaa-1111-4111-8111-000000000001"
IDLE_VM = "bbbbbbbb-2222-4222-8222-000000000002"


def sampled_host(tmp_path: Path, *, model: bool = False, twin_rsync: bool = False) -> EnergySampler:
    """Two samples over one 2 s interval: 100 J, busy VM 3x the idle VM, one busy rsync
    (``twin_rsync``: two, of one name)."""
    clock = ManualClock()
    powercap = SyntheticPowercap(tmp_path / "sys")
    powercap.add_zone("intel-rapl:0", "package-0")
    proc = SyntheticProc(tmp_path / "proc")
    proc.add_process(1, "init", ["/sbin/init"], ppid=0)
    proc.add_process(77, "rsync (copy)", ["/usr/bin/rsync", "--secret-arg"])
    if twin_rsync:
        proc.add_process(78, "rsync (copy)", ["/usr/bin/rsync", "--other-arg"])
    stats = SyntheticDomainStats()
    inventory = InMemoryVMInventory(
        [
            VMRecord(BUSY_VM, "instance-busy", "project-a", True, (tmp_path / "share",)),
            VMRecord(IDLE_VM, "instance-idle", "project-b"),
        ]
    )
    stats.set(BUSY_VM, "instance-busy", 0)
    stats.set(IDLE_VM, "instance-idle", 0)
    sampler = EnergySampler(
        UtilisationModelSource(50.0, 150.0) if model else RaplSource(powercap.root),
        inventory=inventory,
        state_file=tmp_path / "state.json",
        domain_stats=stats,
        procfs_root=proc.root,
        clock=clock,
        clock_ticks_per_s=100,
    )
    sampler.sample()
    clock.advance(2.0)
    powercap.add_energy("intel-rapl:0", 100_000_000)
    proc.advance_cpu(160, 40)
    proc.add_cpu(77, 40)
    if twin_rsync:
        proc.add_cpu(78, 40)
    stats.add_cpu(BUSY_VM, 3 * 10**9)
    stats.add_cpu(IDLE_VM, 1 * 10**9)
    sampler.sample()
    return sampler


@pytest.fixture
def sampler(tmp_path: Path) -> EnergySampler:
    return sampled_host(tmp_path)


@pytest.fixture
def model_sampler(tmp_path: Path) -> EnergySampler:
    return sampled_host(tmp_path, model=True)
