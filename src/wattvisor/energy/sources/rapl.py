"""RAPL energy counters through the Linux powercap sysfs tree.

Which zones count as "the host" follows scaphandre: the platform zone ``psys``
when the machine has one (it covers the whole SoC and more), otherwise every
``package-N`` zone plus every ``dram`` sub-zone. ``core`` and ``uncore`` are
inside their package and never added. ``intel-rapl-mmio:*`` zones report the
same package counters a second time through another interface, so they are
skipped. Counters wrap at ``max_energy_range_uj``; the wrap is undone here.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from wattvisor.energy.sources.base import (
    EnergyReadError,
    EnergySourceError,
    SampleWindow,
    SourceReading,
)

log = logging.getLogger(__name__)

_TOP = re.compile(r"^intel-rapl:(\d+)$")
_SUB = re.compile(r"^intel-rapl:(\d+):(\d+)$")
_MMIO = re.compile(r"^intel-rapl-mmio(:\d+)*$")

#: A delta implying more than this per zone is a counter reset, not energy.
DEFAULT_MAX_PLAUSIBLE_WATTS = 10_000.0

_MODULE_HINT = (
    "load the RAPL driver (`modprobe intel_rapl_msr`, which pulls in intel_rapl_common; "
    "kernels before 5.0 call it intel_rapl, AMD needs kernel >= 5.8), or set "
    'energy.source = "model" on machines without RAPL such as virtual machines'
)
_PERMISSION_HINT = (
    "energy_uj is readable by root only since Linux 5.10 (CVE-2020-8694): run wattvisor "
    "as root, or grant read access (e.g. `chmod a+r {path}` at boot, or a udev/sysfs.conf "
    'rule), or set energy.source = "model"'
)


@dataclass(frozen=True, slots=True)
class RaplZone:
    """One counter that contributes to host energy."""

    key: str
    name: str
    path: Path
    max_energy_range_uj: int

    @property
    def energy_file(self) -> Path:
        return self.path / "energy_uj"


def _read_text(path: Path) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read().strip()


def _read_int(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = os.read(fd, 64)
    finally:
        os.close(fd)
    return int(raw)


def _zone_dirs(root: Path) -> tuple[dict[str, Path], dict[str, Path], list[str]]:
    """Top-level zones and sub-zones by directory name, plus skipped mmio entries.

    Works on ``/sys/class/powercap`` (a flat list of symlinks) and on the nested
    ``/sys/devices/virtual/powercap/intel-rapl`` layout alike; the same zone seen
    twice (flat and nested) is kept once.
    """
    tops: dict[str, Path] = {}
    subs: dict[str, Path] = {}
    skipped: list[str] = []
    seen: set[str] = set()

    def visit(directory: Path) -> None:
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            return
        for entry in entries:
            path = directory / entry
            if _MMIO.match(entry):
                skipped.append(entry)
                continue
            target = _TOP if _TOP.match(entry) else _SUB if _SUB.match(entry) else None
            if target is None or not path.is_dir():
                continue
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            (tops if target is _TOP else subs)[entry] = path

    visit(root)
    if not tops and (root / "intel-rapl").is_dir():
        visit(root / "intel-rapl")
    for top in list(tops.values()):
        visit(top)
    return tops, subs, skipped


def _max_range(path: Path) -> int:
    try:
        return _read_int(path / "max_energy_range_uj")
    except (OSError, ValueError):
        return 0


_RAPL_MODULES = ("intel_rapl_common", "intel_rapl_msr", "intel_rapl")


def module_status(modules_file: Path = Path("/proc/modules")) -> str:
    """What ``/proc/modules`` says about the RAPL driver, as a clause for error messages."""
    try:
        loaded = {line.split(" ", 1)[0] for line in modules_file.read_text().splitlines()}
    except OSError:
        return f"{modules_file} is unreadable, so loaded modules are unknown"
    present = [m for m in _RAPL_MODULES if m in loaded]
    if present:
        return (
            f"{', '.join(present)} is loaded, so this CPU is probably not supported by it "
            "(see `dmesg | grep -i rapl`)"
        )
    return f"no RAPL module is loaded ({', '.join(_RAPL_MODULES)} absent from {modules_file})"


def discover_zones(
    root: Path, *, modules_file: Path = Path("/proc/modules")
) -> tuple[list[RaplZone], str]:
    """The zones whose sum is host energy, and a description of the choice.

    Raises :class:`EnergySourceError` when the tree has no usable zone; the
    message says whether the RAPL driver is loaded and what to do.
    """
    hint = f"{module_status(modules_file)}; {_MODULE_HINT}"
    if not root.is_dir():
        raise EnergySourceError(f"powercap root {str(root)!r} does not exist; {hint}")
    tops, subs, skipped = _zone_dirs(root)
    if skipped:
        log.debug("skipping RAPL MMIO duplicates %s", ", ".join(skipped))
    named: list[tuple[str, str, Path]] = []
    for key, path in [*sorted(tops.items()), *sorted(subs.items())]:
        try:
            name = _read_text(path / "name")
        except OSError:
            continue
        named.append((key, name, path))
    if not named:
        found = ", ".join(sorted(os.listdir(root))) or "nothing"
        raise EnergySourceError(f"no RAPL zones under {str(root)!r} (found: {found}); {hint}")
    psys = [(k, n, p) for k, n, p in named if k in tops and n == "psys"]
    if psys:
        chosen = psys
        how = "psys (platform) zone"
    else:
        chosen = [(k, n, p) for k, n, p in named if k in tops and n.startswith("package")]
        chosen += [(k, n, p) for k, n, p in named if n == "dram"]
        how = "sum of " + ", ".join(f"{n} ({k})" for k, n, _ in chosen)
    if not chosen:
        names = ", ".join(f"{k}={n}" for k, n, _ in named)
        raise EnergySourceError(
            f"RAPL zones under {str(root)!r} have no package or psys zone ({names}); {hint}"
        )
    zones = [RaplZone(k, n, p, max_energy_range_uj=_max_range(p)) for k, n, p in chosen]
    return zones, how


class RaplSource:
    """Host energy from RAPL powercap counters."""

    label = "rapl"

    def __init__(
        self,
        root: Path = Path("/sys/class/powercap"),
        *,
        max_plausible_watts: float = DEFAULT_MAX_PLAUSIBLE_WATTS,
        modules_file: Path = Path("/proc/modules"),
    ) -> None:
        self.root = root
        self.zones, self._how = discover_zones(root, modules_file=modules_file)
        self._max_plausible_watts = max_plausible_watts
        self._previous: dict[str, int] | None = None
        for zone in self.zones:
            self._read_zone(zone, opening=True)

    def describe(self) -> str:
        return f"RAPL powercap at {self.root}: {self._how}"

    def reset_baseline(self) -> None:
        self._previous = None

    def _read_zone(self, zone: RaplZone, *, opening: bool = False) -> int:
        try:
            return _read_int(zone.energy_file)
        except PermissionError as exc:
            message = f"cannot read {zone.energy_file}: permission denied; " + (
                _PERMISSION_HINT.format(path=zone.energy_file)
            )
            raise (EnergySourceError if opening else EnergyReadError)(message) from exc
        except (OSError, ValueError) as exc:
            message = f"cannot read RAPL counter {zone.energy_file}: {exc}"
            raise (EnergySourceError if opening else EnergyReadError)(message) from exc

    def read(self, window: SampleWindow) -> SourceReading:
        current = {zone.key: self._read_zone(zone) for zone in self.zones}
        previous = self._previous
        self._previous = current
        if previous is None:
            return SourceReading(energy_joules=0.0, is_baseline=True)
        zones: dict[str, float] = {}
        for zone in self.zones:
            before, now = previous[zone.key], current[zone.key]
            joules = counter_delta(before, now, zone.max_energy_range_uj) / 1e6
            if window.interval_s > 0 and joules / window.interval_s > self._max_plausible_watts:
                log.warning(
                    "RAPL zone %s moved from %d to %d uJ in %.1f s, which is not a wrap at "
                    "%d uJ; treating it as a counter reset",
                    zone.key,
                    before,
                    now,
                    window.interval_s,
                    zone.max_energy_range_uj,
                )
                joules = 0.0
            zones[zone.key] = joules
        return SourceReading(energy_joules=sum(zones.values()), zones=zones)


def counter_delta(previous: int, current: int, max_range: int) -> int:
    """Increase of a counter that wraps to 0 after ``max_range``; 0 when it cannot be known."""
    if current >= previous:
        return current - previous
    if max_range > 0 and previous <= max_range:
        return max_range - previous + current
    return 0
