"""Select a host and claim it: prefilters → candidates → weighers → claim with the
generation check, moving to the next host when a concurrent claim got there first, and
to another host (bounded) when the chosen one fails to spawn the VM."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid as uuidlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from wattvisor.config.settings import SchedulerSettings
from wattvisor.placement import (
    CapacityExceeded,
    ConcurrentUpdate,
    ConsumerConflict,
    NotFound,
    Placement,
)
from wattvisor.placement.index import CandidateTable, Check, Elimination, ProviderState
from wattvisor.scheduler.prefilters import DISABLED_TRAIT, run_prefilters
from wattvisor.scheduler.request_spec import RequestSpec
from wattvisor.scheduler.weighers import HostPowerSource, WeighContext, best_host

LOG = logging.getLogger(__name__)
DOWN_CHECK = "down"


@dataclass(frozen=True, slots=True)
class Claim:
    """Resources held for one VM on one host until released."""

    consumer_uuid: str
    provider_uuid: str
    provider_name: str
    resources: dict[str, int]
    consumer_generation: int
    took_s: float = 0.0
    """How long choosing and claiming the host took: the scheduler's own time, which
    the controller logs with every build so an operator sees it grow with the fleet."""


class NoValidHost(Exception):
    """No host can take the request; ``reasons`` says what removed the hosts and
    ``spawn_failures`` ("host: error", one per host tried) why spawning failed where
    a claim had succeeded, so that the message alone explains the failure."""

    def __init__(
        self, summary: str, reasons: Iterable[str] = (), spawn_failures: Iterable[str] = ()
    ) -> None:
        self.summary = summary
        self.reasons = tuple(reasons)
        self.spawn_failures = tuple(spawn_failures)
        text = summary if not self.reasons else summary + ": " + "; ".join(self.reasons)
        if self.spawn_failures:
            text += " (spawn errors: " + "; ".join(self.spawn_failures) + ")"
        super().__init__(text)


class SpawnFailed(Exception):
    """Raised by a spawn callback when the host could not start the VM."""


class Scheduler:
    """The controller's scheduler over one Placement service."""

    def __init__(
        self,
        placement: Placement,
        settings: SchedulerSettings | None = None,
        power: HostPowerSource | None = None,
        down_hosts: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.placement = placement
        self.settings = settings or SchedulerSettings()
        self.weigh_context = WeighContext(power=power)
        self.down_hosts = down_hosts
        """The hosts that are down now (their agent stopped sending heartbeats): skipped."""

    def prepare(self, spec: RequestSpec) -> RequestSpec:
        """Run the enabled prefilters on ``spec`` (once per spec)."""
        return run_prefilters(spec, self.settings)

    def select_and_claim(
        self,
        spec: RequestSpec,
        consumer_uuid: str | None = None,
        *,
        exclude: Iterable[str] = (),
        prefiltered: bool = False,
        spawn_failures: Iterable[str] = (),
    ) -> Claim:
        """Claim the best host for ``spec`` for ``consumer_uuid`` (new uuid when None).

        ``exclude`` lists provider uuids not to use (hosts that already failed this VM),
        ``spawn_failures`` why they failed, for the explanation. ``prefiltered`` says
        :meth:`prepare` ran on ``spec`` already. Raises NoValidHost with an explanation
        when no host fits, InvalidSpec when the flavor and image contradict each other,
        and ConsumerConflict when the consumer already holds a claim.
        """
        started = time.perf_counter()
        if not prefiltered:
            self.prepare(spec)
        consumer = consumer_uuid or str(uuidlib.uuid4())
        excluded = set(exclude)
        down = frozenset(self.down_hosts()) if self.down_hosts is not None else frozenset()
        request = spec.candidate_request()
        conflicts = 0

        def choose(table: CandidateTable) -> ProviderState | None:
            if excluded or down:
                table.exclude(excluded | down)
            if not table.ids:
                return None
            return table.state(best_host(table, self.settings, self.weigh_context))

        while True:
            host = self.placement.with_candidates(request, choose)
            if host is None:
                raise self._no_valid_host(spec, excluded, spawn_failures, down)
            try:
                generation = self.placement.set_allocations(
                    consumer,
                    {host.uuid: request.resources},
                    project_id=spec.project_id,
                    user_id=spec.user_id,
                    consumer_generation=None,
                )
            except ConsumerConflict:
                raise  # the consumer holds a claim already: release it first
            except (CapacityExceeded, ConcurrentUpdate) as exc:
                conflicts += 1
                LOG.info("claim on %s lost (%s); %d conflicts so far", host.name, exc, conflicts)
                if conflicts >= self.settings.max_claim_conflicts:
                    raise NoValidHost(
                        f"gave up after {conflicts} claims lost to concurrent requests"
                    ) from exc
                continue
            LOG.debug("claimed %s on %s for %s", request.resources, host.name, consumer)
            return Claim(
                consumer, host.uuid, host.name, dict(request.resources), generation or 1,
                took_s=time.perf_counter() - started,
            )  # fmt: skip

    def release(self, claim: Claim) -> None:
        """Give a claim's resources back (no error when they were released already)."""
        with contextlib.suppress(NotFound):
            self.placement.delete_allocations(claim.consumer_uuid)

    def schedule(
        self,
        spec: RequestSpec,
        spawn: Callable[[Claim], None],
        consumer_uuid: str | None = None,
        *,
        prefiltered: bool = False,
    ) -> Claim:
        """Claim a host and ``spawn`` on it; when spawning raises SpawnFailed, release the
        claim and try the next host, up to ``max_attempts`` hosts in all.

        ``prefiltered`` says :meth:`prepare` ran on ``spec`` already (e.g. to refuse a bad
        request before recording it), so the prefilters are not run a second time. The
        NoValidHost raised when every host failed or is excluded carries each host's
        spawn error.
        """
        if not prefiltered:
            self.prepare(spec)
        failed: list[str] = []
        errors: list[str] = []
        for _attempt in range(self.settings.max_attempts):
            claim = self.select_and_claim(
                spec, consumer_uuid, exclude=failed, prefiltered=True, spawn_failures=errors
            )
            consumer_uuid = claim.consumer_uuid
            try:
                spawn(claim)
            except SpawnFailed as exc:
                self.release(claim)
                failed.append(claim.provider_uuid)
                errors.append(f"{claim.provider_name}: {exc}")
                continue
            return claim
        raise NoValidHost(
            f"spawning failed on {len(failed)} host(s), the most attempts allowed",
            spawn_failures=errors,
        )

    def _no_valid_host(
        self,
        spec: RequestSpec,
        excluded: set[str],
        spawn_failures: Iterable[str],
        down: frozenset[str] = frozenset(),
    ) -> NoValidHost:
        checks = elimination_checks(spec, excluded)
        if down:
            checks.insert(0, Check("excluded", DOWN_CHECK, uuids=down))
        total, eliminated, passed = self.placement.eliminate(checks)
        reasons = [_describe(e, spec) for e in eliminated if e.removed]
        if total == 0:
            reasons.append("no host is registered")
        elif passed:
            reasons.append(
                f"{_hosts(passed)} passed every check when checked again (their free "
                "capacity changed meanwhile); try again"
            )
        wanted = ", ".join(f"{rc}:{n}" for rc, n in sorted(spec.resources.items()))
        return NoValidHost(f"no valid host among {total} for {wanted}", reasons, spawn_failures)


def elimination_checks(spec: RequestSpec, excluded: Iterable[str] = ()) -> list[Check]:
    """The checks a host must pass, in the order a NoValidHost explanation blames them.

    A host is blamed on the first check it fails: first what rules it out for any
    request (an operator disabled it, it failed to spawn this server), then what it
    cannot offer (each required or forbidden trait), last what it lacks only for now
    (room for each resource class). So "1 host is disabled" is said only of a host
    that is, and a full host is blamed on the class it lacks room for.
    """
    checks: list[Check] = []
    if DISABLED_TRAIT in spec.forbidden:
        checks.append(Check("forbidden", DISABLED_TRAIT))
    if excluded:
        checks.append(Check("excluded", uuids=frozenset(excluded)))
    checks.extend(Check("required", trait) for trait in sorted(spec.required))
    checks.extend(
        Check("forbidden", trait) for trait in sorted(spec.forbidden) if trait != DISABLED_TRAIT
    )
    checks.extend(Check("resource", rc, amount) for rc, amount in sorted(spec.resources.items()))
    return checks


def _hosts(count: int) -> str:
    return f"{count} host" if count == 1 else f"{count} hosts"


def _describe(elimination: Elimination, spec: RequestSpec) -> str:
    check, count = elimination.check, elimination.removed
    hosts = _hosts(count)
    one = count == 1
    if check.kind == "excluded" and check.name == DOWN_CHECK:
        verb, whose = ("is", "its") if one else ("are", "their")
        return f"{hosts} {verb} down (no heartbeat from {whose} agent)"
    if check.kind == "excluded":
        return f"{hosts} failed to spawn this server and {'was' if one else 'were'} not retried"
    if check.kind == "forbidden" and check.name == DISABLED_TRAIT:
        return f"{hosts} {'is' if one else 'are'} disabled by an operator ({DISABLED_TRAIT})"
    if check.kind == "required":
        reason = spec.reasons.get(check.name)
        why = f" (required by {reason})" if reason else ""
        return f"{hosts} {'lacks' if one else 'lack'} {check.name}{why}"
    if check.kind == "forbidden":
        reason = spec.reasons.get("!" + check.name)
        why = f" (forbidden by {reason})" if reason else ""
        return f"{hosts} {'has' if one else 'have'} {check.name}{why}"
    if check.kind == "any_of":
        return f"{hosts} {'has' if one else 'have'} none of {', '.join(check.names)}"
    if elimination.without_inventory == count:
        room = f"no {check.name} at all"
    else:
        room = f"the largest free is {elimination.largest}"
    return (
        f"{hosts} {'lacks' if one else 'lack'} room for {check.name}:{check.amount} "
        f"(flavor {spec.flavor.name} requests {check.amount}, {room})"
    )
