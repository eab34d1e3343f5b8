"""Splitting one interval's energy; conservation holds for any input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattvisor.energy.attribution import attribute, busy_fraction


def test_active_energy_follows_cpu_time_and_idle_stays_with_host() -> None:
    result = attribute(100.0, 0.6, {"vm-a": 3e9, "vm-b": 1e9}, {10: 2e9})
    assert result.idle_joules == pytest.approx(40.0)
    assert result.vm_joules["vm-a"] == pytest.approx(30.0)
    assert result.vm_joules["vm-b"] == pytest.approx(10.0)
    assert result.process_joules[10] == pytest.approx(20.0)
    assert result.other_joules == pytest.approx(20.0)


def test_nobody_to_attribute_to_means_all_idle() -> None:
    result = attribute(50.0, 0.9, {"vm-a": 0.0}, {})
    assert result.idle_joules == 50.0
    assert result.vm_joules == {"vm-a": 0.0}


def test_busy_fraction_is_clamped() -> None:
    assert busy_fraction(5, 0) == 0.0
    assert busy_fraction(15, 10) == 1.0
    assert busy_fraction(-1, 10) == 0.0
    assert busy_fraction(1, 4) == 0.25


@given(
    energy=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    busy=st.floats(min_value=-0.5, max_value=1.5, allow_nan=False),
    vms=st.dictionaries(st.uuids().map(str), st.floats(min_value=0, max_value=1e12), max_size=8),
    processes=st.dictionaries(
        st.integers(min_value=1, max_value=10**6),
        st.floats(min_value=0, max_value=1e12),
        max_size=30,
    ),
)
def test_host_is_idle_plus_vms_plus_processes(
    energy: float, busy: float, vms: dict[str, float], processes: dict[int, float]
) -> None:
    result = attribute(energy, busy, vms, processes)
    parts = result.idle_joules + sum(result.vm_joules.values()) + result.other_joules
    assert parts == pytest.approx(result.host_joules, rel=1e-9, abs=1e-9)
    assert result.other_joules == pytest.approx(sum(result.process_joules.values()), abs=1e-6)
    assert result.idle_joules >= -1e-9
    assert all(v >= 0 for v in result.vm_joules.values())
