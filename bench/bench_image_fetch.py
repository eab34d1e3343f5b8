"""A 200 MiB image into a host's cache: fetched from the controller over HTTP (loopback,
host token, sha256 checked) beside a copy from a local path (the all-in-one, also
checked), plus what registering the image (hashing it) costs the controller."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from wattvisor.host.image_cache import ExpectedContent, ImageCache, ImageSource
from wattvisor.host.image_fetch import ControllerImages

SIZE = 200 * 1024 * 1024
MIB = 1024 * 1024


def _write_image(path: Path) -> None:
    """Three quarters random (incompressible, as disk content is), a quarter of zeros
    (the holes a raw image has)."""
    block = os.urandom(4 * MIB)
    with path.open("wb") as handle:
        for n in range(SIZE // (4 * MIB)):
            handle.write(block if n % 4 != 3 else bytes(4 * MIB))
            block = hashlib.sha256(block[:64]).digest() + block[32:]  # change it a little


def _timed_base(
    cache_dir: Path, image_id: str, source: Path | ImageSource, expected: ExpectedContent
) -> float:
    started = time.perf_counter()
    with ImageCache(cache_dir).image_base(image_id, source, "raw", expected):
        pass
    return time.perf_counter() - started


def run() -> None:
    from support.served_controller import served_controller

    with tempfile.TemporaryDirectory(prefix="wvbench-fetch-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        image = tmp / "image-200m.raw"
        _write_image(image)
        with served_controller(tmp) as controller:
            started = time.perf_counter()
            record = controller.node.compute.catalog.create_image(
                "bench-200m", disk_path=str(image), disk_format="raw"
            )
            registered = time.perf_counter() - started
            assert record.disk_sha256 is not None and record.disk_size is not None
            expected = ExpectedContent(record.disk_sha256, record.disk_size)
            local = _timed_base(tmp / "local-cache", record.id, image, expected)
            credentials = controller.join_agent()
            images = ControllerImages(controller.url, credentials.host_token)
            try:
                fetches = []
                for n in range(2):  # the first also has the controller verify the file
                    source = images.source(record.id, "disk", str(image), expected)
                    fetches.append(
                        _timed_base(tmp / f"http-cache-{n}", record.id, source, expected)
                    )
            finally:
                images.close()
            served = controller.log.image_requests(record.id)
            assert [s.body_bytes for s in served] == [SIZE, SIZE]
    mib = SIZE / MIB
    print(f"   register (sha256 of {mib:.0f} MiB on the controller): {registered:.2f} s "
          f"({mib / registered:.0f} MiB/s)")  # fmt: skip
    print(f"   local copy into the cache, checked:         {local:.2f} s ({mib / local:.0f} MiB/s)")
    for n, took in enumerate(fetches):
        note = "controller verifies the file first" if n == 0 else "controller's check cached"
        print(f"   HTTP fetch into the cache, checked ({note}): {took:.2f} s "
              f"({mib / took:.0f} MiB/s), {took / local:.2f}x the local copy")  # fmt: skip
