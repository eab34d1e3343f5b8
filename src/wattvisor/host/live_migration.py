"""The host's side of a live migration: send a running guest to another host's libvirtd.

The source host's agent runs the whole libvirt migration (peer to peer: its libvirtd
talks to the target's directly): the control connection goes to the target's libvirtd
URI, the memory stream to ``migrate_uri`` (``tcp://<target's tunnel address>`` when the
migration has a tunnel). The domain is made persistent on the target and undefined on
the source, so exactly one host defines it afterwards. Progress and the final
statistics come from libvirt's job info; an abort is libvirt's ``abortJob``, after which
the guest runs on on the source as before.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from wattvisor.host.driver import DomainNotFound, HostDriver, HostError

log = logging.getLogger(__name__)

MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
)


@dataclass(frozen=True, slots=True)
class MigrationOrder:
    """What the source host is asked to do for one migration."""

    migration_id: str
    domain_name: str
    target_libvirt_uri: str
    """The target libvirtd's URI as the source's libvirtd reaches it (control)."""
    migrate_uri: str
    """Where the memory goes: ``tcp://<address>`` (the tunnel's far end, or the target)."""
    max_bandwidth_mib_s: int
    timeout_s: float
    dest_name: str | None = None
    """The domain's name on the target when its own is taken there (domain names are
    counted per host); None keeps the name."""
    unplug_shares: bool = False
    """The guest has power-metrics shares (virtiofs): unplugged for the move when this
    host's QEMU cannot migrate them, plugged back here if the migration fails."""
    unplug_timeout_s: float = 30.0
    """How long the guest has to acknowledge the unplug."""


@dataclass(frozen=True, slots=True)
class MigrationProgress:
    """A running migration job as libvirt reports it on the source."""

    active: bool
    percent: int
    """Share of the guest's memory sent, 0-100."""
    memory_total: int
    memory_processed: int
    memory_remaining: int
    elapsed_ms: int


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What libvirt reports of a finished migration (from the target's completed job)."""

    seconds: float
    downtime_ms: int | None
    total_time_ms: int | None
    memory_bytes: int | None
    share_path: str | None = None
    """How power-metrics shares crossed: ``unplug`` (unplugged here, plugged on the
    target) or ``native`` (QEMU migrated the device); None without shares."""
    energy_joules: float | None = None
    """The guest's energy total here when it left (its counter continues from it)."""


_native_virtiofs: dict[str, bool] = {}
QEMU_SYSTEM = "qemu-system-x86_64"  # the emulator wattvisor's hosts run (host/binaries.py)


def virtiofs_migrates_natively(emulator: str) -> bool:
    """True when this QEMU can migrate a vhost-user-fs device itself: its device has
    the ``migration`` property (QEMU 8.2 on); asked of the binary, once per path."""
    known = _native_virtiofs.get(emulator)
    if known is not None:
        return known
    if Path(emulator).name != QEMU_SYSTEM:
        # Only the QEMU the host's required programs name is asked; any other emulator
        # takes the path that works everywhere (unplug the share for the move).
        log.info("not asking emulator %s about virtiofs migration: not %s", emulator, QEMU_SYSTEM)
        return False
    binary = str(Path(emulator).parent / QEMU_SYSTEM)
    try:
        done = subprocess.run(
            [binary, "-device", "vhost-user-fs-pci,help"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        found = re.search(r"^\s*migration=", done.stdout, re.MULTILINE) is not None
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot ask %s for its virtiofs device properties: %s", emulator, exc)
        return False
    _native_virtiofs[emulator] = found
    return found


def _job_progress(info: list[int]) -> MigrationProgress:
    job_type, elapsed, _remaining_t, _dt, _dp, _dr, mem_total, mem_processed, mem_remaining = info[
        :9
    ]
    percent = 0
    if mem_total > 0:
        percent = max(0, min(100, round(100 * (mem_total - mem_remaining) / mem_total)))
    return MigrationProgress(
        active=job_type not in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED),
        percent=percent, memory_total=int(mem_total), memory_processed=int(mem_processed),
        memory_remaining=int(mem_remaining), elapsed_ms=int(elapsed),
    )  # fmt: skip


class HostMigrations:
    """One host's migration calls, over its driver's libvirt connection."""

    def __init__(self, driver: HostDriver) -> None:
        self.driver = driver

    def _domain(self, domain_name: str) -> libvirt.virDomain:
        try:
            return self.driver.connection.get().lookupByName(domain_name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(f"no domain {domain_name!r} on {self.driver.uri}") from exc
            raise HostError(f"looking up {domain_name!r} failed: {exc}") from exc

    def migrate_out(self, order: MigrationOrder) -> MigrationResult:
        """Migrate the running domain live to the target; blocks until libvirt is done.

        On failure (refused, aborted, timed out, connection lost) libvirt leaves the guest
        running here, and this raises naming the cause.
        """
        dom = self._domain(order.domain_name)
        if not dom.isActive():
            raise HostError(f"domain {order.domain_name!r} is not running; only a running "
                            "guest migrates live")  # fmt: skip
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: order.migrate_uri}
        if order.dest_name is not None and order.dest_name != order.domain_name:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_NAME] = order.dest_name
        if order.max_bandwidth_mib_s > 0:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = order.max_bandwidth_mib_s
        started = time.monotonic()
        try:
            dom.migrateToURI3(order.target_libvirt_uri, params, MIGRATE_FLAGS)
        except libvirt.libvirtError as exc:
            raise HostError(
                f"migration of {order.domain_name!r} to {order.target_libvirt_uri} over "
                f"{order.migrate_uri} failed: {exc.get_error_message()}"
            ) from exc
        seconds = time.monotonic() - started
        return self._completed(order, seconds)

    def _completed(self, order: MigrationOrder, seconds: float) -> MigrationResult:
        """The completed job's figures, read on the target (the source's domain is gone)."""
        stats: dict[str, Any] = {}
        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(order.target_libvirt_uri)
            try:
                dom = conn.lookupByName(order.dest_name or order.domain_name)
                stats = dict(dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
            finally:
                conn.close()

        def num(key: str) -> int | None:
            value = stats.get(key)
            return int(value) if isinstance(value, int) else None

        return MigrationResult(
            seconds=seconds, downtime_ms=num("downtime"), total_time_ms=num("time_elapsed"),
            memory_bytes=num("memory_processed"),
        )  # fmt: skip

    def progress(self, domain_name: str) -> MigrationProgress | None:
        """The domain's running job, or None when it has none (or is not here)."""
        try:
            dom = self._domain(domain_name)
            info = dom.jobInfo()
        except (DomainNotFound, libvirt.libvirtError):
            return None
        progress = _job_progress(list(info))
        return progress if progress.active else None

    def abort(self, domain_name: str) -> bool:
        """Abort the domain's migration job; False when there was none to abort."""
        try:
            self._domain(domain_name).abortJob()
        except DomainNotFound:
            return False
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                return False  # no job running
            raise HostError(f"aborting the migration of {domain_name!r} failed: {exc}") from exc
        return True
