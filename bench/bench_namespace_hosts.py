"""Namespace hosts for fleet tests: time to bring hosts up (side by side) and to remove them.

Every fleet test session pays both once for its ``two_hosts``; a test that makes
hosts of its own pays them per test.
"""

from __future__ import annotations

import os
import statistics
import time

from support.namespace_hosts import NamespaceFleet
from wattvisor.devtools.libvirtd import SYSTEM_URI, libvirtd_answers


def _round(count: int) -> tuple[float, float]:
    fleet = NamespaceFleet()
    fleet.start()
    try:
        started = time.perf_counter()
        hosts = fleet.add_hosts(count)
        for host in hosts:
            with host.connect() as conn:
                conn.getHostname()
        up = time.perf_counter() - started
    except BaseException:
        fleet.close()
        raise
    started = time.perf_counter()
    fleet.close()
    return up, time.perf_counter() - started


def run() -> None:
    if os.geteuid() != 0 or not libvirtd_answers(SYSTEM_URI):
        print("namespace hosts: skipped (needs root and an installed libvirtd)")
        return
    for count in (1, 2, 4):
        samples = [_round(count) for _ in range(3)]
        ups = [s[0] for s in samples]
        downs = [s[1] for s in samples]
        print(
            f"{count} namespace host(s): up (answering over qemu+tcp) median "
            f"{statistics.median(ups) * 1000:.0f} ms (max {max(ups) * 1000:.0f}), "
            f"teardown median {statistics.median(downs) * 1000:.0f} ms "
            f"(max {max(downs) * 1000:.0f}), {len(samples)} rounds"
        )
