"""Fixtures for the domain XML model tests."""

from __future__ import annotations

import pytest
from guest_samples import sample_metadata

from wattvisor.guest import InstanceMetadata


@pytest.fixture
def metadata() -> InstanceMetadata:
    return sample_metadata()
