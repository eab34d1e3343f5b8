"""In CI (``CI=true``) a skipped test is a failure, unless the test says it skips by design.

``make test`` sets ``CI=true``, so a suite cannot turn green by skipping what a broken
set-up could not run. A test that legitimately does not apply on some machines (a
check only older libvirt needs, a fix for a device this machine lacks) carries
``@pytest.mark.skip_by_design("why")``; its skip stays a skip and names the reason.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from support.availability import in_ci

MARKER = "skip_by_design"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(reason): the test may skip even in CI; the reason says when and why",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or not in_ci():
        return
    if item.get_closest_marker(MARKER) is not None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"CI=true: skipped ({reason}); fix the set-up, or mark the test "
        f"@pytest.mark.{MARKER}(reason) if it does not apply here by design"
    )
