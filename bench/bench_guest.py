"""Domain XML model: build + serialise a guest, parse and upgrade libvirt's corpus.

Goal: building and serialising a typical guest takes at most 200 µs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from wattvisor.guest import (
    Console,
    Disk,
    Domain,
    Filesystem,
    FlavorMeta,
    InstanceMetadata,
    Interface,
    MemoryBacking,
    OwnerMeta,
    RootMeta,
    Serial,
    ShareMeta,
    Video,
    make_alias,
    upgrade_domain_xml,
)

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus" / "libvirt-9.0-domains"
BUILD_GOAL_US = 200.0

_META = InstanceMetadata(
    package_version="0.1.0",
    display_name="bench",
    creation_time=datetime(2026, 1, 1, tzinfo=UTC),
    flavor=FlavorMeta(
        name="m1.small", id="1", memory_mib=512, disk_gib=1, swap_mib=0, ephemeral_gib=0,
        vcpus=1, extra_specs={"hw:power_metrics": "true"},
    ),
    owner=OwnerMeta("u-1", "alice", "p-1", "demo"),
    root=RootMeta("image", "7f0e2c1a-0000-4000-8000-000000000001"),
    shares=(ShareMeta("scaphandre", "power_metrics"),),
)  # fmt: skip


def build_typical_guest(index: int = 0) -> str:
    """A guest as the host driver builds one: kernel boot, disk, NIC, video, file
    console, virtiofs share with memfd shared memory, metadata."""
    domain = Domain(
        name=f"instance-{index:08x}",
        uuid=f"7f0e2c1a-0000-4000-8000-{index:012x}",
        memory_mib=512,
        vcpus=1,
        virt_type="qemu",
        kernel="/var/lib/wattvisor/vmlinuz",
        initrd="/var/lib/wattvisor/initrd.gz",
        cmdline="console=ttyS0",
        memory_backing=MemoryBacking(),
        instance_metadata=_META,
    )
    domain.add_device(
        Disk(
            source_file=f"/var/lib/wattvisor/{index}/disk.qcow2", target_dev="vda",
            driver_type="qcow2", serial="vol-1", alias=make_alias("vol-1"),
        )
    )  # fmt: skip
    domain.add_device(
        Interface(source_network="default", mac="52:54:00:12:34:56", alias=make_alias("port-1"))
    )
    domain.add_device(Video())
    domain.add_device(Serial(type="file", source_path=f"/var/log/wattvisor/{index}.log"))
    domain.add_device(Console(type="file", source_path=f"/var/log/wattvisor/{index}.log",
                              target_type="serial"))  # fmt: skip
    domain.add_device(
        Filesystem(
            source_dir="/run/wattvisor/shares/ro", target_dir="scaphandre",
            binary_path="/usr/lib/qemu/virtiofsd", alias=make_alias("share-1"),
        )
    )  # fmt: skip
    return domain.to_xml()


def _median_us(action: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        action()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(samples)


def run() -> None:
    build_typical_guest()
    build = _median_us(build_typical_guest, 2000)
    verdict = "ok" if build <= BUILD_GOAL_US else "OVER GOAL"
    print(f"build + serialise a typical guest: {build:8.1f} µs median "
          f"(goal ≤ {BUILD_GOAL_US:.0f} µs: {verdict})")  # fmt: skip
    documents = [p.read_bytes() for p in sorted(CORPUS.glob("*.xml"))]
    if not documents:
        print(f"corpus not found at {CORPUS}; skipping parse and upgrade figures")
        return
    parse = [_median_us(lambda d=d: Domain.parse(d), 20) for d in documents]
    texts = [d.decode("utf-8") for d in documents]
    upgrade = [_median_us(lambda t=t: upgrade_domain_xml(t), 20) for t in texts]
    for label, figures in (("parse", parse), ("upgrade", upgrade)):
        p95 = statistics.quantiles(figures, n=20)[-1]
        print(f"{label} a corpus document ({len(documents)} docs): "
              f"{statistics.median(figures):7.1f} µs median, {p95:7.1f} µs p95")  # fmt: skip
