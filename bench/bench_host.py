"""Traits discovery: capabilities + domain capabilities -> trait set, per call (ms)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from wattvisor.config import HostSettings
from wattvisor.host.connection import SYSTEM_URI, libvirt_answers
from wattvisor.host.driver import HostDriver


def _measure(uri: str, virt_type: str, rounds: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        driver = HostDriver(HostSettings(virt_type=virt_type), Path(tmp), uri=uri)  # type: ignore[arg-type]
        try:
            driver.traits()  # connect once; the connection is not what we measure
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                driver.capabilities(refresh=True)
                driver.traits()
                samples.append((time.perf_counter() - started) * 1000)
            return samples
        finally:
            driver.close()


def run() -> None:
    for uri, virt_type in ((SYSTEM_URI, "qemu"), ("test:///default", "qemu")):
        if not libvirt_answers(uri):
            print(f"traits discovery on {uri}: skipped (no libvirtd answers)")
            continue
        samples = _measure(uri, virt_type, rounds=20)
        print(
            f"traits discovery on {uri} (virt_type={virt_type}): "
            f"median {statistics.median(samples):.1f} ms, max {max(samples):.1f} ms "
            f"over {len(samples)} runs"
        )
