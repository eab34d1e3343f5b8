"""The placement service: resource providers, inventories, traits, allocations and
allocation candidates with OpenStack Placement semantics, on SQLite or PostgreSQL.

Every write runs in one transaction that first takes the placement sequence row (so
writers queue instead of interleaving), checks the provider and consumer generations it
was given, and bumps the generation of every provider it touches. A write that fails any
check raises and is rolled back whole: bad input changes nothing.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from wattvisor.placement.entities import (
    MAX_INT,
    CandidateRequest,
    ConsumerAllocations,
    Inventory,
    Provider,
    ProviderAllocation,
    ProviderInventories,
    ProviderSummary,
    ProviderTraits,
    ProviderUsages,
    TraitQuery,
)
from wattvisor.placement.errors import (
    BadRequest,
    CapacityExceeded,
    ConcurrentUpdate,
    Conflict,
    ConsumerConflict,
    DuplicateName,
    InventoryInUse,
    NotFound,
    ProviderInUse,
)
from wattvisor.placement.index import (
    CandidateTable,
    Check,
    Elimination,
    ProviderIndex,
    ProviderState,
)
from wattvisor.placement.names import (
    CUSTOM_NAME_RULE,
    CUSTOM_PREFIX,
    is_custom_name,
    shown_name,
    standard_resource_classes,
    standard_traits,
)
from wattvisor.placement.trees import Snapshot, TreeProvider
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.models import (
    Allocation,
    Consumer,
    CustomResourceClass,
    CustomTrait,
    PlacementSequence,
    ProviderAggregate,
    ProviderTrait,
    ResourceProvider,
    ResourceProviderDeletion,
)
from wattvisor.store.models import Inventory as InventoryRow

_rp = cast(Table, ResourceProvider.__table__)
_inv = cast(Table, InventoryRow.__table__)
_trait = cast(Table, ProviderTrait.__table__)
_alloc = cast(Table, Allocation.__table__)
_consumer = cast(Table, Consumer.__table__)
_seq = cast(Table, PlacementSequence.__table__)
_deletion = cast(Table, ResourceProviderDeletion.__table__)
_custom_trait = cast(Table, CustomTrait.__table__)
_custom_rc = cast(Table, CustomResourceClass.__table__)
_agg = cast(Table, ProviderAggregate.__table__)

DEFAULT_CONSUMER_TYPE = "INSTANCE"
UNKNOWN_CONSUMER_TYPE = "unknown"
"""The type of a consumer written without one (Placement API before 1.38); a named
type matches ``^[A-Z0-9_]+$``, so it never collides with this one."""
T = TypeVar("T")
ENSURE_RETRIES = 10


@dataclass(frozen=True, slots=True)
class ConsumerAllocationUpdate:
    """The complete new allocations of one consumer (empty: release everything)."""

    consumer_uuid: str
    allocations: Mapping[str, Mapping[str, int]]
    project_id: str
    user_id: str
    consumer_generation: int | None
    consumer_type: str = DEFAULT_CONSUMER_TYPE


@dataclass(frozen=True, slots=True)
class Candidate:
    """One allocation request: all requested resources from one provider."""

    provider_uuid: str
    provider_id: int
    resources: dict[str, int]


@dataclass(frozen=True, slots=True)
class CandidateResult:
    candidates: list[Candidate]
    summaries: dict[str, ProviderSummary]


class Placement:
    """Placement over one database. Thread-safe; one instance per process is enough."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.index = ProviderIndex(engine)
        self._tree_cache: tuple[int, Snapshot] | None = None
        """The newest tree snapshot and the placement sequence value it was read at."""

    # ----------------------------------------------------------------- providers

    def create_provider(
        self, name: str, uuid: str | None = None, parent_uuid: str | None = None
    ) -> Provider:
        """Create a provider (under ``parent_uuid`` when given); ``uuid`` is generated
        when not given."""
        name = _check_name(name)
        provider_uuid = (
            _normalise_uuid(uuid, "resource provider uuid") if uuid else str(uuidlib.uuid4())
        )
        parent_id: int | None = None
        try:
            with write_transaction(self.engine) as conn:
                seq = _next_seq(conn)
                if parent_uuid is not None:
                    if parent_uuid == provider_uuid:
                        raise BadRequest(
                            f'Unable to create resource provider "{name}", {provider_uuid}: '
                            "parent provider UUID cannot be same as UUID. Please set parent "
                            "provider UUID to None if there is no parent."
                        )
                    parent = conn.execute(select(_rp.c.id).where(_rp.c.uuid == parent_uuid)).first()
                    if parent is None:
                        raise BadRequest(
                            f'Unable to create resource provider "{name}", {provider_uuid}: '
                            f"parent provider UUID does not exist: {parent_uuid}"
                        )
                    parent_id = int(parent.id)
                for column, value in (("uuid", provider_uuid), ("name", name)):
                    if (
                        conn.execute(select(_rp.c.id).where(_rp.c[column] == value)).first()
                        is not None
                    ):
                        raise DuplicateName(
                            f"Conflicting resource provider {column}: {value} already exists."
                        )
                conn.execute(
                    insert(_rp).values(
                        uuid=provider_uuid,
                        name=name,
                        generation=0,
                        updated_seq=seq,
                        parent_provider_id=parent_id,
                    )
                )
                tree = _Tree.load(conn)
        except IntegrityError as exc:
            raise DuplicateName(
                f"Conflicting resource provider {name!r} or {provider_uuid} already exists."
            ) from exc
        return tree.provider(provider_uuid, name, 0)

    def get_provider(self, uuid: str) -> Provider:
        with read_transaction(self.engine) as conn:
            row = _provider_row(conn, uuid)
            tree = _Tree.load(conn)
        return tree.provider(row.uuid, row.name, row.generation)

    def update_provider(
        self, uuid: str, name: str, parent_uuid: str | None, *, may_reparent: bool
    ) -> Provider:
        """Rename ``uuid`` and set its parent; moving a provider that has a parent to
        another parent (or to none) needs ``may_reparent`` (Placement 1.37)."""
        name = _check_name(name)
        with write_transaction(self.engine) as conn:
            seq = _next_seq(conn)
            row = _provider_row(conn, uuid)
            tree = _Tree.load(conn)
            current_parent = tree.parent_uuid(row.id)
            parent_id: int | None = None
            if parent_uuid is not None:
                found = conn.execute(select(_rp.c.id).where(_rp.c.uuid == parent_uuid)).first()
                if found is None:
                    raise BadRequest(
                        f"Unable to update resource provider {uuid}: "
                        f"parent provider UUID does not exist: {parent_uuid}"
                    )
                parent_id = int(found.id)
                if parent_id == row.id or row.id in tree.ancestors(parent_id):
                    raise BadRequest("creating loop in the provider tree is not allowed.")
            if current_parent != parent_uuid and current_parent is not None and not may_reparent:
                if parent_uuid is None:
                    raise BadRequest("un-parenting a provider is not currently allowed.")
                raise BadRequest("re-parenting a provider is not currently allowed.")
            if conn.execute(select(_rp.c.id).where(_rp.c.name == name, _rp.c.id != row.id)).first():
                raise DuplicateName(f"Conflicting resource provider name: {name} already exists.")
            if name != row.name or parent_uuid != current_parent:
                conn.execute(
                    update(_rp)
                    .where(_rp.c.id == row.id)
                    .values(name=name, parent_provider_id=parent_id, updated_seq=seq)
                )
            tree = _Tree.load(conn)
        return tree.provider(row.uuid, name, row.generation)

    def get_aggregates(self, uuid: str) -> tuple[int, list[str]]:
        """The provider's generation and the aggregates it is a member of."""
        with read_transaction(self.engine) as conn:
            row = _provider_row(conn, uuid)
            aggregates = conn.execute(
                select(_agg.c.aggregate_uuid)
                .where(_agg.c.resource_provider_id == row.id)
                .order_by(_agg.c.aggregate_uuid)
            ).scalars()
            return row.generation, list(aggregates)

    def set_aggregates(
        self, uuid: str, aggregates: Sequence[str], generation: int | None
    ) -> tuple[int, list[str]]:
        """Replace the provider's aggregates; with ``generation`` (Placement 1.19) it is
        checked and bumped, without it the generation is left as it is."""
        wanted = sorted({_normalise_uuid(a, "aggregate uuid") for a in aggregates})
        with write_transaction(self.engine) as conn:
            seq = _next_seq(conn)
            row = _provider_row(conn, uuid)
            if generation is not None and generation != row.generation:
                raise ConcurrentUpdate(
                    f"resource provider generation conflict: {uuid} is at generation "
                    f"{row.generation}, not {generation}; read it again and retry"
                )
            conn.execute(delete(_agg).where(_agg.c.resource_provider_id == row.id))
            if wanted:
                conn.execute(
                    insert(_agg),
                    [{"resource_provider_id": row.id, "aggregate_uuid": a} for a in wanted],
                )
            new_generation = row.generation + (1 if generation is not None else 0)
            conn.execute(
                update(_rp)
                .where(_rp.c.id == row.id)
                .values(generation=new_generation, updated_seq=seq)
            )
        return new_generation, wanted

    def list_providers(
        self,
        *,
        name: str | None = None,
        uuid: str | None = None,
        resources: Mapping[str, int] | None = None,
        traits: TraitQuery | None = None,
        in_tree: str | None = None,
        member_of: Sequence[tuple[frozenset[str], bool]] = (),
    ) -> list[Provider]:
        """Providers matching every filter given, in creation order.

        ``member_of`` holds (aggregates, forbidden) pairs: a provider must be in one of
        each allowed set and in none of each forbidden one.
        """
        if resources or traits:
            request = CandidateRequest(dict(resources or {}), traits or TraitQuery())
            self.refresh()
            with self.index.lock:
                self._check_request(request)
                states = [self.index.providers[pid] for pid in sorted(self.index.matching(request))]
            rows = [(s.uuid, s.name, s.generation) for s in states]
        else:
            query = select(_rp.c.uuid, _rp.c.name, _rp.c.generation).order_by(_rp.c.id)
            with read_transaction(self.engine) as conn:
                rows = [(r.uuid, r.name, r.generation) for r in conn.execute(query)]
        with read_transaction(self.engine) as conn:
            tree = _Tree.load(conn)
            memberships: dict[str, set[str]] = {}
            if member_of:
                for rp_id, aggregate in conn.execute(
                    select(_agg.c.resource_provider_id, _agg.c.aggregate_uuid)
                ):
                    memberships.setdefault(tree.uuids[rp_id], set()).add(aggregate)
        tree_root = None
        if in_tree is not None:
            if in_tree not in tree.ids:
                return []
            tree_root = tree.root_uuid(tree.ids[in_tree])
        out = []
        for rp_uuid, rp_name, generation in rows:
            if name is not None and rp_name != name:
                continue
            if uuid is not None and rp_uuid != uuid:
                continue
            if tree_root is not None and tree.root_uuid(tree.ids[rp_uuid]) != tree_root:
                continue
            held = memberships.get(rp_uuid, set())
            if any(bool(held & aggs) == forbidden for aggs, forbidden in member_of):
                continue
            out.append(tree.provider(rp_uuid, rp_name, generation))
        return out

    def rename_provider(self, uuid: str, name: str) -> Provider:
        name = _check_name(name)
        try:
            with write_transaction(self.engine) as conn:
                seq = _next_seq(conn)
                row = _provider_row(conn, uuid)
                if row.name == name:
                    return Provider(row.uuid, row.name, row.generation)
                if conn.execute(select(_rp.c.id).where(_rp.c.name == name)).first():
                    raise DuplicateName(f"Conflicting resource provider name {name!r} exists.")
                conn.execute(
                    update(_rp).where(_rp.c.id == row.id).values(name=name, updated_seq=seq)
                )
        except IntegrityError as exc:
            raise DuplicateName(f"Conflicting resource provider name {name!r} exists.") from exc
        return self.get_provider(row.uuid)

    def delete_provider(self, uuid: str) -> None:
        """Delete a provider with its inventories and traits; refused while it has
        allocations."""
        with write_transaction(self.engine) as conn:
            seq = _next_seq(conn)
            row = _provider_row(conn, uuid)
            in_use = conn.execute(
                select(_alloc.c.id).where(_alloc.c.resource_provider_id == row.id).limit(1)
            ).first()
            if in_use is not None:
                raise ProviderInUse(
                    f"Unable to delete resource provider {uuid}: Resource provider has allocations."
                )
            child = conn.execute(
                select(_rp.c.id).where(_rp.c.parent_provider_id == row.id).limit(1)
            ).first()
            if child is not None:
                raise ProviderInUse(
                    f"Unable to delete parent resource provider {uuid}: "
                    "It has child resource providers.",
                    code="placement.resource_provider.cannot_delete_parent",
                )
            conn.execute(delete(_agg).where(_agg.c.resource_provider_id == row.id))
            conn.execute(delete(_inv).where(_inv.c.resource_provider_id == row.id))
            conn.execute(delete(_trait).where(_trait.c.resource_provider_id == row.id))
            conn.execute(delete(_rp).where(_rp.c.id == row.id))
            conn.execute(insert(_deletion).values(provider_id=row.id, seq=seq))

    def ensure_provider(
        self,
        uuid: str,
        name: str,
        inventories: Mapping[str, Inventory],
        traits: Iterable[str],
    ) -> Provider:
        """Make the provider ``uuid`` exist with exactly these inventories and traits.

        This is how a host reports itself: idempotent, and retried on generation
        conflicts because the host's own view is authoritative for what it has.
        Custom traits and resource classes named here are created as needed.
        """
        wanted_traits = frozenset(traits)
        for trait in wanted_traits:
            if trait.startswith(CUSTOM_PREFIX):
                self.ensure_custom_trait(trait)
        for rc in inventories:
            if rc.startswith(CUSTOM_PREFIX):
                self.ensure_custom_resource_class(rc)
        for _attempt in range(ENSURE_RETRIES):
            try:
                try:
                    provider = self.get_provider(uuid)
                except NotFound:
                    try:
                        provider = self.create_provider(name, uuid)
                    except DuplicateName:
                        if not self.list_providers(uuid=uuid):
                            raise  # another provider already has this name
                        continue  # a concurrent report created this provider
                if provider.name != name:
                    provider = self.rename_provider(uuid, name)
                current = self.get_inventories(uuid)
                if current.inventories != dict(inventories):
                    self.set_inventories(uuid, current.generation, inventories)
                current_traits = self.get_provider_traits(uuid)
                if current_traits.traits != wanted_traits:
                    self.set_provider_traits(uuid, current_traits.generation, wanted_traits)
                return self.get_provider(uuid)
            except ConcurrentUpdate:
                continue
        raise ConcurrentUpdate(
            f"resource provider {uuid} kept changing during {ENSURE_RETRIES} attempts to update it"
        )

    # --------------------------------------------------------------- inventories

    def get_inventories(self, uuid: str) -> ProviderInventories:
        with read_transaction(self.engine) as conn:
            row = _provider_row(conn, uuid)
            return ProviderInventories(row.generation, _inventories(conn, row.id))

    def set_inventories(
        self, uuid: str, generation: int, inventories: Mapping[str, Inventory]
    ) -> ProviderInventories:
        """Replace all inventories of a provider, if its generation is still ``generation``.

        Removing a resource class that has allocations is refused; lowering a total
        below what is used is allowed (as in Placement) and only blocks new claims.
        """
        for rc, inventory in inventories.items():
            _check_inventory(uuid, rc, inventory)
        with write_transaction(self.engine) as conn:
            seq = _next_seq(conn)
            new_generation = self._write_inventories(conn, seq, uuid, generation, inventories)
        return ProviderInventories(new_generation, dict(inventories))

    def _write_inventories(
        self,
        conn: Connection,
        seq: int,
        uuid: str,
        generation: int,
        inventories: Mapping[str, Inventory],
        *,
        check_in_use: bool = True,
    ) -> int:
        row = _provider_row(conn, uuid)
        self._check_resource_classes(conn, inventories.keys(), uuid)
        current = _inventories(conn, row.id)
        removed = current.keys() - inventories.keys()
        if removed and check_in_use:
            in_use = sorted(
                conn.execute(
                    select(_alloc.c.resource_class)
                    .where(
                        _alloc.c.resource_provider_id == row.id,
                        _alloc.c.resource_class.in_(removed),
                    )
                    .distinct()
                ).scalars()
            )
            if in_use:
                raise InventoryInUse(
                    f"update conflict: Inventory for {', '.join(in_use)} on resource "
                    f"provider {uuid} in use."
                )
        new_generation = _bump_provider(conn, row.id, generation, seq, uuid)
        conn.execute(delete(_inv).where(_inv.c.resource_provider_id == row.id))
        if inventories:
            conn.execute(
                insert(_inv),
                [
                    {
                        "resource_provider_id": row.id,
                        "resource_class": rc,
                        "total": inv.total,
                        "reserved": inv.reserved,
                        "min_unit": inv.min_unit,
                        "max_unit": inv.max_unit,
                        "step_size": inv.step_size,
                        "allocation_ratio": inv.allocation_ratio,
                    }
                    for rc, inv in inventories.items()
                ],
            )
        return new_generation

    def reshape(
        self,
        inventories: Mapping[str, tuple[int, Mapping[str, Inventory]]],
        allocations: Sequence[ConsumerAllocationUpdate],
    ) -> None:
        """Replace providers' inventories and consumers' allocations in one transaction
        (Placement's reshaper): inventory may move between providers of a tree together
        with the allocations against it."""
        for uuid, (_generation, wanted) in inventories.items():
            for rc, inventory in wanted.items():
                _check_inventory(uuid, rc, inventory)

        def write_inventories(conn: Connection, seq: int) -> None:
            for uuid, (generation, wanted) in inventories.items():
                actual = _provider_row(conn, uuid).generation
                if actual != generation:
                    raise ConcurrentUpdate(
                        f"resource provider generation conflict for {uuid}: "
                        f"actual: {actual}, given: {generation}"
                    )
                self._write_inventories(conn, seq, uuid, generation, wanted, check_in_use=False)

        def no_orphans(conn: Connection) -> None:
            orphan = conn.execute(
                select(_rp.c.uuid, _alloc.c.resource_class)
                .join(_rp, _rp.c.id == _alloc.c.resource_provider_id)
                .outerjoin(
                    _inv,
                    (_inv.c.resource_provider_id == _alloc.c.resource_provider_id)
                    & (_inv.c.resource_class == _alloc.c.resource_class),
                )
                .where(_inv.c.id.is_(None))
                .limit(1)
            ).first()
            if orphan is not None:
                raise InventoryInUse(
                    f"update conflict: Inventory for {orphan.resource_class} on resource "
                    f"provider {orphan.uuid} in use."
                )

        self.set_allocations_many(allocations, before=write_inventories, also=no_orphans)

    # -------------------------------------------------------------------- traits

    def get_provider_traits(self, uuid: str) -> ProviderTraits:
        with read_transaction(self.engine) as conn:
            row = _provider_row(conn, uuid)
            names = conn.execute(
                select(_trait.c.trait).where(_trait.c.resource_provider_id == row.id)
            ).scalars()
            return ProviderTraits(row.generation, frozenset(names))

    def set_provider_traits(
        self, uuid: str, generation: int, traits: Iterable[str]
    ) -> ProviderTraits:
        """Replace all traits of a provider, if its generation is still ``generation``."""
        wanted = frozenset(traits)
        with write_transaction(self.engine) as conn:
            seq = _next_seq(conn)
            row = _provider_row(conn, uuid)
            unknown = self._unknown_traits(conn, wanted)
            if unknown:
                raise BadRequest(f"No such trait(s): {', '.join(unknown)}")
            new_generation = _bump_provider(conn, row.id, generation, seq, uuid)
            conn.execute(delete(_trait).where(_trait.c.resource_provider_id == row.id))
            if wanted:
                conn.execute(
                    insert(_trait),
                    [{"resource_provider_id": row.id, "trait": t} for t in sorted(wanted)],
                )
        return ProviderTraits(new_generation, wanted)

    def list_traits(
        self,
        *,
        starts_with: str | None = None,
        names: Iterable[str] | None = None,
        associated: bool | None = None,
    ) -> list[str]:
        """All trait names (standard and custom), optionally filtered as ``GET /traits``."""
        with read_transaction(self.engine) as conn:
            custom = set(conn.execute(select(CustomTrait.name)).scalars())
            used = (
                set(conn.execute(select(_trait.c.trait).distinct()).scalars())
                if associated is not None
                else set()
            )
        out = standard_traits() | custom
        if starts_with is not None:
            out = frozenset(t for t in out if t.startswith(starts_with))
        if names is not None:
            out = out & frozenset(names)
        if associated is True:
            out = out & used
        elif associated is False:
            out = out - used
        return sorted(out)

    def ensure_custom_trait(self, name: str) -> bool:
        """Create the custom trait ``name``; returns False when it existed already."""
        if not is_custom_name(name):
            raise BadRequest(
                f"The trait name {shown_name(name)} is not a valid custom trait; custom "
                f"traits must match {CUSTOM_NAME_RULE}"
            )
        return self._ensure_named(_custom_trait, name)

    def delete_custom_trait(self, name: str) -> None:
        """Delete a custom trait that no provider has."""
        if name in standard_traits():
            raise BadRequest(f"Cannot delete standard trait {name}.")
        with write_transaction(self.engine) as conn:
            _next_seq(conn)
            found = conn.execute(
                select(_custom_trait.c.id).where(_custom_trait.c.name == name)
            ).first()
            if found is None:
                raise NotFound(f"No such trait(s): {name}")
            if conn.execute(select(_trait.c.trait).where(_trait.c.trait == name).limit(1)).first():
                raise Conflict(f"The trait {name} is in use by a resource provider.")
            conn.execute(delete(_custom_trait).where(_custom_trait.c.id == found.id))

    def delete_custom_resource_class(self, name: str) -> None:
        """Delete a custom resource class that no inventory or allocation uses."""
        if name in standard_resource_classes():
            raise BadRequest(f"Cannot delete standard resource class {name}.")
        with write_transaction(self.engine) as conn:
            _next_seq(conn)
            found = conn.execute(select(_custom_rc.c.id).where(_custom_rc.c.name == name)).first()
            if found is None:
                raise NotFound(f"No such resource class {name}.")
            used = (
                conn.execute(
                    select(_inv.c.id).where(_inv.c.resource_class == name).limit(1)
                ).first()
                or conn.execute(
                    select(_alloc.c.id).where(_alloc.c.resource_class == name).limit(1)
                ).first()
            )
            if used:
                raise Conflict(
                    f"Unable to delete resource class {name}. It is in use by inventory or "
                    "allocation."
                )
            conn.execute(delete(_custom_rc).where(_custom_rc.c.id == found.id))

    def rename_custom_resource_class(self, name: str, new_name: str) -> None:
        """Rename a custom resource class, with every inventory and allocation of it."""
        if name in standard_resource_classes():
            raise BadRequest(f"Cannot update standard resource class {name}")
        with write_transaction(self.engine) as conn:
            seq = _next_seq(conn)
            found = conn.execute(select(_custom_rc.c.id).where(_custom_rc.c.name == name)).first()
            if found is None:
                raise NotFound(f"No such resource class {name}.")
            if new_name == name:
                return
            if conn.execute(select(_custom_rc.c.id).where(_custom_rc.c.name == new_name)).first():
                raise Conflict(f"Resource class already exists: {new_name}")
            conn.execute(
                update(_custom_rc).where(_custom_rc.c.id == found.id).values(name=new_name)
            )
            holders = select(_inv.c.resource_provider_id).where(_inv.c.resource_class == name)
            conn.execute(update(_rp).where(_rp.c.id.in_(holders)).values(updated_seq=seq))
            conn.execute(
                update(_inv).where(_inv.c.resource_class == name).values(resource_class=new_name)
            )
            conn.execute(
                update(_alloc)
                .where(_alloc.c.resource_class == name)
                .values(resource_class=new_name)
            )

    def project_usages(
        self, project_id: str, user_id: str | None = None
    ) -> dict[str, tuple[int, dict[str, int]]]:
        """Usages of a project (and user) by consumer type: consumers and amount per class."""
        query = (
            select(_consumer.c.id, _consumer.c.consumer_type, _alloc.c.resource_class,
                   func.sum(_alloc.c.used))
            .join(_alloc, _alloc.c.consumer_id == _consumer.c.id)
            .where(_consumer.c.project_id == project_id)
            .group_by(_consumer.c.id, _consumer.c.consumer_type, _alloc.c.resource_class)
        )  # fmt: skip
        if user_id is not None:
            query = query.where(_consumer.c.user_id == user_id)
        consumers: dict[str, set[int]] = {}
        amounts: dict[str, dict[str, int]] = {}
        with read_transaction(self.engine) as conn:
            for consumer_id, consumer_type, rc, used in conn.execute(query):
                consumers.setdefault(consumer_type, set()).add(consumer_id)
                by_class = amounts.setdefault(consumer_type, {})
                by_class[rc] = by_class.get(rc, 0) + int(used)
        return {t: (len(consumers[t]), amounts[t]) for t in consumers}

    def list_resource_classes(self) -> list[str]:
        with read_transaction(self.engine) as conn:
            custom = set(conn.execute(select(CustomResourceClass.name)).scalars())
        return sorted(standard_resource_classes()) + sorted(custom)

    def ensure_custom_resource_class(self, name: str) -> bool:
        """Create the custom resource class ``name``; False when it existed already."""
        if name in standard_resource_classes():
            return False
        if not is_custom_name(name):
            raise BadRequest(
                f"The resource class name {shown_name(name)} is not a valid custom resource "
                f"class; custom resource classes must match {CUSTOM_NAME_RULE}"
            )
        return self._ensure_named(_custom_rc, name)

    def _ensure_named(self, table: Table, name: str) -> bool:
        try:
            with write_transaction(self.engine) as conn:
                _next_seq(conn)
                if conn.execute(select(table.c.id).where(table.c.name == name)).first():
                    return False
                conn.execute(insert(table).values(name=name))
        except IntegrityError:
            return False
        return True

    # ---------------------------------------------------------------- allocations

    def get_allocations(self, consumer_uuid: str) -> ConsumerAllocations:
        with read_transaction(self.engine) as conn:
            consumer = conn.execute(
                select(_consumer).where(_consumer.c.uuid == consumer_uuid)
            ).first()
            if consumer is None:
                return ConsumerAllocations(consumer_uuid)
            rows = conn.execute(
                select(_rp.c.uuid, _rp.c.generation, _alloc.c.resource_class, _alloc.c.used)
                .join(_rp, _rp.c.id == _alloc.c.resource_provider_id)
                .where(_alloc.c.consumer_id == consumer.id)
                .order_by(_rp.c.id, _alloc.c.resource_class)
            ).all()
        if not rows:
            return ConsumerAllocations(consumer_uuid)
        per: dict[str, tuple[int, dict[str, int]]] = {}
        for rp_uuid, rp_generation, rc, used in rows:
            per.setdefault(rp_uuid, (rp_generation, {}))[1][rc] = used
        return ConsumerAllocations(
            consumer_uuid=consumer_uuid,
            allocations=tuple(ProviderAllocation(u, g, res) for u, (g, res) in per.items()),
            generation=consumer.generation,
            project_id=consumer.project_id,
            user_id=consumer.user_id,
            consumer_type=consumer.consumer_type,
        )

    def set_allocations(
        self,
        consumer_uuid: str,
        allocations: Mapping[str, Mapping[str, int]],
        *,
        project_id: str,
        user_id: str,
        consumer_generation: int | None,
        consumer_type: str = DEFAULT_CONSUMER_TYPE,
    ) -> int | None:
        """Replace all allocations of ``consumer_uuid`` (provider uuid → class → amount).

        ``consumer_generation`` must be None for a consumer that holds nothing yet and the
        current generation otherwise. Empty ``allocations`` releases everything. Returns
        the consumer's new generation (None once it holds nothing).
        """
        consumer_uuid = _normalise_uuid(consumer_uuid, "consumer uuid")
        for rp_uuid, resources in allocations.items():
            for rc, amount in resources.items():
                if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
                    raise BadRequest(
                        f"Allocation of {rc} on resource provider {rp_uuid} must be an "
                        f"integer of at least 1, got {amount!r}"
                    )
        if consumer_generation is None and allocations:
            return self._allocate_new_consumer(
                consumer_uuid, allocations, project_id, user_id, consumer_type
            )
        return self.set_allocations_many(
            [
                ConsumerAllocationUpdate(
                    consumer_uuid,
                    allocations,
                    project_id=project_id,
                    user_id=user_id,
                    consumer_generation=consumer_generation,
                    consumer_type=consumer_type,
                )
            ]
        )[consumer_uuid]

    def set_allocations_many(
        self,
        updates: Sequence[ConsumerAllocationUpdate],
        *,
        also: Callable[[Connection], None] | None = None,
        before: Callable[[Connection, int], None] | None = None,
    ) -> dict[str, int | None]:
        """Replace the allocations of several consumers at once (``POST /allocations``):
        all or nothing, e.g. to move a VM's claim from one host to another.

        As in Placement, all old allocations of these consumers are released before the
        new ones are checked against capacity. Returns each consumer's new generation
        (None for consumers left holding nothing). ``also`` runs in the same transaction
        after the allocations are written (a migration moves the server's host with its
        claim): if it raises, nothing is written.
        """
        for update_ in updates:
            _normalise_uuid(update_.consumer_uuid, "consumer uuid")
            for rp_uuid, resources in update_.allocations.items():
                for rc, amount in resources.items():
                    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
                        raise BadRequest(
                            f"Allocation of {rc} on resource provider {rp_uuid} must be an "
                            f"integer of at least 1, got {amount!r}"
                        )
        deltas: dict[int, dict[str, int]] = {}
        touched: set[int] = set()
        results: dict[str, int | None] = {}
        with write_transaction(self.engine) as conn:
            seq = _next_seq(conn)
            if before is not None:
                before(conn, seq)
            wanted_uuids = sorted({u for up in updates for u in up.allocations})
            providers: dict[str, int] = {}
            if wanted_uuids:
                providers = {
                    row.uuid: row.id
                    for row in conn.execute(
                        select(_rp.c.uuid, _rp.c.id).where(_rp.c.uuid.in_(wanted_uuids))
                    )
                }
                missing = [u for u in wanted_uuids if u not in providers]
                if missing:
                    raise BadRequest(
                        f"Allocation for resource provider '{missing[0]}' that does not exist."
                    )
            # Phase 1: consumer generations, and release of what they hold now.
            consumer_ids: dict[str, tuple[int | None, int]] = {}
            for up in updates:
                consumer_uuid = _normalise_uuid(up.consumer_uuid, "consumer uuid")
                consumer = conn.execute(
                    select(_consumer.c.id, _consumer.c.generation).where(
                        _consumer.c.uuid == consumer_uuid
                    )
                ).first()
                if consumer is None:
                    if up.consumer_generation is not None:
                        raise ConsumerConflict(
                            f"consumer generation conflict - expected null but got "
                            f"{up.consumer_generation}"
                        )
                    consumer_ids[consumer_uuid] = (None, 0)
                    continue
                if up.consumer_generation != consumer.generation:
                    raise ConsumerConflict(
                        f"consumer generation conflict - expected {consumer.generation} but "
                        f"got {up.consumer_generation}"
                    )
                consumer_ids[consumer_uuid] = (consumer.id, consumer.generation)
                for pid, rc, used in conn.execute(
                    select(
                        _alloc.c.resource_provider_id, _alloc.c.resource_class, _alloc.c.used
                    ).where(_alloc.c.consumer_id == consumer.id)
                ):
                    per = deltas.setdefault(pid, {})
                    per[rc] = per.get(rc, 0) - used
                    touched.add(pid)
                conn.execute(delete(_alloc).where(_alloc.c.consumer_id == consumer.id))
            # Phase 2: capacity for everything requested, together.
            by_provider: dict[str, list[Mapping[str, int]]] = {}
            for up in updates:
                for rp_uuid, resources in up.allocations.items():
                    by_provider.setdefault(rp_uuid, []).append(resources)
            for rp_uuid, parts in sorted(by_provider.items()):
                pid = providers[rp_uuid]
                _check_capacity(conn, pid, rp_uuid, parts)
                per = deltas.setdefault(pid, {})
                for resources in parts:
                    for rc, amount in resources.items():
                        per[rc] = per.get(rc, 0) + amount
                touched.add(pid)
            # Phase 3: write consumers and allocations, bump every touched provider once.
            rows = []
            for up in updates:
                consumer_uuid = _normalise_uuid(up.consumer_uuid, "consumer uuid")
                consumer_id, generation = consumer_ids[consumer_uuid]
                if not up.allocations:
                    if consumer_id is not None:
                        conn.execute(delete(_consumer).where(_consumer.c.id == consumer_id))
                    results[consumer_uuid] = None
                    continue
                if consumer_id is None:
                    consumer_id = conn.execute(
                        insert(_consumer)
                        .values(
                            uuid=consumer_uuid,
                            project_id=up.project_id,
                            user_id=up.user_id,
                            consumer_type=up.consumer_type,
                            generation=1,
                        )
                        .returning(_consumer.c.id)
                    ).scalar_one()
                    results[consumer_uuid] = 1
                else:
                    result = conn.execute(
                        update(_consumer)
                        .where(_consumer.c.id == consumer_id, _consumer.c.generation == generation)
                        .values(
                            generation=generation + 1,
                            project_id=up.project_id,
                            user_id=up.user_id,
                            # A write that does not name a type keeps the consumer's.
                            **(
                                {}
                                if up.consumer_type == UNKNOWN_CONSUMER_TYPE
                                else {"consumer_type": up.consumer_type}
                            ),
                        )
                    )
                    if result.rowcount != 1:
                        raise ConsumerConflict(f"consumer {consumer_uuid} changed concurrently")
                    results[consumer_uuid] = generation + 1
                rows += [
                    {
                        "resource_provider_id": providers[rp_uuid],
                        "consumer_id": consumer_id,
                        "resource_class": rc,
                        "used": amount,
                    }
                    for rp_uuid, resources in up.allocations.items()
                    for rc, amount in resources.items()
                ]
            if rows:
                conn.execute(insert(_alloc), rows)
            for pid in sorted(touched):
                _touch_provider(conn, pid, seq)
            if also is not None:
                also(conn)
        self.index.apply_own_write(seq, deltas)
        return results

    def _allocate_new_consumer(
        self,
        consumer_uuid: str,
        allocations: Mapping[str, Mapping[str, int]],
        project_id: str,
        user_id: str,
        consumer_type: str,
    ) -> int:
        """The claim path: a consumer that holds nothing yet, in as few statements as
        possible. Provider generations are bumped under the write lock, so no other
        writer can slip in between the capacity check and the insert."""
        deltas: dict[int, dict[str, int]] = {}
        with write_transaction(self.engine) as conn:
            seq = _next_seq(conn)
            providers = {
                row.uuid: row.id
                for row in conn.execute(
                    update(_rp)
                    .where(_rp.c.uuid.in_(list(allocations)))
                    .values(generation=_rp.c.generation + 1, updated_seq=seq)
                    .returning(_rp.c.id, _rp.c.uuid)
                )
            }
            missing = sorted(set(allocations) - providers.keys())
            if missing:
                raise BadRequest(
                    f"Allocation for resource provider '{missing[0]}' that does not exist."
                )
            consumer_id = conn.execute(
                _insert_if_absent(
                    conn,
                    _consumer,
                    "uuid",
                    uuid=consumer_uuid,
                    project_id=project_id,
                    user_id=user_id,
                    consumer_type=consumer_type,
                    generation=1,
                )
            ).scalar_one_or_none()
            if consumer_id is None:
                existing = conn.execute(
                    select(_consumer.c.generation).where(_consumer.c.uuid == consumer_uuid)
                ).scalar_one()
                raise ConsumerConflict(
                    f"consumer generation conflict - expected null but consumer "
                    f"{consumer_uuid} exists at generation {existing}"
                )
            for rp_uuid, resources in allocations.items():
                pid = providers[rp_uuid]
                _check_capacity(conn, pid, rp_uuid, [resources])
                per = deltas.setdefault(pid, {})
                for rc, amount in resources.items():
                    per[rc] = per.get(rc, 0) + amount
            conn.execute(
                insert(_alloc),
                [
                    {
                        "resource_provider_id": providers[rp_uuid],
                        "consumer_id": consumer_id,
                        "resource_class": rc,
                        "used": amount,
                    }
                    for rp_uuid, resources in allocations.items()
                    for rc, amount in resources.items()
                ],
            )
        self.index.apply_own_write(seq, deltas)
        return 1

    def delete_allocations(self, consumer_uuid: str) -> None:
        """Release everything ``consumer_uuid`` holds; NotFound when it holds nothing."""
        deltas: dict[int, dict[str, int]] = {}
        with write_transaction(self.engine) as conn:
            seq = _next_seq(conn)
            consumer = conn.execute(
                select(_consumer.c.id).where(_consumer.c.uuid == consumer_uuid)
            ).first()
            if consumer is not None:
                for pid, rc, used in conn.execute(
                    select(
                        _alloc.c.resource_provider_id, _alloc.c.resource_class, _alloc.c.used
                    ).where(_alloc.c.consumer_id == consumer.id)
                ):
                    per = deltas.setdefault(pid, {})
                    per[rc] = per.get(rc, 0) - used
            if consumer is None or not deltas:
                raise NotFound(f"No allocations for consumer '{consumer_uuid}'")
            conn.execute(delete(_alloc).where(_alloc.c.consumer_id == consumer.id))
            conn.execute(delete(_consumer).where(_consumer.c.id == consumer.id))
            for pid in sorted(deltas):
                _touch_provider(conn, pid, seq)
        self.index.apply_own_write(seq, deltas)

    def get_provider_allocations(self, uuid: str) -> tuple[int, list[ConsumerAllocations]]:
        """The provider's generation and each consumer's allocation against it (each
        ConsumerAllocations holds exactly this provider's part)."""
        with read_transaction(self.engine) as conn:
            row = _provider_row(conn, uuid)
            per: dict[str, tuple[int, dict[str, int]]] = {}
            for consumer_uuid, generation, rc, used in conn.execute(
                select(
                    _consumer.c.uuid, _consumer.c.generation, _alloc.c.resource_class, _alloc.c.used
                )
                .join(_consumer, _consumer.c.id == _alloc.c.consumer_id)
                .where(_alloc.c.resource_provider_id == row.id)
                .order_by(_consumer.c.id, _alloc.c.resource_class)
            ):
                per.setdefault(consumer_uuid, (generation, {}))[1][rc] = used
        return row.generation, [
            ConsumerAllocations(
                consumer_uuid=c,
                allocations=(ProviderAllocation(uuid, row.generation, resources),),
                generation=g,
            )
            for c, (g, resources) in per.items()
        ]

    def tree_snapshot(self) -> Snapshot:
        """Every provider with its parent, traits, aggregates, inventories and usage.

        Read again only when the placement sequence moved (every write moves it), so
        a snapshot is shared by the reads between two writes; nobody changes it.
        """
        with read_transaction(self.engine) as conn:
            seq = int(conn.execute(select(_seq.c.value).where(_seq.c.id == 1)).scalar_one())
            cached = self._tree_cache
            if cached is not None and cached[0] == seq:
                return cached[1]
            rows = conn.execute(select(_rp.c.id, _rp.c.uuid, _rp.c.parent_provider_id)).all()
            traits: dict[int, set[str]] = {}
            for rp_id, trait in conn.execute(select(_trait.c.resource_provider_id, _trait.c.trait)):
                traits.setdefault(rp_id, set()).add(trait)
            aggregates: dict[int, set[str]] = {}
            for rp_id, agg in conn.execute(
                select(_agg.c.resource_provider_id, _agg.c.aggregate_uuid)
            ):
                aggregates.setdefault(rp_id, set()).add(agg)
            inventories: dict[int, dict[str, Inventory]] = {}
            for row in conn.execute(select(_inv)):
                inventories.setdefault(row.resource_provider_id, {})[row.resource_class] = (
                    Inventory(
                        total=row.total,
                        reserved=row.reserved,
                        min_unit=row.min_unit,
                        max_unit=row.max_unit,
                        step_size=row.step_size,
                        allocation_ratio=row.allocation_ratio,
                    )
                )
            used: dict[int, dict[str, int]] = {}
            for rp_id, rc, amount in conn.execute(
                select(_alloc.c.resource_provider_id, _alloc.c.resource_class,
                       func.sum(_alloc.c.used))
                .group_by(_alloc.c.resource_provider_id, _alloc.c.resource_class)
            ):  # fmt: skip
                used.setdefault(rp_id, {})[rc] = int(amount)
        snapshot = Snapshot(
            {
                r.id: TreeProvider(
                    r.id,
                    r.uuid,
                    r.parent_provider_id,
                    frozenset(traits.get(r.id, ())),
                    frozenset(aggregates.get(r.id, ())),
                    inventories.get(r.id, {}),
                    used.get(r.id, {}),
                )
                for r in rows
            }
        )
        self._tree_cache = (seq, snapshot)
        return snapshot

    def get_usages(self, uuid: str) -> ProviderUsages:
        """What is allocated on a provider, per resource class it has inventory of."""
        with read_transaction(self.engine) as conn:
            row = _provider_row(conn, uuid)
            usages = {rc: 0 for rc in _inventories(conn, row.id)}
            for rc, used in conn.execute(
                select(_alloc.c.resource_class, func.sum(_alloc.c.used))
                .where(_alloc.c.resource_provider_id == row.id)
                .group_by(_alloc.c.resource_class)
            ):
                usages[rc] = int(used)
        return ProviderUsages(row.generation, usages)

    # ---------------------------------------------------------------- candidates

    def refresh(self) -> None:
        """Bring the in-memory index up to the newest committed write."""
        self.index.refresh()

    def allocation_candidates(
        self, request: CandidateRequest, limit: int | None = None
    ) -> CandidateResult:
        """``GET /allocation_candidates`` for one unnumbered group on flat providers."""
        self.refresh()
        with self.index.lock:
            self._check_request(request)
            ids = sorted(self.index.matching(request))
            if limit is not None:
                ids = ids[:limit]
            states = [self.index.providers[pid] for pid in ids]
            return CandidateResult(
                candidates=[Candidate(s.uuid, s.id, dict(request.resources)) for s in states],
                summaries={s.uuid: s.summary() for s in states},
            )

    def matching_states(self, request: CandidateRequest) -> list[ProviderState]:
        """Provider states matching ``request``, for callers that rank them (the scheduler).

        The states are snapshots: they are replaced, never mutated, by later refreshes.
        """
        self.refresh()
        with self.index.lock:
            self._check_request(request)
            providers = self.index.providers
            return [providers[pid] for pid in self.index.matching(request)]

    def with_candidates(self, request: CandidateRequest, rank: Callable[[CandidateTable], T]) -> T:
        """Call ``rank`` on the providers matching ``request`` while the index holds still.

        For callers that rank thousands of hosts (the scheduler): ``rank`` must be quick
        and must not call back into this service.
        """
        self.refresh()
        with self.index.lock:
            # Unlike the HTTP API, a trait or class nobody has reported yet is not an
            # error here: no provider has it, which the caller explains as such.
            return rank(CandidateTable(self.index, list(self.index.matching(request))))

    def eliminate(self, checks: Iterable[Check]) -> tuple[int, list[Elimination], int]:
        """How many providers exist, which of ``checks`` removed how many of them first,
        and how many pass them all (see ``ProviderIndex.eliminate``)."""
        self.refresh()
        with self.index.lock:
            eliminated, remaining = self.index.eliminate(checks)
            return len(self.index.providers), eliminated, remaining

    def check_names(self, resource_classes: Iterable[str], traits: TraitQuery) -> None:
        """400 unless every resource class and trait named exists."""
        self.refresh()
        with self.index.lock:
            self._check_request(CandidateRequest(dict.fromkeys(resource_classes, 1), traits))

    def _check_request(self, request: CandidateRequest) -> None:
        unknown_rc = sorted(
            rc for rc in request.resources if not self.index.known_resource_class(rc)
        )
        if unknown_rc:
            raise BadRequest(
                f"Invalid resource class in resources parameter: {', '.join(unknown_rc)}"
            )
        unknown = self.index.check_traits(request.traits)
        if unknown:
            raise BadRequest(f"No such trait(s): {', '.join(unknown)}")

    def _check_resource_classes(self, conn: Connection, names: Iterable[str], uuid: str) -> None:
        wanted = set(names) - standard_resource_classes()
        if not wanted:
            return
        custom = set(
            conn.execute(
                select(CustomResourceClass.name).where(CustomResourceClass.name.in_(wanted))
            ).scalars()
        )
        unknown = sorted(wanted - custom)
        if unknown:
            raise BadRequest(
                f"Unknown resource class in inventory for resource provider {uuid}: "
                f"{', '.join(unknown)}"
            )

    def _unknown_traits(self, conn: Connection, names: frozenset[str]) -> list[str]:
        wanted = set(names) - standard_traits()
        if not wanted:
            return []
        custom = set(
            conn.execute(select(CustomTrait.name).where(CustomTrait.name.in_(wanted))).scalars()
        )
        return sorted(wanted - custom)


