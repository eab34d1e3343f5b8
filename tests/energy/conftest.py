"""Synthetic hardware for energy tests: powercap and procfs trees in the kernel's formats."""

from __future__ import annotations

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
