"""The energy sampler: source → attribution → counters, guest shares, snapshots.

It runs on its own schedule in one background thread. Each sample reads the host
meter, ``/proc/stat``, every ``/proc/<pid>/stat`` once and libvirt's bulk domain
stats once, attributes the interval's energy, saves the totals, updates guest
share files, and only then publishes an immutable :class:`EnergySnapshot`.
Readers (Prometheus scrapes, REST endpoints) only ever take the latest published
snapshot, so they never trigger a sample and never wait on libvirt.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import is_, itemgetter
from pathlib import Path
from types import MappingProxyType

from wattvisor.config.settings import Settings
from wattvisor.energy.attribution import IntervalEnergy, attribute, busy_fraction
from wattvisor.energy.counters import EnergyLedger, LedgerStore, VMCounter
from wattvisor.energy.domain_stats import DomainCpuStats
from wattvisor.energy.guest_share import GuestShareWriter
from wattvisor.energy.history import PowerHistory
from wattvisor.energy.inventory import VMInventory, VMRecord
from wattvisor.energy.procfs import (
    CgroupReader,
    CpuTimes,
    ProcessScanner,
    ProcStat,
    QemuOwnership,
    read_cpu_times,
)
from wattvisor.energy.snapshot import (
    EnergySnapshot,
    HostEnergy,
    PowerPoint,
    ProcessPower,
    ProjectEnergy,
    VMEnergy,
)
from wattvisor.energy.sources import EnergyReadError, EnergySource, SampleWindow, open_source

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Baseline:
    """Raw cumulative figures of the previous sample; never persisted."""

    at: float
    cpu: CpuTimes
    processes: Mapping[int, ProcStat]
    libvirt_ns: dict[str, int]
    running: set[str] = field(default_factory=set)
    scan_number: int = 0


@dataclass(slots=True)
class _VMPlan:
    """What the sampler derives from the inventory's list of VMs.

    The list is the same records (the inventory caches them) from one sample to the
    next, so this is worked out again only when a record or the forgotten set
    changed, not per VM per sample.
    """

    listed: Sequence[VMRecord]
    forgotten: frozenset[str]
    records: list[VMRecord]
    unmanaged: set[str]
    by_uuid: dict[str, VMRecord]
    by_name: dict[str, str]
    # (domain, project) per VM, for the ledger; given to it once per plan
    labels: dict[str, tuple[str, str]]
    # (uuid, domain, share roots) of each VM whose guest sees its counter
    shares: list[tuple[str, str, tuple[Path, ...]]]
    labels_applied: bool = False
    shares_recorded: bool = False

    @classmethod
    def build(cls, listed: Sequence[VMRecord], forgotten: set[str]) -> _VMPlan:
        records = [r for r in listed if r.managed and r.uuid.lower() not in forgotten]
        by_uuid = {r.uuid.lower(): r for r in records}
        return cls(
            listed=listed,
            forgotten=frozenset(forgotten),
            records=records,
            unmanaged={r.uuid.lower() for r in listed if not r.managed},
            by_uuid=by_uuid,
            by_name={r.domain: u for u, r in by_uuid.items()},
            labels={u: (r.domain, r.project) for u, r in by_uuid.items()},
            shares=[
                (r.uuid.lower(), r.domain, r.share_dirs)
                for r in records
                if r.power_metrics and r.share_dirs
            ],
        )

    def matches(self, listed: Sequence[VMRecord], forgotten: set[str]) -> bool:
        """Whether ``listed`` holds the very records this plan was made from."""
        known = self.listed
        same = listed is known or (len(listed) == len(known) and all(map(is_, listed, known)))
        return same and forgotten == self.forgotten


class EnergySampler:
    """Samples host energy periodically and keeps the latest attribution.

    Construct with :meth:`from_settings` in the product; tests pass a source and
    synthetic roots directly. ``sample()`` does one sample synchronously;
    ``start()``/``stop()`` run it every ``interval_s`` in a daemon thread.
    """

    def __init__(
        self,
        source: EnergySource,
        *,
        inventory: VMInventory,
        state_file: Path,
        domain_stats: DomainCpuStats | None = None,
        procfs_root: Path = Path("/proc"),
        interval_s: float = 2.0,
        top_processes: int = 10,
        history_samples: int = 150,
        guest_shares: GuestShareWriter | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        clock_ticks_per_s: int | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s {interval_s} must be > 0 seconds")
        self.source = source
        self.inventory = inventory
        self.domain_stats = domain_stats
        self.procfs_root = procfs_root
        self.interval_s = interval_s
        self.top_processes = top_processes
        self.guest_shares = guest_shares or GuestShareWriter()
        self._clock = clock
        self._wall_clock = wall_clock
        ticks = clock_ticks_per_s or os.sysconf("SC_CLK_TCK")
        self._ns_per_tick = 1e9 / ticks
        self._store = LedgerStore(state_file)
        self._ledger: EnergyLedger = self._store.load()
        self._scanner = ProcessScanner(procfs_root)
        self._cgroups = CgroupReader(procfs_root)
        self._baseline: _Baseline | None = None
        self._latest: EnergySnapshot | None = None
        self._history = PowerHistory(history_samples)
        self._share_targets: dict[str, tuple[str, tuple[Path, ...]]] = {}
        self._plan: _VMPlan | None = None
        # Deleted VMs: ignored from now on even if the inventory or libvirt still
        # lists them for a moment, so no counter or share directory comes back.
        self._forgotten: set[str] = set()
        self._work = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.explanation = f"energy source: {source.describe()}"

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        inventory: VMInventory,
        domain_stats: DomainCpuStats | None = None,
        source: EnergySource | None = None,
    ) -> EnergySampler:
        """Open the configured source and build a sampler; ``explanation`` says which
        source and why, for the caller to show once (``wattvisor up`` prints it)."""
        energy = settings.energy
        if source is None:
            opened = open_source(energy)
            log.debug("%s", opened.explanation)
            source = opened.source
            explanation = opened.explanation
        else:
            explanation = f"energy source: {source.describe()}"
        sampler = cls(
            source,
            inventory=inventory,
            domain_stats=domain_stats,
            state_file=energy.state_file or settings.data_dir / "energy-state.json",
            procfs_root=energy.procfs_root,
            interval_s=energy.interval_s,
            top_processes=energy.top_processes,
            history_samples=energy.history_samples,
            guest_shares=GuestShareWriter(energy.guest_max_energy_range_uj),
        )
        sampler.explanation = explanation
        return sampler

    # ------------------------------------------------------------------ readers

    @property
    def source_label(self) -> str:
        """``rapl``, ``scaphandre`` or ``estimate``."""
        return self.source.label

    #: One line for the start-up output: which source is used and, for ``auto``, why.
    explanation: str

    def latest(self) -> EnergySnapshot | None:
        """The most recent complete sample; ``None`` until the first interval has passed."""
        return self._latest

    def vm_history(self, uuid: str, limit: int | None = None) -> list[PowerPoint]:
        """A VM's recent power and total, oldest first; empty when unknown."""
        return self._history.points(f"vm:{uuid.lower()}", limit)

    def project_history(self, project: str, limit: int | None = None) -> list[PowerPoint]:
        """A project's recent power and total on this host, oldest first."""
        return self._history.points(f"project:{project}", limit)

    def host_history(self, limit: int | None = None) -> list[PowerPoint]:
        """The host's recent power and total, oldest first."""
        return self._history.points("host", limit)

    @property
    def forgotten_vms(self) -> int:
        """Deleted VMs still listed somewhere (libvirt, a QEMU still exiting), kept ignored."""
        with self._work:
            return len(self._forgotten)

    # ------------------------------------------------------------- VM lifecycle

    def prepare_guest_share(self, vm: VMRecord) -> list[Path]:
        """Create a VM's guest share files before its domain starts; returns the domain dirs.

        Also ends a previous :meth:`forget_vm` of the same UUID: a VM started here
        is alive, whatever happened to it before.
        """
        with self._work:
            self._forgotten.discard(vm.uuid.lower())
            counter = self._ledger.vms.get(vm.uuid.lower())
            joules = counter.total if counter else 0.0
            self._share_targets[vm.uuid.lower()] = (vm.domain, vm.share_dirs)
            return [self.guest_shares.prepare(root, vm.domain, joules) for root in vm.share_dirs]

    def vm_total(self, uuid: str) -> float | None:
        """The VM's energy total (used here and carried in), None if never counted."""
        with self._work:
            counter = self._ledger.vms.get(uuid.lower())
            return counter.total if counter is not None else None

    def arrive_vm(self, vm: VMRecord, total_joules: float) -> list[Path]:
        """A VM migrated here with ``total_joules`` used so far (on its source and
        before): its total continues from there, never lower than what this host already
        counted for it, and its guest share files start at that value.

        Only the part used elsewhere is carried; this host's project totals keep
        counting only the energy used here.
        """
        if total_joules < 0:
            raise ValueError(f"total_joules {total_joules!r} must be >= 0")
        uuid = vm.uuid.lower()
        with self._work:
            self._forgotten.discard(uuid)
            counter = self._ledger.vms.get(uuid)
            if counter is None:
                counter = VMCounter(uuid, vm.domain, vm.project)
                self._ledger.vms[uuid] = counter
            counter.domain, counter.project = vm.domain, vm.project
            counter.carried = max(counter.carried, total_joules - counter.joules)
            self._store.save(self._ledger)
        return self.prepare_guest_share(vm)

    def forget_vm(self, uuid: str, vm: VMRecord | None = None) -> None:
        """The VM was deleted: drop its total and remove its guest share files.

        Until this is called a VM that stopped or migrated away keeps its last
        total, so its counter continues when it comes back. After it, the UUID is
        ignored by this sampler (a QEMU still exiting counts as a host process).
        """
        uuid = uuid.lower()
        with self._work:
            self._forgotten.add(uuid)
            self._ledger.forget(uuid)
            self._store.save(self._ledger)
            self._history.drop(f"vm:{uuid}")
            target = (vm.domain, vm.share_dirs) if vm else self._share_targets.get(uuid)
            self._share_targets.pop(uuid, None)
            if target is not None:
                for root in target[1]:
                    self.guest_shares.remove(root, target[0])

    # ----------------------------------------------------------------- schedule

    def start(self) -> None:
        """Sample every ``interval_s`` in a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wattvisor-energy", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after the sample in progress, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:
                log.exception("energy sample failed; retrying at the next interval")
            due += self.interval_s
            delay = due - time.monotonic()
            if delay < 0:
                due = time.monotonic()
                delay = 0.0
            if self._stop.wait(delay):
                break

    # ------------------------------------------------------------------ sample

    def sample(self) -> EnergySnapshot | None:
        """Take one sample now; returns the new snapshot, or ``None`` for a baseline."""
        with self._work:
            return self._sample()

    def _sample(self) -> EnergySnapshot | None:
        now = self._clock()
        cpu = read_cpu_times(self.procfs_root)
        scan = self._scanner.scan()
        stats = self.domain_stats.domain_cpu() if self.domain_stats is not None else None
        listed = self.inventory.vms()
        forgotten = self._forgotten
        if forgotten:
            # A deleted VM nothing lists any more cannot come back: stop remembering it,
            # or the set grows by one UUID per VM ever deleted.
            seen = {r.uuid.lower() for r in listed} | {u.lower() for u in stats or {}}
            seen |= {i.uuid.lower() for i in scan.qemu.values() if i.uuid is not None}
            forgotten.intersection_update(seen)
        plan = self._plan
        if plan is None or not plan.matches(listed, forgotten):
            plan = self._plan = _VMPlan.build(listed, forgotten)
            if plan.unmanaged:
                self._drop_unmanaged(plan.unmanaged)
        previous = self._baseline
        interval_s = now - previous.at if previous is not None else 0.0
        busy = 0.0
        if previous is not None:
            busy = busy_fraction(
                cpu.busy_ticks - previous.cpu.busy_ticks,
                cpu.total_ticks - previous.cpu.total_ticks,
            )
        try:
            reading = self.source.read(SampleWindow(interval_s=interval_s, busy_fraction=busy))
        except EnergyReadError as exc:
            log.warning("energy source %s failed, interval skipped: %s", self.source.label, exc)
            self.source.reset_baseline()
            reading = None

        by_uuid = plan.by_uuid
        by_name = plan.by_name
        # VMs are what the inventory lists as wattvisor's now, or counted before (stopped
        # or migrated away). Any other domain's CPU time stays with its QEMU process, a
        # host process like any other.
        vms = (by_uuid.keys() | self._ledger.vms.keys()) - forgotten
        domains = stats or {}
        stats_by_name: dict[str, str] | None = None  # made only for a QEMU without -uuid

        qemu_uuid: dict[int, str] = {}
        for pid, identity in scan.qemu.items():
            uuid = identity.uuid
            if uuid is None and identity.name is not None:
                if stats_by_name is None:
                    stats_by_name = {d.name: u for u, d in domains.items() if u in vms}
                uuid = by_name.get(identity.name) or stats_by_name.get(identity.name)
            if uuid is not None and uuid in vms:
                qemu_uuid[pid] = uuid
        ownership = QemuOwnership(scan, self._cgroups) if qemu_uuid else None
        self._cgroups.prune(scan.processes)

        libvirt_now: dict[str, int] = {}
        for uuid, dom in domains.items():
            if dom.active and dom.cpu_ns is not None and uuid in vms:
                libvirt_now[uuid] = dom.cpu_ns
        running: set[str] = set(libvirt_now) | set(qemu_uuid.values())

        vm_ns: dict[str, float] = {}
        cpu_source: dict[str, str] = {
            uuid: "procfs" for uuid in qemu_uuid.values() if uuid not in libvirt_now
        }
        other_ns: dict[int, float] = {}
        per_tick = self._ns_per_tick
        prev_processes: Mapping[int, ProcStat] = previous.processes if previous else {}
        processes = scan.processes
        # A pid whose stat text did not change since the previous sample used no CPU
        # time: visit only the others, which the scanner lists when that sample's scan
        # was its last one (always, unless a sample failed half-way).
        consecutive = previous is not None and previous.scan_number == scan.number - 1
        for pid in scan.changed if consecutive else processes:
            stat = processes[pid]
            before = prev_processes.get(pid)
            if before is stat:
                continue  # unchanged stat text: no CPU time used
            if before is None or before.starttime != stat.starttime:
                delta = stat.cpu_ticks  # started since the previous sample
            else:
                delta = stat.cpu_ticks - before.cpu_ticks
            if delta <= 0:
                continue
            qemu_pid = ownership.owner(pid) if ownership is not None else None
            vm = qemu_uuid.get(qemu_pid) if qemu_pid is not None else None
            if vm is not None:
                if vm not in libvirt_now:
                    vm_ns[vm] = vm_ns.get(vm, 0.0) + delta * per_tick
            else:
                other_ns[pid] = delta * per_tick
        for vm in cpu_source:
            vm_ns.setdefault(vm, 0.0)
        if previous is not None:
            for uuid, ns in libvirt_now.items():
                before_ns = previous.libvirt_ns.get(uuid)
                if before_ns is None:
                    delta_ns = 0 if uuid in previous.running else ns
                else:
                    delta_ns = ns - before_ns if ns >= before_ns else ns
                vm_ns[uuid] = float(delta_ns)
                cpu_source[uuid] = "libvirt"

        self._baseline = _Baseline(now, cpu, processes, libvirt_now, running, scan.number)
        if previous is None or reading is None or reading.is_baseline or interval_s <= 0:
            return None

        interval = attribute(reading.energy_joules, busy, vm_ns, other_ns)
        # Labels change only with the plan; until then every counter already has them.
        self._ledger.add(interval, {} if plan.labels_applied else plan.labels)
        plan.labels_applied = True
        self._store.save(self._ledger)
        self._write_guest_shares(plan)
        snapshot = self._snapshot(interval, interval_s, busy, cpu_source, scan.processes)
        self._latest = snapshot
        self._record_history(snapshot)
        return snapshot

    def _drop_unmanaged(self, uuids: set[str]) -> None:
        """Drop counters an older version kept for domains that are not wattvisor's."""
        for uuid in uuids & self._ledger.vms.keys():
            self._ledger.forget(uuid)
            self._history.drop(f"vm:{uuid}")
            log.info("dropped the energy counter of domain %s: it is not wattvisor's", uuid)

    def _record_history(self, snap: EnergySnapshot) -> None:
        history = self._history
        at = snap.taken_at
        with history.lock():
            history.record("host", at, snap.host.power_watts, snap.host.energy_joules_total)
            for uuid, vm in snap.vms.items():
                history.record("vm:" + uuid, at, vm.power_watts, vm.energy_joules_total)
            for name, project in snap.projects.items():
                history.record(
                    "project:" + name, at, project.power_watts, project.energy_joules_total
                )

    def _write_guest_shares(self, plan: _VMPlan) -> None:
        if not plan.shares_recorded:
            for uuid, domain, roots in plan.shares:
                self._share_targets[uuid] = (domain, roots)
            plan.shares_recorded = True
        counters = self._ledger.vms
        update = self.guest_shares.update
        for uuid, domain, roots in plan.shares:
            counter = counters.get(uuid)
            joules = counter.total if counter is not None else 0.0
            for root in roots:
                try:
                    update(root, domain, joules)
                except (OSError, ValueError) as exc:
                    log.warning("cannot update guest share of %s under %s: %s", domain, root, exc)

    def _snapshot(
        self,
        interval: IntervalEnergy,
        interval_s: float,
        busy: float,
        cpu_source: Mapping[str, str],
        processes: Mapping[int, ProcStat],
    ) -> EnergySnapshot:
        ledger = self._ledger
        vms: dict[str, VMEnergy] = {}
        projects: dict[str, list[float]] = {}
        joules_of = interval.vm_joules.get
        source_of = cpu_source.get
        for uuid, counter in ledger.vms.items():
            power = joules_of(uuid, 0.0) / interval_s
            total = counter.total
            project = counter.project
            source = source_of(uuid)
            vms[uuid] = VMEnergy(
                uuid, counter.domain, project, total, power, source is not None, source or "none"
            )
            totals = projects.get(project)
            if totals is None:
                projects[project] = [counter.joules, power, 1]
            else:
                totals[0] += counter.joules  # energy used here only
                totals[1] += power
                totals[2] += 1
        top = heapq.nlargest(self.top_processes, interval.process_joules.items(), key=itemgetter(1))
        return EnergySnapshot(
            taken_at=self._wall_clock(),
            interval_s=interval_s,
            source=self.source.label,
            busy_fraction=busy,
            host=HostEnergy(
                energy_joules_total=ledger.host_joules,
                idle_energy_joules_total=ledger.idle_joules,
                other_processes_energy_joules_total=ledger.other_joules,
                power_watts=interval.host_joules / interval_s,
                idle_power_watts=interval.idle_joules / interval_s,
                other_processes_power_watts=interval.other_joules / interval_s,
            ),
            vms=MappingProxyType(vms),
            projects=MappingProxyType(
                {p: ProjectEnergy(p, t[0], t[1], int(t[2])) for p, t in projects.items()}
            ),
            top_processes=tuple(
                ProcessPower(pid, processes[pid].comm, joules / interval_s)
                for pid, joules in top
                if pid in processes
            ),
            interval=interval,
        )
