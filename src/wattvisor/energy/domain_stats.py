"""CPU time per libvirt domain, in one bulk call per sample.

libvirt's ``cpu.time`` comes from the domain's cgroup, so it covers vCPU threads,
QEMU's I/O threads and vhost workers that the cgroup accounts, which a per-process
view of ``/proc`` can miss. One ``getAllDomainStats`` call answers for every
domain at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: ``virDomainState`` values for which a domain has a QEMU process.
_ACTIVE_STATES = frozenset({1, 2, 3, 7})  # running, blocked, paused, pmsuspended


@dataclass(frozen=True, slots=True)
class DomainCpu:
    """Cumulative CPU time of one domain since it started.

    ``cpu_ns`` is ``None`` when libvirt has no figure for it (inactive domain, or a
    driver without ``cpu.time``, such as ``test:///default``); the sampler then
    measures the domain's QEMU process tree in ``/proc`` instead.
    """

    uuid: str
    name: str
    active: bool
    cpu_ns: int | None


class DomainCpuStats(Protocol):
    """Per-domain CPU time keyed by lower-case UUID; ``None`` when the hypervisor is unreachable."""

    def domain_cpu(self) -> Mapping[str, DomainCpu] | None: ...


class LibvirtDomainCpuStats:
    """:class:`DomainCpuStats` from a libvirt connection."""

    def __init__(self, conn: Any) -> None:
        import libvirt

        self._conn = conn
        self._libvirt_error: type[Exception] = libvirt.libvirtError
        self._stats = libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL

    def domain_cpu(self) -> Mapping[str, DomainCpu] | None:
        try:
            records = self._conn.getAllDomainStats(self._stats, 0)
        except self._libvirt_error as exc:
            log.warning("libvirt domain stats unavailable this sample: %s", exc)
            return None
        result: dict[str, DomainCpu] = {}
        for domain, stats in records:
            try:
                uuid = domain.UUIDString().lower()
                name = domain.name()
            except self._libvirt_error:
                continue
            active = int(stats.get("state.state", 0)) in _ACTIVE_STATES
            # For a domain without a QEMU process (pid 0) libvirt 9.0's QEMU driver
            # reads /proc/self/stat and reports libvirtd's own CPU time as the
            # domain's cpu.time; only a running domain's figure is its own.
            raw = stats.get("cpu.time") if active else None
            result[uuid] = DomainCpu(
                uuid=uuid, name=name, active=active, cpu_ns=int(raw) if raw is not None else None
            )
        return result
