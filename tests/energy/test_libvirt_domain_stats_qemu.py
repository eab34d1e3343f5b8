"""libvirt bulk domain stats against a real libvirtd running a TCG guest.

``test:///default`` has no ``cpu.time`` (see test_domain_stats.py), so this is
where :class:`LibvirtDomainCpuStats` proves it reads the figure the sampler
relies on: a running QEMU guest's CPU time grows, a defined but stopped
domain has none, and the figure belongs to that guest's own QEMU process.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from support.guest_domains import unique_domain_name, wait_for_marker
from wattvisor.config import HostSettings
from wattvisor.energy.domain_stats import DomainCpu, LibvirtDomainCpuStats
from wattvisor.energy.procfs import ProcessScanner
from wattvisor.guest import Domain, MemoryBacking, Serial
from wattvisor.host.driver import DomainNotFound, HostDriver
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

SYSTEM_URI = "qemu:///system"
BOOT_TIMEOUT_S = 180.0
GROWTH_TIMEOUT_S = 60.0
NS_PER_TICK = 1e9 / 100  # USER_HZ; the test checks os.sysconf agrees


@dataclass(frozen=True)
class Guest:
    name: str
    uuid: str
    console: Path


class Guests:
    """Defines tiny guests through the host driver and removes every one of them afterwards."""

    def __init__(self, driver: HostDriver, image: GuestImage, tmp: Path) -> None:
        self.driver = driver
        self.image = image
        self.tmp = tmp
        self.defined: list[str] = []

    def define(self, scenario: str) -> Guest:
        name = unique_domain_name()
        guest = Guest(name, str(uuid.uuid4()), self.tmp / f"{name}.log")
        self.defined.append(guest.uuid)
        domain = Domain(
            name=guest.name,
            uuid=guest.uuid,
            memory_mib=256,
            vcpus=1,
            virt_type="qemu",
            machine="pc",
            kernel=str(self.image.kernel),
            initrd=str(self.image.initrd),
            cmdline=self.image.cmdline(scenario),
            memory_backing=MemoryBacking(),
        )
        domain.add_device(Serial(type="file", source_path=str(guest.console)))
        self.driver.define(domain)
        return guest

    def remove_all(self) -> None:
        errors: list[str] = []
        for ident in self.defined:
            try:
                self.driver.undefine(ident)
            except DomainNotFound:
                pass
            except Exception as exc:
                errors.append(f"{ident}: {exc!r}")
        self.defined.clear()
        assert not errors, f"cleanup failed: {errors}"


@pytest.fixture
def guests(
    libvirt_system: libvirt.virConnect, guest_image: GuestImage, world_readable_tmp: Path
) -> Iterator[Guests]:
    driver = HostDriver(HostSettings(virt_type="qemu"), world_readable_tmp / "data", uri=SYSTEM_URI)
    made = Guests(driver, guest_image, world_readable_tmp)
    try:
        yield made
    finally:
        try:
            made.remove_all()
        finally:
            driver.close()


def _entry(stats: LibvirtDomainCpuStats, domain_uuid: str) -> DomainCpu:
    result = stats.domain_cpu()
    assert result is not None, "libvirtd answered nothing for the bulk stats call"
    return result[domain_uuid.lower()]


def test_running_guest_reports_growing_cpu_time_and_stopped_domain_none(
    guests: Guests, libvirt_system: libvirt.virConnect
) -> None:
    busy = guests.define("busy")
    stopped = guests.define("idle")
    stats = LibvirtDomainCpuStats(libvirt_system)

    # libvirt itself reports libvirtd's own CPU time as cpu.time of a domain
    # without a QEMU process; that figure must not pass as the domain's.
    before_start = _entry(stats, busy.uuid)
    assert (before_start.name, before_start.active, before_start.cpu_ns) == (
        busy.name,
        False,
        None,
    )

    guests.driver.start(busy.uuid)
    wait_for_marker(busy.console, "WV-BUSY", BOOT_TIMEOUT_S)
    first = _entry(stats, busy.uuid)
    assert first.active and first.name == busy.name
    assert first.cpu_ns is not None and first.cpu_ns > 0
    later = first
    deadline = time.monotonic() + GROWTH_TIMEOUT_S
    while later.cpu_ns == first.cpu_ns and time.monotonic() < deadline:
        time.sleep(0.5)
        later = _entry(stats, busy.uuid)
    assert later.cpu_ns is not None and later.cpu_ns > first.cpu_ns

    never_started = _entry(stats, stopped.uuid)
    assert (never_started.name, never_started.active, never_started.cpu_ns) == (
        stopped.name,
        False,
        None,
    )

    guests.driver.destroy(busy.uuid)
    after_stop = _entry(stats, busy.uuid)
    assert (after_stop.active, after_stop.cpu_ns) == (False, None)


def test_cpu_time_covers_the_guests_own_qemu_process(
    guests: Guests, libvirt_system: libvirt.virConnect
) -> None:
    """The figure keyed by a UUID is that guest's QEMU (found by ``-uuid`` in its argv).

    The domain's cgroup holds the QEMU process and its helpers, so its
    ``cpu.time`` is at least what ``/proc`` charges to the QEMU process alone,
    give or take the tick granularity of ``/proc`` (one tick per thread).
    """
    assert os.sysconf("SC_CLK_TCK") == 100
    busy = guests.define("busy")
    guests.driver.start(busy.uuid)
    wait_for_marker(busy.console, "WV-BUSY", BOOT_TIMEOUT_S)
    stats = LibvirtDomainCpuStats(libvirt_system)

    scan = ProcessScanner().scan()
    [qemu_pid] = [pid for pid, who in scan.qemu.items() if who.uuid == busy.uuid]
    assert scan.qemu[qemu_pid].name == busy.name
    threads = len(os.listdir(f"/proc/{qemu_pid}/task"))
    proc_ns = scan.processes[qemu_pid].cpu_ticks * NS_PER_TICK
    entry = _entry(stats, busy.uuid)  # read after /proc, so it can only be further along
    assert entry.cpu_ns is not None
    assert entry.cpu_ns >= proc_ns - (threads + 1) * NS_PER_TICK
