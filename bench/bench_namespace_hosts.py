"""Namespace hosts for fleet tests: time to bring hosts up (side by side), to remove
them, and to live-migrate the tiny TCG guest from one to the other.

Every fleet test session pays bring-up and removal once for its ``two_hosts``; a
test that makes hosts of its own pays them per test.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import libvirt

from support.guest_domains import GuestDomainSpec, unique_domain_name, wait_for_marker
from support.namespace_hosts import NamespaceFleet, NamespaceHost
from wattvisor.devtools.libvirtd import SYSTEM_URI, libvirtd_answers
from wattvisor.images import ensure_guest_image


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
    run_migrations()


def _migrations(a: NamespaceHost, b: NamespaceHost, rounds: int) -> list[float]:
    """Seconds per live migration of one idle 128 MiB guest, A to B and back."""
    image = ensure_guest_image()
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="wvbench-", dir="/var/tmp") as tmp:
        Path(tmp).chmod(0o755)
        name = unique_domain_name()
        console = Path(tmp) / "console.log"
        spec = GuestDomainSpec(
            name=name, image=image, cmdline=image.cmdline("idle"), serial_log=console,
            memory_mib=128,
        )  # fmt: skip
        with a.connect() as on_a, b.connect() as on_b:
            domain = on_a.createXML(spec.xml(), 0)
            wait_for_marker(console, "WV-IDLE", timeout_s=120)
            hosts = [(b, on_b), (a, on_a)]
            for i in range(rounds):
                target, target_conn = hosts[i % 2]
                started = time.perf_counter()
                domain.migrateToURI3(
                    target.uri,
                    {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{target.address}"},
                    libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER,
                )
                samples.append(time.perf_counter() - started)
                domain = target_conn.lookupByName(name)
            domain.destroy()
    return samples


def run_migrations() -> None:
    fleet = NamespaceFleet()
    fleet.start()
    try:
        a, b = fleet.add_hosts(2)
        samples = _migrations(a, b, rounds=4)
        print(
            f"live migration of an idle 128 MiB TCG guest between namespace hosts: median "
            f"{statistics.median(samples):.2f} s (max {max(samples):.2f}), "
            f"{len(samples)} moves"
        )
    finally:
        fleet.close()