# ---------------------------------------------------------------------- helpers


def _next_seq(conn: Connection) -> int:
    """Take the write lock (the sequence row) and return this write's sequence number."""
    value = conn.execute(
        update(_seq).where(_seq.c.id == 1).values(value=_seq.c.value + 1).returning(_seq.c.value)
    ).scalar_one()
    return int(value)


def _insert_if_absent(conn: Connection, table: Table, key: str, **values: object) -> Any:
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING id, on SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        return (
            pg_insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[key])
            .returning(table.c.id)
        )
    return (
        sqlite_insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[key])
        .returning(table.c.id)
    )


def _bump_provider(conn: Connection, provider_id: int, generation: int, seq: int, uuid: str) -> int:
    result = conn.execute(
        update(_rp)
        .where(_rp.c.id == provider_id, _rp.c.generation == generation)
        .values(generation=_rp.c.generation + 1, updated_seq=seq)
    )
    if result.rowcount != 1:
        raise ConcurrentUpdate(
            f"resource provider generation conflict: {uuid} is no longer at generation "
            f"{generation}; read it again and retry"
        )
    return generation + 1


def _touch_provider(conn: Connection, provider_id: int, seq: int) -> None:
    conn.execute(
        update(_rp)
        .where(_rp.c.id == provider_id)
        .values(generation=_rp.c.generation + 1, updated_seq=seq)
    )


