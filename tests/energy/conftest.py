"""Synthetic hardware for energy tests: powercap and procfs trees in the kernel's formats."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.synthetic_host import (
    ManualClock,
    SyntheticDomainStats,
    SyntheticPowercap,
    SyntheticProc,
)


@pytest.fixture
def powercap(tmp_path: Path) -> SyntheticPowercap:
    return SyntheticPowercap(tmp_path / "sys")


@pytest.fixture
def proc(tmp_path: Path) -> SyntheticProc:
    tree = SyntheticProc(tmp_path / "proc")
    tree.add_process(1, "init", ["/sbin/init"], ppid=0)
    tree.add_process(2, "kthreadd", [], ppid=0, kernel_thread=True)
    return tree


@pytest.fixture
def stats() -> SyntheticDomainStats:
    return SyntheticDomainStats()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def tmpfs_dir() -> Iterator[Path]:
    """A fresh directory on tmpfs (``/dev/shm`` or ``/run``), where guest shares usually live."""
    with open("/proc/self/mounts") as mounts:
        where = next(
            (f[1] for f in map(str.split, mounts) if f[2] == "tmpfs" and os.access(f[1], os.W_OK)),
            None,
        )
    assert where is not None, "no writable tmpfs mount on this machine"
    directory = Path(tempfile.mkdtemp(dir=where, prefix="wattvisor-test-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory)
