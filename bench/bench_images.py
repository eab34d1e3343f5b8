"""Guest image build and TCG boot times (needs root and a libvirtd, as ``make bench`` gives)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import libvirt

from wattvisor.devtools import libvirtd as dev_libvirtd
from wattvisor.images import ensure_guest_image


def run() -> None:
    from support.guest_domains import GuestDomainSpec, unique_domain_name, wait_for_marker

    with tempfile.TemporaryDirectory(prefix="wvbench-") as tmp:
        started = time.perf_counter()
        cold = ensure_guest_image(Path(tmp))
        elapsed = time.perf_counter() - started
        print(f"   cold build (download + unpack + initramfs): {elapsed:.2f} s")
        shutil.rmtree(cold.directory)
        started = time.perf_counter()
        ensure_guest_image(Path(tmp))
        print(f"   rebuild with kernel cached: {time.perf_counter() - started:.2f} s")
    image = ensure_guest_image()
    started = time.perf_counter()
    ensure_guest_image()
    print(f"   cached lookup: {time.perf_counter() - started:.2f} s")
    print(
        f"   initrd {image.initrd.stat().st_size / 1e6:.1f} MB, kernel "
        f"{image.kernel.stat().st_size / 1e6:.1f} MB ({image.kernel_package})"
    )

    daemons = dev_libvirtd.ensure_libvirtd()
    conn = libvirt.open(dev_libvirtd.SYSTEM_URI)
    try:
        with tempfile.TemporaryDirectory(prefix="wvbench-", dir="/var/tmp") as tmp:
            Path(tmp).chmod(0o755)
            for attempt in range(3):
                console = Path(tmp) / f"console-{attempt}.log"
                spec = GuestDomainSpec(
                    unique_domain_name("wvbench"), image, image.cmdline("idle"), console
                )
                started = time.perf_counter()
                dom = conn.createXML(spec.xml(), 0)
                created = time.perf_counter() - started
                try:
                    wait_for_marker(console, "WV-IDLE", 120)
                    print(
                        f"   boot {attempt + 1}: domain created in {created:.2f} s, "
                        f"/init idle after {time.perf_counter() - started:.2f} s (TCG)"
                    )
                finally:
                    dom.destroy()
    finally:
        conn.close()
        daemons.stop()
