"""procfs readers on synthetic trees in the kernel's formats."""

from __future__ import annotations

import gc
import os

import pytest

from support.synthetic_host import SyntheticProc
from wattvisor.energy.procfs import (
    ProcessScanner,
    ProcfsError,
    parse_pid_stat,
    parse_proc_stat_cpu,
    qemu_process_trees,
    read_cpu_times,
)


def test_proc_stat_busy_excludes_idle_iowait_and_steal() -> None:
    times = parse_proc_stat_cpu("cpu  10 2 3 100 7 1 4 50 5 0\ncpu0 1 1 1 1 1 1 1 1 1 1\n")
    assert times.busy_ticks == 10 + 2 + 3 + 1 + 4
    assert times.idle_ticks == 107


def test_missing_proc_stat_names_the_path(proc: SyntheticProc) -> None:
    (proc.root / "stat").unlink()
    with pytest.raises(ProcfsError, match=str(proc.root / "stat")):
        read_cpu_times(proc.root)


def test_comm_with_spaces_and_parentheses_is_parsed() -> None:
    raw = b"4242 (evil) (x y) R 17 1 1 0 -1 4194560 0 0 0 0 33 9 0 0 20 0 1 0 777 0 0\n"
    stat = parse_pid_stat(raw, 4242)
    assert stat.comm == "evil) (x y"
    assert (stat.ppid, stat.cpu_ticks, stat.starttime, stat.kernel_thread) == (17, 42, 777, False)


def test_scan_reads_times_and_marks_kernel_threads(proc: SyntheticProc) -> None:
    proc.add_process(10, "a (b) c", ["/bin/sleep", "1"], utime=5, stime=3)
    scan = ProcessScanner(proc.root).scan()
    assert scan.processes[10].comm == "a (b) c"
    assert scan.processes[10].cpu_ticks == 8
    assert scan.processes[2].kernel_thread
    assert not scan.processes[10].kernel_thread


def test_cmdline_is_read_once_per_process_not_per_sample(proc: SyntheticProc) -> None:
    proc.add_process(10, "bash", ["/bin/bash"])
    proc.add_process(11, "qemu-system-x86", ["/usr/bin/qemu-system-x86_64", "-name", "guest=a"])
    scanner = ProcessScanner(proc.root)
    first = scanner.scan()
    reads = scanner.cmdline_reads
    assert reads == 3  # init, bash, qemu; kthreadd has no argv to read
    second = scanner.scan()
    assert scanner.cmdline_reads == reads
    assert first.qemu == second.qemu
    assert second.qemu[11].name == "a"


def test_recycled_pid_is_a_new_process(proc: SyntheticProc) -> None:
    proc.add_process(10, "bash", ["/bin/bash"], starttime=100)
    scanner = ProcessScanner(proc.root)
    assert 10 not in scanner.scan().qemu
    proc.remove_process(10)
    proc.add_process(
        10, "qemu-system-x86", ["qemu-system-x86_64", "-name", "guest=b"], starttime=900
    )
    assert scanner.scan().qemu[10].name == "b"


def test_qemu_tree_has_children_and_vhost_threads_but_not_strangers(proc: SyntheticProc) -> None:
    proc.add_process(100, "qemu-system-x86", ["qemu-system-x86_64", "-name", "guest=a"])
    proc.add_process(101, "helper", ["/usr/lib/qemu/helper"], ppid=100)
    proc.add_process(102, "grandchild", ["x"], ppid=101)
    proc.add_process(103, "vhost-100", [], ppid=2, kernel_thread=True)
    proc.add_process(104, "vhost-999", [], ppid=2, kernel_thread=True)
    proc.add_process(105, "bash", ["/bin/bash"], ppid=1)
    owners = qemu_process_trees(ProcessScanner(proc.root).scan())
    assert owners == {100: 100, 101: 100, 102: 100, 103: 100}


def test_scan_lists_only_the_processes_whose_stat_changed(proc: SyntheticProc) -> None:
    proc.add_process(10, "bash", ["/bin/bash"], starttime=100)
    proc.add_process(11, "sleep", ["/bin/sleep", "60"])
    scanner = ProcessScanner(proc.root)
    first = scanner.scan()
    assert sorted(first.changed) == [1, 2, 10, 11]
    idle = scanner.scan()
    assert idle.changed == [] and idle.number == first.number + 1
    assert idle.processes[11] is first.processes[11]
    proc.add_cpu(11, 3)
    proc.add_process(12, "new", ["/bin/true"])
    proc.remove_process(10)
    proc.add_process(10, "qemu-system-x86", ["qemu-system-x86_64", "-name", "guest=c"],
                     starttime=900)  # fmt: skip
    later = scanner.scan()
    assert sorted(later.changed) == [10, 11, 12]
    assert later.processes[10].starttime == 900 and later.qemu[10].name == "c"
    assert len(later.changed) == len(set(later.changed))


def test_recycled_pid_of_a_qemu_loses_its_vm_identity(proc: SyntheticProc) -> None:
    proc.add_process(10, "qemu-system-x86", ["qemu-system-x86_64", "-name", "guest=a"],
                     starttime=100)  # fmt: skip
    scanner = ProcessScanner(proc.root)
    assert scanner.scan().qemu[10].name == "a"
    proc.remove_process(10)
    proc.add_process(10, "bash", ["/bin/bash"], starttime=900)
    assert 10 not in scanner.scan().qemu


def test_an_exited_qemu_leaves_the_scan_and_its_identity_with_it(proc: SyntheticProc) -> None:
    proc.add_process(10, "qemu-system-x86", ["qemu-system-x86_64", "-name", "guest=a"])
    proc.add_process(11, "bash", ["/bin/bash"])
    scanner = ProcessScanner(proc.root)
    first = scanner.scan()
    assert 10 in first.qemu and 10 in first.processes
    proc.remove_process(10)
    later = scanner.scan()
    assert 10 not in later.processes and 10 not in later.qemu
    assert later.changed == []
    assert 10 in first.qemu and 10 in first.processes  # an earlier scan stays as it was


def test_a_stat_that_cannot_be_parsed_is_left_out_until_it_can(proc: SyntheticProc) -> None:
    proc.add_process(10, "bash", ["/bin/bash"], utime=4)
    scanner = ProcessScanner(proc.root)
    good = (proc.root / "10" / "stat").read_bytes()
    assert scanner.scan().processes[10].cpu_ticks == 4
    (proc.root / "10" / "stat").write_bytes(b"10 (bash")
    assert 10 not in scanner.scan().processes
    (proc.root / "10" / "stat").write_bytes(good)
    back = scanner.scan()
    assert back.processes[10].cpu_ticks == 4 and 10 in back.changed


def test_the_procfs_directory_held_open_is_closed(proc: SyntheticProc) -> None:
    before = len(os.listdir("/proc/self/fd"))
    scanner = ProcessScanner(proc.root)
    scanner.scan()
    assert len(os.listdir("/proc/self/fd")) == before + 1
    scanner.close()
    assert len(os.listdir("/proc/self/fd")) == before
    scanner.scan()  # opens it again
    del scanner
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before
