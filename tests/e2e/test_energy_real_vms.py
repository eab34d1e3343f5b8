"""End to end: energy attribution between two real TCG guests, read back by the guest.

Real libvirtd (``qemu:///system``), real ``/proc`` for host CPU time, real
``cpu.time`` from libvirt's bulk stats; the only fake is the RAPL powercap tree
this machine lacks, written in the kernel's layout and advanced by a thread at
a known power, like the hardware counter. One guest spins a CPU in its init,
the other sleeps. Over a window that starts after both booted, the busy guest
must get at least five times the idle guest's energy, the host's energy must
be fully accounted for (idle + VMs + other processes), and the busy guest must
see its own ``energy_uj`` grow through its read-only virtiofs share.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from support.guest_domains import marker_fields, read_console, unique_domain_name, wait_for_marker
from support.synthetic_host import REAL_MAX_ENERGY_RANGE_UJ, InMemoryVMInventory, SyntheticPowercap
from wattvisor.config import HostSettings
from wattvisor.energy import (
    EnergySampler,
    EnergySnapshot,
    LibvirtDomainCpuStats,
    VMRecord,
)
from wattvisor.energy.sources import RaplSource
from wattvisor.guest import Domain, MemoryBacking, Serial
from wattvisor.host.driver import DomainNotFound, HostDriver
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

SYSTEM_URI = "qemu:///system"
TAG = "wvenergy"
PACKAGE = "intel-rapl:0"
GUEST_FILE = f"{PACKAGE}/energy_uj"
METER_WATTS = 50.0
#: The fake package counter starts this many joules below its wrap, so the window crosses it.
JOULES_BEFORE_WRAP = 200.0
SAMPLE_INTERVAL_S = 1.0
WINDOW_SAMPLES = 15
READ_INTERVAL_S = 2
BOOT_TIMEOUT_S = 180.0
WINDOW_TIMEOUT_S = 180.0


class PowerMeter:
    """Advances a fake RAPL package counter at a constant power, as the hardware does.

    The increment is computed from elapsed monotonic time, so the rate stays
    exact however late the thread is scheduled; ``added_uj`` is the exact total.
    """

    def __init__(self, powercap: SyntheticPowercap, key: str, watts: float) -> None:
        self.powercap = powercap
        self.key = key
        self.watts = watts
        self.added_uj = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-rapl", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(0.05):
            due = round((time.monotonic() - started) * self.watts * 1e6)
            step = due - self.added_uj
            if step > 0:
                self.powercap.add_energy(self.key, step)
                self.added_uj = due

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)
        assert not self._thread.is_alive(), "the fake RAPL meter thread did not stop"


@dataclass(frozen=True)
class Guest:
    """A defined guest: what the energy inventory knows about it, and its serial console."""

    record: VMRecord
    console: Path


class Host:
    """The host driver plus every guest this test defined, removed in teardown."""

    def __init__(self, driver: HostDriver, share_dir: Path, tmp: Path) -> None:
        self.driver = driver
        self.share_dir = share_dir
        self.tmp = tmp
        self.names: list[str] = []

    def define_guest(self, cmdline: str, image: GuestImage) -> Guest:
        """Define a power-metrics guest with its read-only share, shared memory and a console."""
        name = unique_domain_name("wvenergy")
        self.names.append(name)
        record = VMRecord(
            uuid=str(uuid.uuid4()),
            domain=name,
            project="acceptance",
            power_metrics=True,
            share_dirs=(self.share_dir,),
        )
        console = self.tmp / f"{name}.log"
        domain = Domain(
            name=name,
            uuid=record.uuid,
            memory_mib=256,
            vcpus=1,
            virt_type="qemu",
            machine="pc",
            kernel=str(image.kernel),
            initrd=str(image.initrd),
            cmdline=cmdline,
            memory_backing=MemoryBacking(source_type="memfd", access_mode="shared"),
        )
        domain.add_device(Serial(type="file", source_path=str(console)))
        for device in self.driver.share_devices(self.driver.prepare_shares(name)):
            domain.add_device(device)
        self.driver.define(domain)
        return Guest(record, console)

    def remove_all(self) -> None:
        """Undefine every guest and take its share mounts down; tries all before failing."""
        errors: list[str] = []
        for name in self.names:
            try:
                try:
                    self.driver.undefine(name)
                except DomainNotFound:  # its share was prepared, the definition failed
                    self.driver.shares.release(name)
                    self.driver.shares.discard_data(name)
            except Exception as exc:
                errors.append(f"{name}: {exc!r}")
        self.names.clear()
        assert not errors, f"cleanup failed: {errors}"


@pytest.fixture
def host(libvirt_system: libvirt.virConnect, world_readable_tmp: Path) -> Iterator[Host]:
    share_dir = world_readable_tmp / "scaphandre"
    share_dir.mkdir()
    driver = HostDriver(
        HostSettings(virt_type="qemu", share_local_fs={str(share_dir): TAG}),
        world_readable_tmp / "data",
        uri=SYSTEM_URI,
    )
    host = Host(driver, share_dir, world_readable_tmp)
    try:
        yield host
    finally:
        try:
            host.remove_all()
        finally:
            driver.close()


@pytest.fixture
def powercap(tmp_path: Path) -> SyntheticPowercap:
    tree = SyntheticPowercap(tmp_path / "sys")
    start = REAL_MAX_ENERGY_RANGE_UJ - round(JOULES_BEFORE_WRAP * 1e6)
    tree.add_zone(PACKAGE, "package-0", energy_uj=start)
    tree.add_zone(f"{PACKAGE}:0", "core", energy_uj=0)
    return tree


@pytest.fixture
def inventory() -> InMemoryVMInventory:
    return InMemoryVMInventory()


@pytest.fixture
def sampler(
    libvirt_system: libvirt.virConnect,
    powercap: SyntheticPowercap,
    inventory: InMemoryVMInventory,
    tmp_path: Path,
) -> Iterator[EnergySampler]:
    """RAPL from the fake tree, CPU time from the real /proc and the real libvirtd."""
    energy = EnergySampler(
        RaplSource(powercap.root),
        inventory=inventory,
        state_file=tmp_path / "energy-state.json",
        domain_stats=LibvirtDomainCpuStats(libvirt_system),
        interval_s=SAMPLE_INTERVAL_S,
    )
    try:
        yield energy
    finally:
        energy.stop()


def _guest_reads(console: Path) -> list[int]:
    values: list[int] = []
    for line in read_console(console).splitlines():
        if line.startswith("WV-READ ") and "n=tick" in line:
            fields = marker_fields(line.rstrip("\r"))
            if fields.get("file") == GUEST_FILE:
                values.append(int(fields["value"]))
    return values


def _wait_for_samples(energy: EnergySampler, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(energy.host_history()) < count:
        assert energy.running, "the energy sampler thread died"
        assert time.monotonic() < deadline, (
            f"only {len(energy.host_history())} of {count} energy samples in {timeout_s:.0f} s"
        )
        time.sleep(0.2)


def _wait_for_growing_reads(console: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(set(v for v in _guest_reads(console) if v > 0)) < 2:
        assert time.monotonic() < deadline, (
            f"the busy guest printed no two different non-zero readings of {GUEST_FILE} "
            f"in {timeout_s:.0f} s; its console ends with:\n"
            + "\n".join(read_console(console).splitlines()[-20:])
        )
        time.sleep(0.5)


def _vm_joules(snapshot: EnergySnapshot, vm_uuid: str) -> float:
    vm = snapshot.vms.get(vm_uuid.lower())
    return vm.energy_joules_total if vm is not None else 0.0


def test_busy_guest_gets_most_energy_totals_are_conserved_and_guest_reads_its_counter(
    host: Host,
    sampler: EnergySampler,
    inventory: InMemoryVMInventory,
    powercap: SyntheticPowercap,
    guest_image: GuestImage,
) -> None:
    busy = host.define_guest(
        guest_image.cmdline("busy", tag=TAG, file=GUEST_FILE, interval=READ_INTERVAL_S),
        guest_image,
    )
    idle = host.define_guest(guest_image.cmdline("idle"), guest_image)
    for guest in (busy, idle):
        inventory.put(guest.record)
        [share_dir] = sampler.prepare_guest_share(guest.record)
        assert (share_dir / GUEST_FILE).read_text() == "0\n"
        host.driver.start(guest.record.uuid)
    wait_for_marker(busy.console, "WV-MOUNTED", BOOT_TIMEOUT_S)
    wait_for_marker(busy.console, "WV-BUSY", BOOT_TIMEOUT_S)
    wait_for_marker(idle.console, "WV-IDLE", BOOT_TIMEOUT_S)

    # Baseline while the meter is still, so every joule it adds later is accounted.
    meter = PowerMeter(powercap, PACKAGE, METER_WATTS)
    assert sampler.sample() is None
    meter.start()
    try:
        sampler.start()
        _wait_for_samples(sampler, 1, WINDOW_TIMEOUT_S)
        first = sampler.latest()
        assert first is not None
        _wait_for_samples(sampler, 1 + WINDOW_SAMPLES, WINDOW_TIMEOUT_S)
        _wait_for_growing_reads(busy.console, WINDOW_TIMEOUT_S)
    finally:
        meter.stop()
        sampler.stop()
    last = sampler.sample()  # reads the meter's final value
    assert last is not None

    # Window from the first to the last snapshot: both guests were up throughout.
    host_j = last.host.energy_joules_total - first.host.energy_joules_total
    idle_host_j = last.host.idle_energy_joules_total - first.host.idle_energy_joules_total
    other_j = (
        last.host.other_processes_energy_joules_total
        - first.host.other_processes_energy_joules_total
    )
    vms_j = {u: _vm_joules(last, u) - _vm_joules(first, u) for u in last.vms}
    busy_j = vms_j[busy.record.uuid]
    idle_vm_j = vms_j[idle.record.uuid]
    accounted = idle_host_j + sum(vms_j.values()) + other_j
    ratio = busy_j / idle_vm_j if idle_vm_j > 0 else float("inf")
    print(
        f"\nwindow {last.taken_at - first.taken_at:.1f} s: host {host_j:.1f} J, "
        f"idle {idle_host_j:.1f} J, busy VM {busy_j:.2f} J, idle VM {idle_vm_j:.4f} J "
        f"(ratio {ratio:.0f}), other processes {other_j:.1f} J, "
        f"conservation error {abs(accounted - host_j) / host_j:.2e}"
    )

    # The RAPL path lost nothing across the counter's wrap: the ledger holds exactly
    # what the meter added since the baseline.
    assert powercap.read(PACKAGE) < REAL_MAX_ENERGY_RANGE_UJ - JOULES_BEFORE_WRAP * 1e6
    assert last.host.energy_joules_total == pytest.approx(meter.added_uj / 1e6, rel=1e-9)
    assert host_j > 0
    assert accounted == pytest.approx(host_j, rel=0.01)
    for guest in (busy, idle):
        vm = last.vms[guest.record.uuid]
        assert (vm.domain, vm.project, vm.running, vm.cpu_source) == (
            guest.record.domain,
            "acceptance",
            True,
            "libvirt",
        )
    assert busy_j > 0
    assert busy_j >= 5 * idle_vm_j, f"busy/idle energy ratio {ratio:.2f} is below 5"

    # Inside the guest: its own counter, read through the share, grew between reads
    # and never ran ahead of the host's total for it.
    reads = _guest_reads(busy.console)
    positive = [v for v in reads if v > 0]
    assert len(positive) >= 2 and max(positive) > min(positive), reads
    assert reads == sorted(reads), reads
    assert max(reads) <= round(last.vms[busy.record.uuid].energy_joules_total * 1e6), reads
