"""Service memory per server: growth per 100 create/delete cycles on ``test:///default``.

``wattvisor up``'s pieces (``AllInOne.build``: SQLite, the compute service, the
energy sampler) in this process. One cycle creates a server, waits until it is
ACTIVE, takes an energy sample, deletes the server and waits until it is DELETED.
After ``WARMUP`` cycles the resident set size is read (``/proc/self/statm``, after a
full garbage collection) once per further 100 cycles. A service that keeps
something for every server it ever had grows by about the same amount each
time; one that keeps nothing levels off. RSS also follows SQLite's page cache,
which grows with the store (DELETED servers keep their rows) up to its
``cache_size`` per pooled connection, so the Python heap is measured too, by
``tracemalloc`` in a second run of cycles: it is what a per-server dict, set or
lock that is never dropped shows up in.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.bench_compute import FLAVOR, _prepare_catalog, _settings

WARMUP = 100
STEPS = 5
PER_STEP = 100
WAIT_S = 60.0


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGESIZE") // 1024


def run() -> None:
    from wattvisor.allinone import AllInOne
    from wattvisor.auth import Principal

    logging.getLogger("wattvisor").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="wattvisor-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        node = AllInOne.build(_settings(data_dir))
        try:
            _prepare_catalog(node, data_dir)
            servers = node.compute.servers
            principal = Principal(user="bench", project="bench", role="member")

            def cycles(count: int) -> None:
                for i in range(count):
                    server = servers.create(principal, f"m{i}", FLAVOR, "kernel")
                    servers.wait(server.uuid, WAIT_S)
                    node.sampler.sample()
                    servers.delete(principal, server.uuid)
                    servers.wait(server.uuid, WAIT_S)

            cycles(WARMUP)
            gc.collect()
            before = _rss_kib()
            started = time.perf_counter()
            steps = []
            for _ in range(STEPS):
                cycles(PER_STEP)
                gc.collect()
                now = _rss_kib()
                steps.append(now - before)
                before = now
            elapsed = time.perf_counter() - started
            tracemalloc.start()
            heap_before = tracemalloc.get_traced_memory()[0]
            heap_steps = []
            for _ in range(STEPS):
                cycles(PER_STEP)
                gc.collect()
                heap_now = tracemalloc.get_traced_memory()[0]
                heap_steps.append((heap_now - heap_before) // 1024)
                heap_before = heap_now
            tracemalloc.stop()
        finally:
            node.stop()
    rate = STEPS * PER_STEP / elapsed
    print(f"   {WARMUP} warm-up cycles, then {STEPS} x {PER_STEP} create -> ACTIVE -> delete "
          f"cycles ({rate:.0f} cycles/s), test:///default, SQLite")  # fmt: skip
    for label, figures in (("RSS", steps), ("Python heap", heap_steps)):
        print(
            f"   {label} growth per 100 cycles (KiB): "
            + ", ".join(f"{d:+d}" for d in figures)
            + f"; mean {sum(figures) / len(figures) / PER_STEP * 1024:+.0f} bytes per server"
        )
    print("   (goal: no steady growth of the Python heap)")
