"""Cumulative energy counters that only grow, and the file that carries them over restarts.

The exporter's ``_joules_total`` series are these totals. They are saved after
every sample and before anything is published, so a restarted process never
reports less than it already did. Raw meter readings are deliberately not saved:
after a restart (or a reboot that reset RAPL) the first sample is a new baseline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattvisor.energy.atomic_file import replace_contents
from wattvisor.energy.attribution import IntervalEnergy

STATE_VERSION = 1


class EnergyStateError(RuntimeError):
    """The counter state file cannot be used; the message says which file and why."""


@dataclass(slots=True)
class VMCounter:
    """Energy a VM used on this host since it was first seen here (``joules``), and what
    it had used on other hosts before it migrated here (``carried``).

    The VM's own total (its counter, its ``_joules_total`` series) is both together, so
    it continues across a live migration; the project's total on this host counts only
    ``joules``, so energy used on the source is never counted here a second time.
    """

    uuid: str
    domain: str
    project: str
    joules: float = 0.0
    carried: float = 0.0

    @property
    def total(self) -> float:
        return self.joules + self.carried


@dataclass(slots=True)
class EnergyLedger:
    """All totals, in joules."""

    host_joules: float = 0.0
    idle_joules: float = 0.0
    other_joules: float = 0.0
    vms: dict[str, VMCounter] = field(default_factory=dict)

    def add(self, interval: IntervalEnergy, labels: Mapping[str, tuple[str, str]]) -> None:
        """Add one interval; ``labels`` gives (domain, project) for VMs seen now."""
        self.host_joules += interval.host_joules
        self.idle_joules += interval.idle_joules
        self.other_joules += interval.other_joules
        for uuid, (domain, project) in labels.items():
            counter = self.vms.get(uuid)
            if counter is None:
                self.vms[uuid] = VMCounter(uuid, domain, project)
            else:
                counter.domain = domain
                counter.project = project
        for uuid, joules in interval.vm_joules.items():
            if joules > 0:
                self.vms[uuid].joules += joules

    def forget(self, uuid: str) -> VMCounter | None:
        return self.vms.pop(uuid, None)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "host_joules": self.host_joules,
            "idle_joules": self.idle_joules,
            "other_joules": self.other_joules,
            "vms": [[c.uuid, c.domain, c.project, c.joules, c.carried] for c in self.vms.values()],
        }

    @classmethod
    def from_json(cls, data: Any) -> EnergyLedger:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"expected an object with version {STATE_VERSION}")
        vms: dict[str, VMCounter] = {}
        for uuid, domain, project, joules, *carried in data.get("vms", []):
            vms[str(uuid)] = VMCounter(
                str(uuid), str(domain), str(project), float(joules),
                float(carried[0]) if carried else 0.0,
            )  # fmt: skip
        values = [float(data[k]) for k in ("host_joules", "idle_joules", "other_joules")]
        if any(v < 0 for v in values) or any(min(c.joules, c.carried) < 0 for c in vms.values()):
            raise ValueError("negative energy total")
        return cls(values[0], values[1], values[2], vms)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new file, never half.

    The temporary name is fixed: one writer (the sampler) owns each state file.
    """
    replace_contents(str(path), str(path.with_name(f".{path.name}.tmp")), data, 0o600)


class LedgerStore:
    """JSON state file holding an :class:`EnergyLedger`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._directory_made = False

    def load(self) -> EnergyLedger:
        """The saved totals; an empty ledger when there is no file yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return EnergyLedger()
        except OSError as exc:
            raise EnergyStateError(f"cannot read energy state {self.path}: {exc}") from exc
        try:
            return EnergyLedger.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise EnergyStateError(
                f"energy state {self.path} is not a valid wattvisor energy state ({exc}); "
                "move it aside to start the counters from zero, or restore a good copy"
            ) from exc

    def save(self, ledger: EnergyLedger) -> None:
        """Replace the file; its directory is made on the first save (again if it went away)."""
        data = json.dumps(ledger.to_json(), separators=(",", ":")).encode()
        if not self._directory_made:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._directory_made = True
        try:
            write_atomically(self.path, data)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, data)