@dataclass(frozen=True, slots=True)
class _Tree:
    """Every provider's uuid and parent, to answer parent and root questions."""

    uuids: dict[int, str]
    ids: dict[str, int]
    parents: dict[int, int | None]

    @classmethod
    def load(cls, conn: Connection) -> _Tree:
        rows = conn.execute(select(_rp.c.id, _rp.c.uuid, _rp.c.parent_provider_id)).all()
        return cls(
            {r.id: r.uuid for r in rows},
            {r.uuid: r.id for r in rows},
            {r.id: r.parent_provider_id for r in rows},
        )

    def ancestors(self, rp_id: int) -> list[int]:
        out: list[int] = []
        parent = self.parents.get(rp_id)
        while parent is not None and parent not in out:
            out.append(parent)
            parent = self.parents.get(parent)
        return out

    def root_uuid(self, rp_id: int) -> str:
        ancestors = self.ancestors(rp_id)
        return self.uuids[ancestors[-1] if ancestors else rp_id]

    def parent_uuid(self, rp_id: int) -> str | None:
        parent = self.parents.get(rp_id)
        return None if parent is None else self.uuids[parent]

    def provider(self, uuid: str, name: str, generation: int) -> Provider:
        rp_id = self.ids[uuid]
        return Provider(uuid, name, generation, self.parent_uuid(rp_id), self.root_uuid(rp_id))


