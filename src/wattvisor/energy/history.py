"""Recent power history per series, in fixed-size ring buffers of doubles.

Keeping whole snapshots for minutes of history costs about 90 KB per sample at
200 VMs; three doubles per series per sample cost 24 bytes, which is what an
endpoint such as ``GET /v1/servers/{id}/power`` needs.
"""

from __future__ import annotations

import threading
from array import array

from wattvisor.energy.snapshot import PowerPoint

_FIELDS = 3  # taken_at, watts, joules total


class _Ring:
    __slots__ = ("count", "start", "values")

    def __init__(self, capacity: int) -> None:
        self.values = array("d", bytes(8 * _FIELDS * capacity))
        self.start = 0
        self.count = 0


class PowerHistory:
    """The last ``capacity`` points of each series (``host``, ``vm:<uuid>``, ``project:<id>``)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"history capacity {capacity} must be at least 1 sample")
        self.capacity = capacity
        self._rings: dict[str, _Ring] = {}
        self._lock = threading.Lock()

    def record(self, key: str, taken_at: float, watts: float, joules_total: float) -> None:
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = _Ring(self.capacity)
        capacity = self.capacity
        if ring.count < capacity:
            slot = (ring.start + ring.count) % capacity
            ring.count += 1
        else:
            slot = ring.start
            ring.start = (ring.start + 1) % capacity
        base = slot * _FIELDS
        values = ring.values
        values[base] = taken_at
        values[base + 1] = watts
        values[base + 2] = joules_total

    def points(self, key: str, limit: int | None = None) -> list[PowerPoint]:
        """Oldest first; at most ``limit`` of the newest points when given."""
        with self._lock:
            ring = self._rings.get(key)
            if ring is None:
                return []
            count = ring.count if limit is None else max(0, min(limit, ring.count))
            first = ring.count - count
            values = ring.values
            result = []
            for index in range(first, ring.count):
                base = ((ring.start + index) % self.capacity) * _FIELDS
                result.append(PowerPoint(values[base], values[base + 1], values[base + 2]))
            return result

    def drop(self, key: str) -> None:
        with self._lock:
            self._rings.pop(key, None)

    def keys(self) -> list[str]:
        return list(self._rings)

    def lock(self) -> threading.Lock:
        """Held by the writer while it records one sample, so readers see whole samples."""
        return self._lock
