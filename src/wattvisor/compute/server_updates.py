"""Changing a server that exists: rename, and resize to another flavor.

Rename changes the display name only: in the store and in the instance metadata of
the domain, live and in its persistent config. The libvirt domain keeps its name
(``instance-0000002a``), as in Nova.

Resize is Nova's, simplified: the server stays on its host. The new flavor must fit
there: its traits (a resize is refused, not moved, when the host lacks a trait the
new flavor requires) and its capacity, counting what the server holds now. The
request thread checks all that, gives the server the ``resizing`` task (one
conditional UPDATE, so it cannot interleave with a stop, start, delete or another
resize) and moves the server's placement allocation to the new flavor in one
placement call that replaces the consumer's allocations under its generation, as
placement's ``PUT /allocations/{consumer}`` does. A resize no host can take is
refused there with a 409 naming the flavor and why, and nothing has changed. A
worker then has the host stop the guest, redefine it with the new vCPUs, memory and
flavor metadata, and start it again (a SHUTOFF server stays off). If the host fails,
it puts the old definition back, and the allocation and flavor move back too: the
server ends as it was, with a fault saying the resize failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from wattvisor.auth import Principal
from wattvisor.compute.catalog import Catalog
from wattvisor.compute.errors import (
    Conflict,
    HostOperationFailed,
    InvalidRequest,
    NotFound,
)
from wattvisor.compute.hostclient import MetadataUpdate, SpawnFlavor
from wattvisor.compute.names import check_server_name, quoted
from wattvisor.compute.records import FlavorRecord, ImageRecord, ServerRecord
from wattvisor.compute.servers import ServerService, _servers
from wattvisor.compute.tasks import Lease
from wattvisor.placement import (
    CapacityExceeded,
    ConcurrentUpdate,
    ConsumerConflict,
    Placement,
)
from wattvisor.scheduler.prefilters import DISABLED_TRAIT
from wattvisor.scheduler.request_spec import RequestSpec
from wattvisor.store import write_transaction

log = logging.getLogger(__name__)

RESIZE_TASK = "resizing"
RESIZE_TASK_KIND = "resize"
RESIZABLE = ("ACTIVE", "SHUTOFF")
LOCK_WAIT_S = 30.0
"""How long a rename or resize waits for a task of the server that holds its lock."""
_RUNNING_STATES = frozenset({"running", "blocked", "paused"})
_ADMIN_SEES = "an admin sees the host's own message in the server's fault"


@dataclass(frozen=True, slots=True)
class _Before:
    """What a resize changed, to put back when the host fails it."""

    flavor_id: str
    resources: dict[str, int]


class ServerUpdates:
    """Rename and resize over the server service's records, tasks and workers."""

    def __init__(self, servers: ServerService, placement: Placement) -> None:
        self.servers = servers
        self.catalog: Catalog = servers.catalog
        self.placement = placement
        servers.task_handlers[RESIZE_TASK_KIND] = self._resize_task
        servers.task_resumers[RESIZE_TASK] = RESIZE_TASK_KIND

    # ------------------------------------------------------------------- rename

    def rename(self, principal: Principal, server_id: str, name: str) -> ServerRecord:
        """Give the server a new display name, in the store and in its domain's metadata."""
        check_server_name(name)
        record = self.servers.get_live(principal, server_id)
        lock = self.servers.lock_for(record.uuid)
        if not lock.acquire(timeout=LOCK_WAIT_S):
            raise self._busy(record, "rename")
        try:
            record = self.servers.get_live(principal, server_id)
            if record.task == "deleting":
                raise Conflict(
                    f"server {quoted(server_id)} is being deleted; it cannot be renamed",
                    server_id=server_id, task=record.task,
                )  # fmt: skip
            if name != record.name:
                self._rename_domain(record, name)
                with write_transaction(self.servers.engine) as conn:
                    conn.execute(
                        _servers.update()
                        .where((_servers.c.uuid == record.uuid) & (_servers.c.status != "DELETED"))
                        .values(name=name, updated_at=_now())
                    )
        finally:
            lock.release()
        return self.servers.get(principal, server_id)

    def _rename_domain(self, record: ServerRecord, name: str) -> None:
        if record.host_uuid is None or record.domain_name is None:
            return  # not built yet: the build reads the name when its turn comes
        client = self.servers.hosts.client(record.host_uuid)
        try:
            client.update_metadata(record.domain_name, MetadataUpdate(display_name=name))
        except Exception as exc:
            # Asked only now, saving a host round trip on every rename that works.
            with contextlib.suppress(Exception):
                if not client.domain_exists(record.domain_name):
                    return  # an ERROR server whose domain is gone: only the record is left
            raise HostOperationFailed(
                f"renaming server {record.uuid} (domain {record.domain_name}) failed: {exc}",
                public=f"renaming server {quoted(record.uuid)} failed on its host; "
                "its name is unchanged",
                server_id=record.uuid,
            ) from exc

    # ------------------------------------------------------------------- resize

    def resize(self, principal: Principal, server_id: str, flavor: str) -> ServerRecord:
        """Check that the server's host can take ``flavor``, move the server's claim to it
        and queue the host's part; refused (changing nothing) when the host cannot."""
        record = self.servers.get_live(principal, server_id)
        new = self.catalog.flavor(flavor)
        if new.id == record.flavor_id:
            raise InvalidRequest(
                f"server {quoted(server_id)} has flavor {new.name!r} already; resize to "
                "another flavor",
                server_id=server_id, flavor=flavor,
            )  # fmt: skip
        with contextlib.suppress(NotFound):  # a flavor deleted since: nothing to compare
            old = self.catalog.flavor(record.flavor_id)
            if new.disk_gb < old.disk_gb:
                raise InvalidRequest(
                    f"flavor {new.name!r} has a {new.disk_gb} GiB root disk, smaller than the "
                    f"{old.disk_gb} GiB of flavor {old.name!r} that server {quoted(server_id)} "
                    "has; a root disk is never shrunk, choose a flavor with at least "
                    f"{old.disk_gb} GiB",
                    server_id=server_id, flavor=flavor,
                )  # fmt: skip
        if record.status not in RESIZABLE or record.task is not None:
            raise self.servers._conflict(principal, server_id, RESIZABLE, "resize")
        if record.host_uuid is None or record.domain_name is None:
            raise Conflict(f"server {quoted(server_id)} is on no host", server_id=server_id)
        host_uuid = record.host_uuid
        owner = Principal(record.user, record.project, "member")
        spec = self.servers._request_spec(owner, new, self._image(record), record.power_metrics)
        resources = spec.candidate_request().resources
        held = self._held(record.uuid)
        problems = self._misfits(spec, host_uuid, held)
        if problems:
            raise _no_room(new, server_id, problems)
        # No lock: the task is claimed by one conditional UPDATE, and the claim moves only
        # if the consumer is still at the generation read just before (a delete that took
        # over and released it meanwhile makes the move fail, not resurrect the claim).
        if not self.servers._claim_task(record.uuid, RESIZE_TASK, statuses=RESIZABLE):
            raise self.servers._conflict(principal, server_id, RESIZABLE, "resize")
        try:
            self._move_claim(record, {host_uuid: resources})
        except (CapacityExceeded, ConcurrentUpdate, ConsumerConflict) as exc:
            self.servers._finish(record.uuid, (RESIZE_TASK,))
            now = self.servers._load(record.uuid)
            if now is not None and now.task == "deleting":
                raise Conflict(
                    f"server {quoted(server_id)} is being deleted; it cannot be resized",
                    server_id=server_id, task=now.task,
                ) from exc  # fmt: skip
            problems = self._misfits(spec, host_uuid, self._held(record.uuid))
            raise _no_room(
                new,
                server_id,
                problems or ["its host's free capacity changed meanwhile; try again"],
            ) from exc
        except BaseException:
            self.servers._finish(record.uuid, (RESIZE_TASK,))
            raise
        self._set_flavor(record.uuid, new.id)
        accepted = self.servers.get(principal, server_id)
        self.servers.queue(
            record.uuid, RESIZE_TASK_KIND,
            {"flavor": dataclasses.asdict(new),
             "before": {"flavor_id": record.flavor_id, "resources": held}},
        )  # fmt: skip
        return accepted

    def _resize_task(self, lease: Lease) -> None:
        """The ``resize`` task: the host's part, with what to put back if it fails; one
        queued again after a restart without them carries on to the record's flavor."""
        server_uuid = lease.task.target
        payload = lease.task.payload
        with self.servers.lock_for(server_uuid):
            record = self.servers._load(server_uuid)
            if record is None or record.task != RESIZE_TASK:
                return
            if "flavor" not in payload:
                self._resume(record)
                return
            data = payload["flavor"]
            flavor = FlavorRecord(**{**data, "extra_specs": dict(data.get("extra_specs") or {})})
            before = payload.get("before")
            self._on_host(
                server_uuid, flavor,
                None if before is None else _Before(before["flavor_id"], dict(before["resources"])),
            )  # fmt: skip

    def _image(self, record: ServerRecord) -> ImageRecord:
        """The server's image for the request spec; one deleted since is an image without
        properties (it constrains nothing any more)."""
        try:
            return self.catalog.image(record.image_id)
        except NotFound:
            return ImageRecord(id=record.image_id, name=record.image_id)

    def _held(self, server_uuid: str) -> dict[str, int]:
        allocations = self.placement.get_allocations(server_uuid)
        held: dict[str, int] = {}
        for part in allocations.allocations:
            for rc, amount in part.resources.items():
                held[rc] = held.get(rc, 0) + amount
        return held

    def _misfits(self, spec: RequestSpec, host_uuid: str, held: dict[str, int]) -> list[str]:
        """Why the host cannot take ``spec`` (empty: it can), in words a member may read:
        traits and amounts, never the host's name."""
        problems = []
        traits = self.placement.get_provider_traits(host_uuid).traits
        for trait in sorted(spec.required - traits):
            why = spec.reasons.get(trait)
            problems.append(f"its host lacks {trait}" + (f" (required by {why})" if why else ""))
        for trait in sorted(spec.forbidden & traits):
            if trait == DISABLED_TRAIT:
                problems.append(f"its host is disabled by an operator ({DISABLED_TRAIT})")
                continue
            why = spec.reasons.get("!" + trait)
            problems.append(f"its host has {trait}" + (f" (forbidden by {why})" if why else ""))
        inventories = self.placement.get_inventories(host_uuid).inventories
        usages = self.placement.get_usages(host_uuid).usages
        for rc, amount in sorted(spec.resources.items()):
            inventory = inventories.get(rc)
            if inventory is None:
                problems.append(f"its host has no {rc} at all")
                continue
            if amount > inventory.max_unit:
                problems.append(
                    f"{rc}:{amount} is more than its host gives one server ({inventory.max_unit})"
                )
                continue
            free = int(inventory.capacity) - usages.get(rc, 0) + held.get(rc, 0)
            if amount > free:
                problems.append(
                    f"its host lacks room for {rc}:{amount} ({free} free, counting what the "
                    "server holds now)"
                )
        return problems

    def _move_claim(self, record: ServerRecord, allocations: dict[str, dict[str, int]]) -> None:
        """Replace everything the server holds with ``allocations`` in one placement call,
        checked against the consumer generation read just before."""
        current = self.placement.get_allocations(record.uuid)
        if not current.allocations:
            raise ConsumerConflict(f"server {record.uuid} holds no claim (deleted meanwhile?)")
        self.placement.set_allocations(
            record.uuid, allocations,
            project_id=current.project_id or record.project,
            user_id=current.user_id or record.user,
            consumer_generation=current.generation,
        )  # fmt: skip

    def _set_flavor(self, server_uuid: str, flavor_id: str) -> None:
        with write_transaction(self.servers.engine) as conn:
            conn.execute(
                _servers.update()
                .where(_servers.c.uuid == server_uuid)
                .values(flavor_id=flavor_id, updated_at=_now())
            )

    def _on_host(self, server_uuid: str, flavor: FlavorRecord, before: _Before | None) -> None:
        """The worker: stop, redefine, start on the host; put everything back on failure."""
        record = self.servers._load(server_uuid)
        if record is None or record.task != RESIZE_TASK:
            return  # a delete took over: it releases the claim and removes the guest
        assert record.host_uuid is not None and record.domain_name is not None
        try:
            client = self.servers.hosts.client(record.host_uuid)
            state = client.resize(
                record.domain_name, _spawn_flavor(flavor),
                self.servers.settings.compute.stop_timeout_s,
            )  # fmt: skip
        except Exception as exc:
            log.warning("resizing server %s to %s failed: %s", server_uuid, flavor.name, exc)
            kept = self._put_back(record, before)
            self.servers._finish(
                server_uuid, (RESIZE_TASK,),
                fault=f"resize to flavor {flavor.name!r} failed on its host; {kept}; "
                f"{_ADMIN_SEES}",
                fault_detail=f"resize to flavor {flavor.name!r} failed: {exc}; {kept}",
            )  # fmt: skip
            return
        status = "ACTIVE" if state in _RUNNING_STATES else "SHUTOFF"
        self.servers._finish(server_uuid, (RESIZE_TASK,), status=status, fault=None)

    def _put_back(self, record: ServerRecord, before: _Before | None) -> str:
        """Move the claim and the flavor back (the host restored its domain itself)."""
        if before is None or record.host_uuid is None:
            return "the server keeps the new flavor in its record; resize it again"
        try:
            self._move_claim(record, {record.host_uuid: before.resources})
        except Exception as exc:  # placement changed meanwhile: say so, keep going
            log.error("putting back the claim of server %s failed: %s", record.uuid, exc)
        self._set_flavor(record.uuid, before.flavor_id)
        return "the server keeps its previous flavor"

    def _resume(self, record: ServerRecord) -> None:
        """After a restart: carry the resize on to the flavor the record holds (the claim
        moved already; the host's part is safe to repeat)."""
        try:
            flavor = self.catalog.flavor(record.flavor_id)
        except NotFound:
            self.servers._finish(
                record.uuid, (RESIZE_TASK,),
                fault=f"a resize to flavor {record.flavor_id!r} was interrupted by a restart "
                "and that flavor is gone; resize the server again",
            )  # fmt: skip
            return
        self._on_host(record.uuid, flavor, None)

    def _busy(self, record: ServerRecord, action: str) -> Conflict:
        return Conflict(
            f"server {quoted(record.uuid)} is busy with a task ({record.task or 'finishing'}); "
            f"{action} it once the task has finished",
            server_id=record.uuid, task=record.task,
        )  # fmt: skip


def _no_room(flavor: FlavorRecord, server_id: str, problems: list[str]) -> Conflict:
    return Conflict(
        f"server {quoted(server_id)} cannot be resized to flavor {flavor.name!r}: "
        f"{'; '.join(problems)}. A resize keeps the server on its host; nothing was changed",
        server_id=server_id, flavor=flavor.name, problems=problems,
    )  # fmt: skip


def _spawn_flavor(flavor: FlavorRecord) -> SpawnFlavor:
    return SpawnFlavor(
        id=flavor.id, name=flavor.name, vcpus=flavor.vcpus, ram_mb=flavor.ram_mb,
        disk_gb=flavor.disk_gb, swap_mb=flavor.swap_mb, ephemeral_gb=flavor.ephemeral_gb,
        extra_specs=dict(flavor.extra_specs),
    )  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)
