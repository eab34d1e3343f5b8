"""Ring-buffer history of power points."""

from __future__ import annotations

import pytest

from wattvisor.energy.history import PowerHistory


def test_keeps_the_newest_points_oldest_first() -> None:
    history = PowerHistory(capacity=3)
    for second in range(1, 6):
        history.record("vm:a", float(second), second * 10.0, second * 100.0)
    assert [(p.taken_at, p.power_watts, p.energy_joules_total) for p in history.points("vm:a")] == [
        (3.0, 30.0, 300.0),
        (4.0, 40.0, 400.0),
        (5.0, 50.0, 500.0),
    ]
    assert [p.taken_at for p in history.points("vm:a", limit=2)] == [4.0, 5.0]
    assert history.points("vm:a", limit=0) == []
    assert history.points("vm:b") == []


def test_dropped_series_is_gone_and_capacity_must_be_positive() -> None:
    history = PowerHistory(capacity=2)
    history.record("vm:a", 1.0, 1.0, 1.0)
    history.drop("vm:a")
    assert history.points("vm:a") == []
    with pytest.raises(ValueError, match="at least 1"):
        PowerHistory(capacity=0)