def _provider_row(conn: Connection, uuid: str) -> ProviderRow:
    row = conn.execute(
        select(_rp.c.id, _rp.c.uuid, _rp.c.name, _rp.c.generation).where(_rp.c.uuid == uuid)
    ).first()
    if row is None:
        raise NotFound(f"No resource provider with uuid {uuid} found")
    return ProviderRow(row.id, row.uuid, row.name, row.generation)


@dataclass(frozen=True, slots=True)
class ProviderRow:
    id: int
    uuid: str
    name: str
    generation: int


def _inventories(conn: Connection, provider_id: int) -> dict[str, Inventory]:
    return {
        row.resource_class: Inventory(
            total=row.total,
            reserved=row.reserved,
            min_unit=row.min_unit,
            max_unit=row.max_unit,
            step_size=row.step_size,
            allocation_ratio=row.allocation_ratio,
        )
        for row in conn.execute(
            select(_inv)
            .where(_inv.c.resource_provider_id == provider_id)
            .order_by(_inv.c.resource_class)
        )
    }


def _check_capacity(
    conn: Connection, provider_id: int, uuid: str, parts: Sequence[Mapping[str, int]]
) -> None:
    """Each allocation in ``parts`` must respect min_unit/max_unit/step_size, and all of
    them together must fit what is left of the provider's capacity."""
    classes = sorted({rc for part in parts for rc in part})
    used_q = (
        select(func.coalesce(func.sum(_alloc.c.used), 0))
        .where(
            _alloc.c.resource_provider_id == _inv.c.resource_provider_id,
            _alloc.c.resource_class == _inv.c.resource_class,
        )
        .scalar_subquery()
    )
    rows = conn.execute(
        select(_inv, used_q.label("used")).where(
            _inv.c.resource_provider_id == provider_id,
            _inv.c.resource_class.in_(classes),
        )
    ).all()
    found = {row.resource_class: row for row in rows}
    for rc in classes:
        row = found.get(rc)
        if row is None:
            raise CapacityExceeded(
                f"Unable to allocate inventory: Inventory for '{rc}' on resource provider "
                f"'{uuid}' invalid."
            )
        inventory = Inventory(
            total=row.total,
            reserved=row.reserved,
            min_unit=row.min_unit,
            max_unit=row.max_unit,
            step_size=row.step_size,
            allocation_ratio=row.allocation_ratio,
        )
        requested = 0
        for part in parts:
            amount = part.get(rc)
            if amount is None:
                continue
            requested += amount
            if not (inventory.min_unit <= amount <= inventory.max_unit) or (
                amount % inventory.step_size
            ):
                raise CapacityExceeded(
                    f"Unable to allocate inventory: Unable to create allocation for '{rc}' on "
                    f"resource provider '{uuid}'. The requested amount would violate "
                    f"inventory constraints: {amount} is not within [{inventory.min_unit}, "
                    f"{inventory.max_unit}] in steps of {inventory.step_size}."
                )
        used = int(row.used)
        if used + requested > inventory.capacity:
            raise CapacityExceeded(
                f"Unable to allocate inventory: Unable to create allocation for '{rc}' on "
                f"resource provider '{uuid}'. The requested amount would exceed the "
                f"capacity: {used} used + {requested} requested > {inventory.capacity:g}."
            )


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise BadRequest(f"resource provider name must be 1-200 characters, got {name!r}")
    return name


