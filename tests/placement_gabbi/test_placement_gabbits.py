"""OpenStack Placement's own gabbi API tests, run against our ``/placement``.

The YAML files come from the ``openstack-placement`` package (its
``placement/tests/functional/gabbits``). Each file runs once, in order, against a
freshly served API (:mod:`placement_gabbi.gabbi_world`) with the data its fixtures
name (:mod:`placement_gabbi.gabbi_fixtures`); every gabbi test is then one pytest
test. Tests listed in ``known_failures.txt`` are strict xfails: one that starts to
pass fails the run until it is taken off the list.
"""

from __future__ import annotations

import unittest
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from gabbi import suitemaker, utils
from gabbi.handlers import RESPONSE_HANDLERS

from placement_gabbi import gabbi_fixtures
from placement_gabbi.gabbi_world import served_placement

# Found through the distribution: ``import placement`` would name tests/placement here.
GABBITS = Path(
    str(
        metadata.distribution("openstack-placement").locate_file(
            "placement/tests/functional/gabbits"
        )
    )
)
KNOWN_FAILURES = Path(__file__).with_name("known_failures.txt")
SKIPPED_FILES = ("-policy.yaml", "-rbac.yaml", "confirm-auth.yaml")
"""Keystone policy files: they test oslo.policy rules and roles our API does not have."""


def gabbi_files() -> list[Path]:
    return sorted(p for p in GABBITS.glob("*.yaml") if not p.name.endswith(SKIPPED_FILES))


def known_failures() -> set[str]:
    lines = KNOWN_FAILURES.read_text().splitlines() if KNOWN_FAILURES.exists() else []
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _test_names(path: Path) -> list[str]:
    return [str(test["name"]) for test in utils.load_yaml(yaml_file=str(path))["tests"]]


def _cases() -> list[Any]:
    failing = known_failures()
    cases = []
    for path in gabbi_files():
        for name in _test_names(path):
            test_id = f"{path.stem}::{name}"
            marks = (
                [pytest.mark.xfail(strict=True, reason="known failure")]
                if (test_id in failing)
                else []
            )
            cases.append(pytest.param(path, name, id=test_id, marks=marks))
    return cases


@dataclass
class Outcome:
    passed: bool
    detail: str = ""


class _Collector(unittest.TestResult):
    """Outcome of each gabbi test by its position in the file."""

    def __init__(self, order: dict[int, int]) -> None:
        super().__init__()
        self.order = order
        self.outcomes: dict[int, Outcome] = {}

    def _set(self, test: unittest.TestCase, outcome: Outcome) -> None:
        self.outcomes[self.order[id(test)]] = outcome

    def addSuccess(self, test: unittest.TestCase) -> None:
        self._set(test, Outcome(True))

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        self._set(test, Outcome(False, self._exc_info_to_string(err, test)))

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        self._set(test, Outcome(False, self._exc_info_to_string(err, test)))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        if id(test) in self.order and self.order[id(test)] not in self.outcomes:
            self._set(test, Outcome(False, f"skipped: {reason}"))

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        self._set(test, Outcome(True))  # the file itself marks it xfail

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        self._set(test, Outcome(False, "marked xfail in the gabbi file, but passed"))


def _with_tokens(suite_dict: dict[str, Any], tokens: dict[str, str]) -> dict[str, Any]:
    """The gabbi file with its ``x-auth-token`` names replaced by real tokens."""
    defaults = suite_dict.setdefault("defaults", {})
    headers = defaults.setdefault("request_headers", {})
    headers["x-auth-token"] = tokens[headers.get("x-auth-token", "admin")]
    for test in suite_dict["tests"]:
        own = test.get("request_headers") or {}
        if "x-auth-token" in own:
            own["x-auth-token"] = tokens.get(own["x-auth-token"], own["x-auth-token"])
    return suite_dict


def run_file(path: Path) -> dict[int, Outcome]:
    """Run every gabbi test of ``path`` against a new served API."""
    with served_placement(CORS_ORIGINS.get(path.stem, ())) as served:
        gabbi_fixtures.SERVED = served
        try:
            suite_dict = _with_tokens(utils.load_yaml(yaml_file=str(path)), served.tokens)
            suite = suitemaker.test_suite_from_dict(
                unittest.TestLoader(), path.stem.replace("_", "-"), suite_dict,
                str(path.parent), "127.0.0.1", served.port, gabbi_fixtures, None,
                prefix="/placement", handlers=[h() for h in RESPONSE_HANDLERS],
                test_loader_name="placement_gabbi",
            )  # fmt: skip
            order = {id(test): i for i, test in enumerate(suite)}
            result = _Collector(order)
            suite.run(result)
        finally:
            gabbi_fixtures.SERVED = None
    return result.outcomes


CORS_ORIGINS = {"cors": ("http://valid.example.com",)}
"""The origins allowed per gabbi file, as Placement's CORSFixture configures them."""

_RESULTS: dict[Path, dict[int, Outcome]] = {}
OUTCOMES: list[bool] = []
"""Every gabbi test's outcome in this run (read by the summary in conftest)."""


@pytest.mark.parametrize(("path", "name"), _cases())
def test_placement_gabbit(path: Path, name: str) -> None:
    if path not in _RESULTS:
        _RESULTS.clear()  # one file at a time; the files run in order
        _RESULTS[path] = run_file(path)
    index = _test_names(path).index(name)
    outcome = _RESULTS[path].get(index, Outcome(False, "not run"))
    OUTCOMES.append(outcome.passed)
    assert outcome.passed, outcome.detail


def test_known_failures_name_real_tests() -> None:
    ids = {f"{path.stem}::{name}" for path in gabbi_files() for name in _test_names(path)}
    assert known_failures() - ids == set(), "known_failures.txt names tests that do not exist"
