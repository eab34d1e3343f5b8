"""make test runs strict: skips fail unless a test declares it skips by design."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SUITE = """
import pytest


def test_needs_infrastructure():
    pytest.skip("no libvirtd here")


@pytest.mark.skip_by_design("only older libvirt")
def test_does_not_apply_here():
    pytest.skip("libvirt is new enough")


@pytest.mark.xfail(reason="known")
def test_known_failure():
    assert False


def test_passes():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest("pytest_plugins = ('support.strict_skips',)")
    pytester.makepyfile(test_sample=SUITE)
    return pytester


def test_in_ci_an_undeclared_skip_fails_and_says_what_to_do(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(["*CI=true*no libvirtd here*skip_by_design*"])


def test_outside_ci_a_missing_piece_is_a_skip(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    suite.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=2, xfailed=1)


@pytest.mark.parametrize("target", ["test", "pytest"])
def test_make_runs_the_tests_in_strict_mode(target: str, tmp_path: Path) -> None:
    """The Makefile's own recipes, with stand-ins for setup and the tools that print $CI."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("ruff", "mypy", "pytest"):
        script = fake_bin / tool
        script.write_text(f'#!/bin/sh\necho "{tool} CI=$CI"\n')
        script.chmod(0o755)
    stand_ins = tmp_path / "stand-ins.mk"
    stand_ins.write_text(f"BIN := {fake_bin}\nsetup: ; @:\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    run = subprocess.run(
        ["make", "-s", "-C", str(REPO), "-f", "Makefile", "-f", str(stand_ins), target],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "pytest CI=true" in run.stdout, run.stdout
