"""Skip-or-fail policy for tests that need real infrastructure (root, libvirtd, mounts)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True on the CI runner, where every piece of infrastructure is expected to work."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip locally, fail in CI: a skip there would hide a broken set-up."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{what} needs root (euid is {os.geteuid()})")
