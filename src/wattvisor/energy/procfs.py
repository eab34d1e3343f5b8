"""Cheap reads of CPU time from procfs: ``/proc/stat`` and every ``/proc/<pid>/stat``.

One sample reads ``/proc/stat`` once and each ``/proc/<pid>/stat`` once.
``/proc/<pid>/cmdline`` is read only for a process not seen before (keyed by pid
and start time, so a recycled pid is a new process), and only to find QEMU.
Most processes sleep between two samples, so their stat text is byte-for-byte
unchanged: those keep the previous parsed record (same object), which lets the
sampler skip them cheaply.
The root is configurable so tests and benchmarks run on synthetic trees written
in the kernel's formats.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import compress
from operator import ne
from pathlib import Path
from typing import NamedTuple

from wattvisor.energy.qemu_cmdline import QemuIdentity, parse_qemu_argv

#: ``PF_KTHREAD`` in the ``flags`` field of ``/proc/<pid>/stat``.
PF_KTHREAD = 0x00200000


class ProcfsError(RuntimeError):
    """procfs cannot be read where it was expected; the message names the path."""


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Machine-wide CPU time from the ``cpu`` line of ``/proc/stat``, in clock ticks.

    Busy is user + nice + system + irq + softirq (guest time is already inside user
    and nice); idle is idle + iowait. Steal is neither: it is time this machine did
    not get, so it used no power here.
    """

    busy_ticks: int
    idle_ticks: int

    @property
    def total_ticks(self) -> int:
        return self.busy_ticks + self.idle_ticks


