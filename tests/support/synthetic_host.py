"""A synthetic host: powercap and procfs trees in the kernel's own formats, domain CPU
stats, a VM inventory kept by hand and a manual clock.

For machines without the hardware (no RAPL here, no 1,000-process host at
hand): tests and benchmarks point ``powercap_root`` and ``procfs_root`` at these
trees, so the real readers run unchanged. Layouts follow the kernel:
``class/powercap/intel-rapl:N`` are symlinks into
``devices/virtual/powercap/intel-rapl/intel-rapl:N`` with sub-zones nested
inside their package, and ``<pid>/stat`` has all 52 fields with ``comm`` in
parentheses.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wattvisor.energy.domain_stats import DomainCpu
from wattvisor.energy.inventory import VMRecord

REAL_MAX_ENERGY_RANGE_UJ = 262_143_328_850


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class SyntheticPowercap:
    """A writable powercap tree; ``root`` is what ``energy.powercap_root`` points at."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "class" / "powercap"
        self.devices = base / "devices" / "virtual" / "powercap"
        self.root.mkdir(parents=True, exist_ok=True)
        self._zones: dict[str, Path] = {}
        self._max: dict[str, int] = {}

    def add_zone(
        self,
        key: str,
        name: str,
        *,
        energy_uj: int = 0,
        max_energy_range_uj: int = REAL_MAX_ENERGY_RANGE_UJ,
        control_type: str = "intel-rapl",
    ) -> Path:
        """Add ``intel-rapl:N`` (package or psys) or ``intel-rapl:N:M`` (inside package N)."""
        parts = key.split(":")
        if len(parts) == 3:
            parent = self._zones[":".join(parts[:2])]
            directory = parent / key
        else:
            directory = self.devices / control_type / key
        directory.mkdir(parents=True, exist_ok=True)
        (self.devices / control_type / "enabled").write_text("1\n")
        (directory / "name").write_text(name + "\n")
        (directory / "enabled").write_text("1\n")
        (directory / "max_energy_range_uj").write_text(f"{max_energy_range_uj}\n")
        (directory / "energy_uj").write_text(f"{energy_uj}\n")
        link = self.root / key
        if not link.exists():
            link.symlink_to(os.path.relpath(directory, self.root))
        control = self.root / control_type
        if not control.exists():
            control.symlink_to(os.path.relpath(self.devices / control_type, self.root))
        self._zones[key] = directory
        self._max[key] = max_energy_range_uj
        return directory

    def energy_file(self, key: str) -> Path:
        return self._zones[key] / "energy_uj"

    def read(self, key: str) -> int:
        return int(self.energy_file(key).read_text())

    def set_energy(self, key: str, energy_uj: int) -> None:
        _write(self.energy_file(key), f"{energy_uj}\n")

    def add_energy(self, key: str, microjoules: int) -> None:
        """Advance a counter the way hardware does, wrapping at ``max_energy_range_uj``."""
        maximum = self._max[key]
        value = self.read(key) + microjoules
        if value > maximum:
            value = (value - maximum) % maximum
        self.set_energy(key, value)


@dataclass(slots=True)
class SyntheticProcess:
    pid: int
    comm: str
    argv: tuple[str, ...]
    ppid: int
    utime: int
    stime: int
    starttime: int
    kernel_thread: bool


