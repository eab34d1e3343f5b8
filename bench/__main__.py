"""Run every benchmark module (``bench_*.py``) in name order; each prints its own figures.

Each module's figures are preceded by the time a fixed pure-Python workload takes
just before it: the same machine was measured up to 70 % slower from one hour to
the next (shared virtual CPUs), which moves every figure after it.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def reference_ms() -> float:
    """CPU time of a fixed interpreter-bound workload (best of 5), for comparing runs."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        total = 0
        for i in range(300_000):
            total += i % 7
        sorted(str(i) for i in range(30_000))
        best = min(best, time.process_time() - started)
    return best * 1e3


def main(argv: list[str]) -> int:
    wanted = set(argv)
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    for name in names:
        if wanted and name.removeprefix("bench_") not in wanted and name not in wanted:
            continue
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name} == (machine reference: {reference_ms():.1f} ms)", flush=True)
        started = time.perf_counter()
        module.run()
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
