"""Benchmarks: ``make bench`` runs each ``bench/bench_*.py`` module's ``run()``.

They share the test doubles and helpers of ``tests/support`` (synthetic powercap and
procfs trees, the in-memory user registry, guest domains), imported as ``support.*``
just as the tests import them; those stay out of the installed package.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