class SyntheticProc:
    """A procfs tree with ``stat`` and ``<pid>/{stat,cmdline}``."""

    def __init__(self, root: Path, *, cpus: int = 2) -> None:
        self.root = root
        self.cpus = cpus
        root.mkdir(parents=True, exist_ok=True)
        self.processes: dict[int, SyntheticProcess] = {}
        self.busy = 0
        self.idle = 0
        self.write_stat()

    def write_stat(self) -> None:
        """``cpu`` line: user nice system idle iowait irq softirq steal guest guest_nice."""
        user, system = self.busy * 3 // 4, self.busy - self.busy * 3 // 4
        lines = [f"cpu  {user} 0 {system} {self.idle} 0 0 0 0 0 0"]
        for cpu in range(self.cpus):
            lines.append(
                f"cpu{cpu} {user // self.cpus} 0 {system // self.cpus} {self.idle // self.cpus}"
                " 0 0 0 0 0 0"
            )
        lines += ["intr 0", "ctxt 0", "btime 1700000000", "processes 1", "procs_running 1"]
        _write(self.root / "stat", "\n".join(lines) + "\n")

    def advance_cpu(self, busy_ticks: int, idle_ticks: int) -> None:
        self.busy += busy_ticks
        self.idle += idle_ticks
        self.write_stat()

    def add_process(
        self,
        pid: int,
        comm: str,
        argv: Sequence[str] = (),
        *,
        ppid: int = 1,
        utime: int = 0,
        stime: int = 0,
        starttime: int | None = None,
        kernel_thread: bool = False,
        cgroup: str | None = None,
    ) -> SyntheticProcess:
        process = SyntheticProcess(
            pid,
            comm,
            tuple(argv),
            ppid,
            utime,
            stime,
            starttime if starttime is not None else 1000 + pid,
            kernel_thread,
        )
        self.processes[pid] = process
        directory = self.root / str(pid)
        directory.mkdir(exist_ok=True)
        _write(directory / "cmdline", "".join(a + "\0" for a in process.argv))
        (directory / "comm").write_text(comm[:15] + "\n")
        if cgroup is not None:
            _write(directory / "cgroup", f"0::{cgroup}\n")
        self._write_pid_stat(process)
        return process

    def add_cpu(self, pid: int, utime: int, stime: int = 0) -> None:
        process = self.processes[pid]
        process.utime += utime
        process.stime += stime
        self._write_pid_stat(process)

    def remove_process(self, pid: int) -> None:
        self.processes.pop(pid)
        directory = self.root / str(pid)
        for name in os.listdir(directory):
            os.unlink(directory / name)
        directory.rmdir()

    def _write_pid_stat(self, p: SyntheticProcess) -> None:
        flags = 0x00208040 if p.kernel_thread else 0x00400100  # PF_KTHREAD is 0x00200000
        vsize, rss = (0, 0) if p.kernel_thread else (123_456_000, 2_500)
        fields = [
            "S",
            p.ppid,
            p.pid,
            p.pid,
            0,
            -1,
            flags,
            100,
            0,
            0,
            0,
            p.utime,
            p.stime,
            0,
            0,
            20,
            0,
            1,
            0,
            p.starttime,
            vsize,
            rss,
            18446744073709551615,
            1,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            17,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ]
        text = f"{p.pid} ({p.comm[:15]}) " + " ".join(str(f) for f in fields) + "\n"
        _write(self.root / str(p.pid) / "stat", text)


class SyntheticDomainStats:
    """Per-domain CPU time in the shape libvirt's bulk stats give it.

    Implements :class:`~wattvisor.energy.domain_stats.DomainCpuStats` for hosts
    with many domains that cannot be booted here (benchmarks) and for tests of
    the attribution rules; the libvirt implementation is tested on its own.
    """

    def __init__(self) -> None:
        self.domains: dict[str, DomainCpu] = {}
        self.reachable = True

    def set(self, uuid: str, name: str, cpu_ns: int | None, *, active: bool = True) -> None:
        self.domains[uuid.lower()] = DomainCpu(uuid.lower(), name, active, cpu_ns)

    def add_cpu(self, uuid: str, ns: int) -> None:
        dom = self.domains[uuid.lower()]
        self.domains[dom.uuid] = DomainCpu(dom.uuid, dom.name, dom.active, (dom.cpu_ns or 0) + ns)

    def remove(self, uuid: str) -> None:
        self.domains.pop(uuid.lower(), None)

    def domain_cpu(self) -> Mapping[str, DomainCpu] | None:
        return dict(self.domains) if self.reachable else None


class ManualClock:
    """Monotonic time advanced explicitly, so sampled intervals are exact."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InMemoryVMInventory:
    """A thread-safe set of :class:`VMRecord` kept by hand, in place of libvirt's list."""

    def __init__(self, records: Iterable[VMRecord] = ()) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, VMRecord] = {r.uuid: r for r in records}
        self._frozen: tuple[VMRecord, ...] = tuple(self._records.values())

    def put(self, record: VMRecord) -> None:
        with self._lock:
            self._records[record.uuid] = record
            self._frozen = tuple(self._records.values())

    def remove(self, uuid: str) -> None:
        with self._lock:
            self._records.pop(uuid, None)
            self._frozen = tuple(self._records.values())

    def vms(self) -> Sequence[VMRecord]:
        return self._frozen
