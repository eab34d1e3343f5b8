"""Prints how many of Placement's gabbi tests pass against our API."""

from __future__ import annotations

import pytest

from placement_gabbi import test_placement_gabbits as gabbits


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if gabbits.OUTCOMES:
        passed = sum(gabbits.OUTCOMES)
        terminalreporter.write_line(
            f"Placement gabbi tests: {passed} of {len(gabbits.OUTCOMES)} pass against /placement"
        )
