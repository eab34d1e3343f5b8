"""A test module that leaves open file descriptors behind is named, and can fail in CI.

The inner suites run in this process (as the whole suite does) and close what they
kept open when their session ends, so this module itself leaves nothing behind.
"""

from __future__ import annotations

import pytest

CONFTEST = """
import os

import pytest

pytest_plugins = ("support.fd_budget",)
KEPT = []


def keep(count):
    KEPT.extend(open(os.devnull) for _ in range(count))


@pytest.fixture(scope="session")
def shared_files():
    keep(60)


def pytest_sessionfinish():
    while KEPT:
        KEPT.pop().close()
"""

LEAKY = """
from conftest import keep


def test_opens_and_forgets():
    keep(30)


def test_opens_and_forgets_more():
    keep(30)
"""

TIDY = """
import os

from conftest import keep


def test_closes_what_it_opens(shared_files):
    files = [open(os.devnull) for _ in range(100)]
    for f in files:
        f.close()


def test_keeps_a_few(shared_files):
    keep(5)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_leaky=LEAKY, test_tidy=TIDY)
    return pytester


def test_in_ci_a_module_over_the_budget_fails_at_its_last_teardown(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("WATTVISOR_FD_BUDGET", "enforce")
    result = suite.runpytest("-p", "no:cacheprovider", "test_leaky.py", "test_tidy.py")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "ERROR test_leaky.py::test_opens_and_forgets_more - AssertionError: test_leaky.py "
            "left 60 open file descriptors behind (budget 50)*",
        ]
    )


def test_session_fixtures_count_once_not_as_the_module_that_used_them_first(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("WATTVISOR_FD_BUDGET", "enforce")
    # The session fixture opens 60 in the first module; only the 5 kept by a test count.
    result = suite.runpytest("-p", "no:cacheprovider", "test_tidy.py", "test_leaky.py")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["*60 opened by session fixtures*", "+   5 test_tidy.py (5 /dev/null)"]
    )
    assert "test_tidy.py left" not in result.stdout.str()


@pytest.mark.parametrize(("ci", "mode"), [("false", "enforce"), ("true", "report")])
def test_outside_ci_or_in_report_mode_the_growth_is_reported_without_failing(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, mode: str
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("WATTVISOR_FD_BUDGET", mode)
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*budget per module 50 (reported)",
            "+  60 test_leaky.py (60 /dev/null)",
            "        most per test: test_opens_and_forgets +30, test_opens_and_forgets_more +30",
            "+   5 test_tidy.py (5 /dev/null)",
        ]
    )


def test_an_unknown_mode_is_refused_naming_the_accepted_ones(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTVISOR_FD_BUDGET", "strict")
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*WATTVISOR_FD_BUDGET='strict' is not one of report, enforce*"])