def _normalise_uuid(value: str, what: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, AttributeError, TypeError) as exc:
        raise BadRequest(f"Malformed {what}: {value!r}") from exc


def _check_inventory(uuid: str, rc: str, inv: Inventory) -> None:
    problems = []
    if not 1 <= inv.total <= MAX_INT:
        problems.append(f"total {inv.total} must be in [1, {MAX_INT}]")
    if not 0 <= inv.reserved <= MAX_INT:
        problems.append(f"reserved {inv.reserved} must be in [0, {MAX_INT}]")
    if inv.reserved > inv.total:
        problems.append(f"reserved {inv.reserved} must not exceed total {inv.total}")
    if not 1 <= inv.min_unit <= MAX_INT:
        problems.append(f"min_unit {inv.min_unit} must be in [1, {MAX_INT}]")
    if not 1 <= inv.max_unit <= MAX_INT:
        problems.append(f"max_unit {inv.max_unit} must be in [1, {MAX_INT}]")
    if inv.min_unit > inv.max_unit:
        problems.append(f"min_unit {inv.min_unit} must not exceed max_unit {inv.max_unit}")
    if not 1 <= inv.step_size <= MAX_INT:
        problems.append(f"step_size {inv.step_size} must be in [1, {MAX_INT}]")
    if not 0 < inv.allocation_ratio <= 3.40282e38:
        problems.append(f"allocation_ratio {inv.allocation_ratio} must be greater than 0")
    if problems:
        raise BadRequest(
            f"Unable to update inventory for resource provider {uuid}: invalid inventory for "
            f"{rc}: {'; '.join(problems)}"
        )


__all__ = ["Candidate", "CandidateResult", "Conflict", "Placement"]