def parse_proc_stat_cpu(text: str) -> CpuTimes:
    """The aggregate ``cpu`` line of ``/proc/stat`` content."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            values += [0] * (8 - len(values))
            user, nice, system, idle, iowait, irq, softirq = values[:7]
            busy = user + nice + system + irq + softirq
            return CpuTimes(busy_ticks=busy, idle_ticks=idle + iowait)
    raise ValueError("no aggregate 'cpu ' line")


def read_cpu_times(procfs_root: Path) -> CpuTimes:
    """Read and parse ``<procfs_root>/stat``."""
    path = procfs_root / "stat"
    try:
        with open(path, encoding="ascii") as handle:
            return parse_proc_stat_cpu(handle.read())
    except (OSError, ValueError) as exc:
        raise ProcfsError(f"cannot read CPU times from {path}: {exc}") from exc


class ProcStat(NamedTuple):
    """The fields of one ``/proc/<pid>/stat`` that attribution needs."""

    pid: int
    comm: str
    ppid: int
    cpu_ticks: int
    starttime: int
    kernel_thread: bool


_new_tuple = tuple.__new__


def parse_pid_stat(raw: bytes, pid: int) -> ProcStat:
    """Parse ``/proc/<pid>/stat``; ``comm`` may itself contain spaces and parentheses."""
    close = raw.rindex(b")")
    fields = raw[close + 2 :].split(None, 20)
    # tuple.__new__ skips the generated NamedTuple constructor: this runs for every
    # process that used CPU time since the previous sample.
    return _new_tuple(
        ProcStat,
        (
            pid,
            raw[raw.index(b"(") + 1 : close].decode("utf-8", "replace"),
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
            int(fields[19]),
            bool(int(fields[6]) & PF_KTHREAD),
        ),
    )


def read_cmdline(procfs_root: Path, pid: int) -> list[str]:
    """argv of a process (NUL-separated in procfs); empty when it is gone or unreadable."""
    try:
        with open(procfs_root / str(pid) / "cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


@dataclass(frozen=True, slots=True)
class ProcessScan:
    """Every process at one instant, and which of them are QEMU (pid → identity).

    ``changed`` lists, in the order procfs listed them, the pids whose record is new
    in this scan (a new process, or stat text that differs from the scan numbered
    ``number - 1``); every other pid's record is the very object that scan had.
    """

    processes: dict[int, ProcStat]
    qemu: dict[int, QemuIdentity]
    changed: list[int] = field(default_factory=list)
    number: int = 0


class ProcessScanner:
    """Reads all processes; remembers argv-derived facts per (pid, start time).

    The loop over the pids does only what any scan must (open, read and close each
    ``<pid>/stat``, relative to the procfs directory held open) and keeps the raw
    text; which texts changed is then worked out in bulk by C-level ``map`` and
    ``compress``, and only those are parsed. On a host where most processes sleep
    between two samples, that leaves next to nothing per process beyond the reads.
    """

    def __init__(self, procfs_root: Path = Path("/proc")) -> None:
        self.procfs_root = procfs_root
        self._root = str(procfs_root)
        self._root_fd: int | None = None
        # Kept from scan to scan and changed in place for the pids whose text changed:
        # pid directory name -> raw stat text; pid -> parsed record; pid -> QEMU identity.
        self._raw: dict[str, bytes] = {}
        self._stats: dict[int, ProcStat] = {}
        self._qemu: dict[int, QemuIdentity] = {}
        self.cmdline_reads = 0
        self.scans = 0

    def _directory(self) -> int:
        """The procfs root, opened once; each ``<pid>/stat`` is opened relative to it."""
        if self._root_fd is None:
            try:
                root_fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise ProcfsError(f"cannot list processes in {self._root}: {exc}") from exc
            self._root_fd = root_fd
            self._finalizer = weakref.finalize(self, os.close, root_fd)
        return self._root_fd

    def close(self) -> None:
        """Close the procfs directory held open (the next scan opens it again)."""
        if self._root_fd is not None:
            self._root_fd = None
            self._finalizer()

    def scan(self) -> ProcessScan:
        root_fd = self._directory()
        try:
            names = os.listdir(root_fd)
        except OSError as exc:
            raise ProcfsError(f"cannot list processes in {self._root}: {exc}") from exc
        listed: list[str] = []
        raws: list[bytes] = []
        keep, keep_raw = listed.append, raws.append
        open_, read, close, rdonly = os.open, os.read, os.close, os.O_RDONLY
        for name in names:
            if not name.isdigit():
                continue
            try:
                fd = open_(name + "/stat", rdonly, dir_fd=root_fd)
            except OSError:
                continue  # exited since listdir
            try:
                raw = read(fd, 2048)
            except OSError:
                continue
            finally:
                close(fd)
            keep(name)
            keep_raw(raw)
        raw_of, stats, qemu = self._raw, self._stats, self._qemu
        before = list(map(raw_of.get, listed))
        differs = list(map(ne, raws, before))
        known_before = len(raw_of)
        still_listed = len(listed) - before.count(None)
        changed: list[int] = []
        for name, raw in zip(compress(listed, differs), compress(raws, differs), strict=True):
            pid = int(name)
            try:
                stat = parse_pid_stat(raw, pid)
            except (ValueError, IndexError):
                raw_of.pop(name, None)
                stats.pop(pid, None)
                qemu.pop(pid, None)
                continue
            previous = stats.get(pid)
            if previous is None or previous.starttime != stat.starttime:
                found = None
                if not stat.kernel_thread:
                    self.cmdline_reads += 1
                    found = parse_qemu_argv(read_cmdline(self.procfs_root, pid))
                if found is not None:
                    qemu[pid] = found
                else:
                    qemu.pop(pid, None)
            raw_of[name] = raw
            stats[pid] = stat
            changed.append(pid)
        if still_listed < known_before:  # some processes exited
            for name in raw_of.keys() - set(listed):
                pid = int(name)
                del raw_of[name]
                stats.pop(pid, None)
                qemu.pop(pid, None)
        self.scans += 1
        # Copies (C-level, no per-item work): a scan stays as it was after later scans.
        return ProcessScan(stats.copy(), qemu.copy(), changed, self.scans)


# Helpers libvirt starts for a domain outside QEMU's process tree but inside its cgroup,
# so the domain's cpu.time already covers them.
DOMAIN_HELPER_COMMS = frozenset({"virtiofsd"})


class CgroupReader:
    """``/proc/<pid>/cgroup`` per process, read once per (pid, start time)."""

    def __init__(self, procfs_root: Path) -> None:
        self._root = procfs_root
        self._known: dict[tuple[int, int], str | None] = {}

    def cgroup(self, stat: ProcStat) -> str | None:
        key = (stat.pid, stat.starttime)
        if key not in self._known:
            try:
                text = (self._root / str(stat.pid) / "cgroup").read_text()
            except OSError:
                text = None
            self._known[key] = text.strip() if text else None
        return self._known[key]

    def root_cgroup(self) -> str | None:
        try:
            return (self._root / "1" / "cgroup").read_text().strip() or None
        except OSError:
            return None

    def prune(self, live: Mapping[int, ProcStat]) -> None:
        self._known = {
            k: v
            for k, v in self._known.items()
            if (stat := live.get(k[0])) is not None and stat.starttime == k[1]
        }


class QemuOwnership:
    """Which QEMU process (if any) a pid belongs to, worked out only for pids asked about.

    A QEMU's tree is the process itself, its descendants (helpers it forked), the
    ``vhost-<pid>`` kernel threads that do its network I/O and, given a
    :class:`CgroupReader`, the helpers libvirt starts in the domain's own cgroup
    (virtiofsd). Only processes that used CPU in an interval are asked about, so
    idle hosts pay nothing.
    """

    def __init__(self, scan: ProcessScan, cgroups: CgroupReader | None = None) -> None:
        self._processes = scan.processes
        self._qemu = scan.qemu
        self._memo: dict[int, int | None] = {pid: pid for pid in scan.qemu}
        self._cgroups = cgroups
        self._qemu_by_cgroup: dict[str, int | None] | None = None

    def _helper_owner(self, stat: ProcStat) -> int | None:
        """The QEMU sharing this helper's cgroup, when exactly one does and it is not PID 1's."""
        cgroups = self._cgroups
        if cgroups is None or stat.comm not in DOMAIN_HELPER_COMMS:
            return None
        if self._qemu_by_cgroup is None:
            table: dict[str, int | None] = {}
            for pid in self._qemu:
                qemu_stat = self._processes.get(pid)
                group = cgroups.cgroup(qemu_stat) if qemu_stat is not None else None
                if group is not None:
                    table[group] = None if group in table else pid  # ambiguous -> None
            root = cgroups.root_cgroup()
            if root is not None:
                table.pop(root, None)
            self._qemu_by_cgroup = table
        group = cgroups.cgroup(stat)
        return self._qemu_by_cgroup.get(group) if group is not None else None

    def owner(self, pid: int) -> int | None:
        memo = self._memo
        if pid in memo:
            return memo[pid]
        stat = self._processes.get(pid)
        if stat is not None and stat.kernel_thread:
            found: int | None = None
            if stat.comm.startswith("vhost-"):
                suffix = stat.comm[len("vhost-") :]
                if suffix.isdigit() and int(suffix) in self._qemu:
                    found = int(suffix)
            memo[pid] = found
            return found
        chain: list[int] = []
        current = pid
        found = None
        while current > 1 and len(chain) < 64:
            if current in memo:
                found = memo[current]
                break
            chain.append(current)
            parent = self._processes.get(current)
            if parent is None or parent.kernel_thread:
                break
            current = parent.ppid
        if found is None and stat is not None:
            found = self._helper_owner(stat)
        for member in chain:
            memo[member] = found
        return found


def qemu_process_trees(scan: ProcessScan) -> dict[int, int]:
    """Map every pid that belongs to a QEMU process to that QEMU's pid."""
    ownership = QemuOwnership(scan)
    result: dict[int, int] = {}
    for pid in scan.processes:
        owner = ownership.owner(pid)
        if owner is not None:
            result[pid] = owner
    return result
