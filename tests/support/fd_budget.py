"""Open file descriptors of the pytest process, per test module: report the growth, guard a budget.

A test run is one long process; an engine not disposed, a connection or client not
closed, a pipe of a child left open each keep a descriptor until the process ends.
Hundreds of modules later the count passes 1,024 and unrelated code breaks
(``select()`` refuses such numbers, ``ulimit -n`` is reached). So each module's
growth is measured where it happens: the descriptors open after the module's last
teardown (module fixtures included) that were not open before its first test.

Descriptors opened while a session- (or package-) scoped fixture is set up belong to
the whole session (a libvirt connection, a PostgreSQL server): they are counted once,
as the fixture's, never as the module's that happened to use it first. Leaked objects
that the garbage collector would close are collected before each module's count, so
only what stays open for good counts, and the count does not depend on GC timing.

At the end the modules that grew the count most are printed with what their
descriptors point to. With ``CI=true`` and ``WATTVISOR_FD_BUDGET=enforce`` a module
that leaves more than :data:`MODULE_BUDGET` new descriptors behind fails (an error at
the teardown of its last test), so a leak is caught in the module that causes it.
The default (:data:`DEFAULT_MODE`) only reports, until a full CI run has shown every
module under the budget; then the default becomes ``enforce``.
"""

from __future__ import annotations

import gc
import os
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field

import pytest

from support.availability import in_ci

# New descriptors a module may leave behind. Generous: lazily built caches and
# library-internal pools may keep a few for good, a leak per test shows far above it.
MODULE_BUDGET = 50
# "report" or "enforce" (the latter only under CI=true); WATTVISOR_FD_BUDGET overrides it.
DEFAULT_MODE = "report"
MODES = ("report", "enforce")
# Modules printed in the summary.
REPORTED_MODULES = 12

FD_DIR = "/proc/self/fd"

Descriptor = tuple[int, str]


def open_descriptors() -> set[Descriptor]:
    """Each open descriptor with what it points to; the target tells reuse of a number apart."""
    found: set[Descriptor] = set()
    for name in os.listdir(FD_DIR):
        try:
            target = os.readlink(f"{FD_DIR}/{name}")
        except OSError:  # closed meanwhile (the listing's own descriptor among them)
            continue
        found.add((int(name), target))
    return found


def kind(target: str) -> str:
    """What a descriptor is, without the inode or path details that differ per run."""
    if target.startswith(("socket:", "pipe:")):
        return target.split(":", 1)[0]
    if target.startswith(("anon_inode:", "/dev/")):
        return target
    suffix = os.path.splitext(target.removesuffix(" (deleted)"))[1]
    return f"file *{suffix}" if suffix else "file"


@dataclass
class ModuleGrowth:
    module: str
    new: set[Descriptor]
    worst_tests: list[tuple[str, int]]

    def summary(self) -> str:
        kinds = Counter(kind(target) for _, target in self.new)
        parts = ", ".join(f"{count} {name}" for name, count in kinds.most_common(4))
        tests = ", ".join(f"{name} +{count}" for name, count in self.worst_tests if count > 0)
        line = f"+{len(self.new):4d} {self.module} ({parts})"
        return f"{line}\n        most per test: {tests}" if tests else line


@dataclass(eq=False)
class FdBudget:
    """Counts descriptors around modules and session fixtures; one instance per run."""

    budget: int
    enforce: bool
    session_owned: set[Descriptor] = field(default_factory=set)
    module: str | None = None
    module_start: set[Descriptor] = field(default_factory=set)
    test_start: set[Descriptor] = field(default_factory=set)
    test_growth: dict[str, int] = field(default_factory=dict)
    modules: list[ModuleGrowth] = field(default_factory=list)
    first_count: int = 0
    last_count: int = 0
    peak_count: int = 0

    def left_behind(self, before: set[Descriptor]) -> set[Descriptor]:
        return open_descriptors() - before - self.session_owned

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        if fixturedef.scope not in ("session", "package"):
            return (yield)
        before = open_descriptors()
        try:
            return (yield)
        finally:
            self.session_owned |= open_descriptors() - before

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        module = item.nodeid.split("::", 1)[0]
        if module != self.module:
            self.module = module
            self.module_start = open_descriptors()
            self.test_growth = {}
            if not self.first_count:
                self.first_count = len(self.module_start)
        self.test_start = open_descriptors()
        try:
            return (yield)
        finally:
            self.last_count = len(open_descriptors())
            self.peak_count = max(self.peak_count, self.last_count)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        result = yield
        self.test_growth[item.nodeid.split("::", 1)[-1]] = len(self.left_behind(self.test_start))
        if nextitem is not None and nextitem.nodeid.split("::", 1)[0] == self.module:
            return result
        # The module's fixtures are gone now; what it left behind stays for the session.
        gc.collect()
        worst = sorted(self.test_growth.items(), key=lambda entry: -entry[1])[:3]
        growth = ModuleGrowth(str(self.module), self.left_behind(self.module_start), worst)
        self.modules.append(growth)
        if self.enforce and len(growth.new) > self.budget:
            raise AssertionError(
                f"{self.module} left {len(growth.new)} open file descriptors behind "
                f"(budget {self.budget}): {growth.summary()}; close or dispose what the tests "
                "and fixtures open (engines, clients, connections, pipes)"
            )
        return result

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        grown = sorted((m for m in self.modules if m.new), key=lambda m: -len(m.new))
        terminalreporter.section("open file descriptors")
        terminalreporter.write_line(
            f"{self.first_count} at the first test, {self.peak_count} at most after a test, "
            f"{self.last_count} after the last; "
            f"{len(self.session_owned)} opened by session fixtures; "
            f"budget per module {self.budget} ({'enforced' if self.enforce else 'reported'})"
        )
        for growth in grown[:REPORTED_MODULES]:
            terminalreporter.write_line(growth.summary())


def pytest_configure(config: pytest.Config) -> None:
    if config.option.collectonly:
        return
    mode = os.environ.get("WATTVISOR_FD_BUDGET", DEFAULT_MODE)
    if mode not in MODES:
        raise pytest.UsageError(f"WATTVISOR_FD_BUDGET={mode!r} is not one of {', '.join(MODES)}")
    enforce = mode == "enforce" and in_ci()
    config.pluginmanager.register(FdBudget(MODULE_BUDGET, enforce=enforce), "fd_budget")
