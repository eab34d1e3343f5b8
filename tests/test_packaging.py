"""Packaging metadata in the form current build tools expect, without deprecation warnings."""

from __future__ import annotations

import ast
import importlib.util
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_string_and_the_build_needs_a_setuptools_that_reads_it() -> None:
    doc = tomllib.loads(PYPROJECT.read_text())
    assert doc["project"]["license"] == "Apache-2.0"  # the TOML-table form is deprecated
    [setuptools] = [r for r in doc["build-system"]["requires"] if r.startswith("setuptools")]
    bound = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools)
    assert bound is not None and int(bound.group(1)) >= 77, setuptools  # PEP 639 support


SRC = Path(__file__).resolve().parents[1] / "src" / "wattvisor"
# Development tools may import each other; the service's own modules may not import them.
DEV_ONLY = (SRC / "devtools", SRC / "cli" / "dev.py")
FORBIDDEN = ("wattvisor.devtools", "support", "tests", "bench")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_service_imports_no_test_double_and_no_development_tool() -> None:
    offending = [
        f"{path.relative_to(SRC.parent)}: {name}"
        for path in sorted(SRC.rglob("*.py"))
        if not any(path == dev or dev in path.parents for dev in DEV_ONLY)
        for name in sorted(_imports(path))
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert not offending, "\n".join(offending)
    assert "wattvisor.devtools.libvirtd" in _imports(SRC / "cli" / "dev.py")  # the scan sees it


def test_test_doubles_live_beside_the_tests_not_in_the_package() -> None:
    import wattvisor.auth
    import wattvisor.energy

    for gone in ("wattvisor.energy.synthetic", "wattvisor.host.localvirt"):
        assert importlib.util.find_spec(gone) is None, gone
    assert not hasattr(wattvisor.auth, "UserRegistry")
    assert not hasattr(wattvisor.energy, "InMemoryVMInventory")
