"""An in-memory index of every provider's traits, inventories and usages.

Allocation candidates are computed from it with set operations on provider ids, which is
what makes a query over 10,000 providers take a millisecond instead of tens. The index is
never trusted for writes: before each query it asks the database for the placement write
sequence and reloads only the providers stamped with a newer value, so it reflects every
committed write, also those of other processes. Claims re-check capacity in the database
under the generation check, so a race between reading the index and claiming can only
cost a retry, never an over-allocation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy import Connection, Engine, Table, select

from wattvisor.placement.entities import (
    CandidateRequest,
    Inventory,
    ProviderSummary,
    ResourceSummary,
    TraitQuery,
)
from wattvisor.placement.names import standard_resource_classes, standard_traits
from wattvisor.store import read_transaction
from wattvisor.store.models import (
    Allocation,
    CustomResourceClass,
    CustomTrait,
    PlacementSequence,
    ProviderTrait,
    ResourceProvider,
    ResourceProviderDeletion,
)
from wattvisor.store.models import Inventory as InventoryRow

# Each entry is a set of up to all provider ids (~0.5 MB at 10,000 providers).
_FIT_CACHE_SIZE = 64
# Above this many changed providers one full load is cheaper than IN (...) lists.
_FULL_RELOAD_THRESHOLD = 500
_EMPTY: frozenset[int] = frozenset()
_SEQ_QUERY = select(PlacementSequence.value).where(PlacementSequence.id == 1)

_rp = cast(Table, ResourceProvider.__table__)
_inv = cast(Table, InventoryRow.__table__)
_trait = cast(Table, ProviderTrait.__table__)
_alloc = cast(Table, Allocation.__table__)


@dataclass(slots=True)
class ProviderState:
    """What the index knows about one provider."""

    id: int
    uuid: str
    name: str
    generation: int
    traits: frozenset[str]
    inventories: dict[str, Inventory]
    usages: dict[str, int]

    def fits(self, resource_class: str, amount: int) -> bool:
        inventory = self.inventories.get(resource_class)
        return inventory is not None and inventory.admits(
            self.usages.get(resource_class, 0), amount
        )

    def free(self, resource_class: str) -> float:
        """Capacity left for ``resource_class``; 0 when the provider has none of it."""
        inventory = self.inventories.get(resource_class)
        if inventory is None:
            return 0.0
        return inventory.capacity - self.usages.get(resource_class, 0)

    def summary(self) -> ProviderSummary:
        return ProviderSummary(
            uuid=self.uuid,
            resources={
                rc: ResourceSummary(int(inv.capacity), self.usages.get(rc, 0))
                for rc, inv in self.inventories.items()
            },
            traits=self.traits,
        )


class CandidateTable:
    """Matching providers as columns, for ranking thousands of hosts quickly.

    Valid only inside ``Placement.with_candidates``: it reads the live index.
    """

    def __init__(self, index: ProviderIndex, ids: list[int]) -> None:
        self._index = index
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def free(self, resource_class: str) -> list[float]:
        """Capacity left for ``resource_class``, aligned with ``ids``."""
        return list(map(self._index.free_column(resource_class).__getitem__, self.ids))

    def uuids(self) -> list[str]:
        return list(map(self._index.uuid_of.__getitem__, self.ids))

    def state(self, position: int) -> ProviderState:
        return self._index.providers[self.ids[position]]

    def exclude(self, uuids: set[str] | frozenset[str]) -> None:
        """Drop the providers named in ``uuids`` (e.g. hosts that failed a spawn)."""
        by_uuid = self._index.by_uuid
        unwanted = {by_uuid[u] for u in uuids if u in by_uuid}
        if unwanted:
            self.ids = [pid for pid in self.ids if pid not in unwanted]


@dataclass(frozen=True, slots=True)
class Check:
    """One constraint a provider can fail, for explaining why none was chosen.

    ``kind`` is ``excluded`` (the providers in ``uuids``, e.g. hosts that failed to
    spawn the request), ``required`` or ``forbidden`` (``name`` is a trait), ``any_of``
    (``names`` holds the traits) or ``resource`` (``name`` is a resource class and
    ``amount`` the amount requested).
    """

    kind: Literal["excluded", "required", "forbidden", "any_of", "resource"]
    name: str = ""
    amount: int = 0
    names: tuple[str, ...] = ()
    uuids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Elimination:
    """The providers one check removed that no earlier check had removed.

    For a resource check, ``largest`` is the most of the class any of them could
    take in one allocation (free capacity bounded by ``max_unit``; 0 without
    inventory of the class) and ``without_inventory`` how many have none at all.
    """

    check: Check
    removed: int
    largest: int = 0
    without_inventory: int = 0


class ProviderIndex:
    """Provider state mirrored from the database, refreshed incrementally before use."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.RLock()
        self._seq = -1
        self.providers: dict[int, ProviderState] = {}
        self.by_uuid: dict[str, int] = {}
        self.uuid_of: dict[int, str] = {}
        self._by_trait: dict[str, set[int]] = {}
        self._by_rc: dict[str, set[int]] = {}
        self._fit_cache: OrderedDict[tuple[str, int], set[int]] = OrderedDict()
        # resource class -> provider id -> capacity left; every provider has an entry in
        # every column (0.0 without inventory) so weighers can map() over candidate ids.
        self._free: dict[str, dict[int, float]] = {}
        self.custom_traits: frozenset[str] = frozenset()
        self.custom_resource_classes: frozenset[str] = frozenset()

    @property
    def lock(self) -> threading.RLock:
        """Held while reading the index so a concurrent refresh cannot interleave."""
        return self._lock

    def refresh(self) -> None:
        """Bring the index up to the newest committed placement write."""
        # The common case (nothing changed) costs one plain query, made without the lock
        # so that readers and this process's own writes do not queue behind it; only a
        # change pays for a snapshot transaction.
        with self._engine.connect() as probe:
            seq = probe.execute(_SEQ_QUERY).scalar_one()
            probe.rollback()
        if seq == self._seq:
            return
        with self._lock:
            if seq != self._seq:
                self._reload()

    def _reload(self) -> None:
        with read_transaction(self._engine) as conn:
            seq = conn.execute(_SEQ_QUERY).scalar_one()
            if self._seq < 0:
                self._load(conn, None)
            else:
                deleted = (
                    conn.execute(
                        select(ResourceProviderDeletion.provider_id).where(
                            ResourceProviderDeletion.seq > self._seq
                        )
                    )
                    .scalars()
                    .all()
                )
                for provider_id in deleted:
                    self._drop(provider_id)
                changed = (
                    conn.execute(select(_rp.c.id).where(_rp.c.updated_seq > self._seq))
                    .scalars()
                    .all()
                )
                if len(changed) > _FULL_RELOAD_THRESHOLD:
                    self._load(conn, None)
                elif changed:
                    self._load(conn, list(changed))
            self.custom_traits = frozenset(conn.execute(select(CustomTrait.name)).scalars())
            self.custom_resource_classes = frozenset(
                conn.execute(select(CustomResourceClass.name)).scalars()
            )
            self._seq = seq

    def _load(self, conn: Connection, ids: list[int] | None) -> None:
        """Load the given providers (all when ``ids`` is None) from one snapshot."""
        rp_q = select(_rp.c.id, _rp.c.uuid, _rp.c.name, _rp.c.generation)
        inv_q = select(_inv)
        trait_q = select(_trait.c.resource_provider_id, _trait.c.trait)
        use_q = select(_alloc.c.resource_provider_id, _alloc.c.resource_class, _alloc.c.used)
        if ids is None:
            self.providers.clear()
            self.by_uuid.clear()
            self.uuid_of.clear()
            self._by_trait.clear()
            self._by_rc.clear()
            self._fit_cache.clear()
            self._free.clear()
        else:
            rp_q = rp_q.where(_rp.c.id.in_(ids))
            inv_q = inv_q.where(_inv.c.resource_provider_id.in_(ids))
            trait_q = trait_q.where(_trait.c.resource_provider_id.in_(ids))
            use_q = use_q.where(_alloc.c.resource_provider_id.in_(ids))
        inventories: dict[int, dict[str, Inventory]] = {}
        for row in conn.execute(inv_q):
            inventories.setdefault(row.resource_provider_id, {})[row.resource_class] = Inventory(
                total=row.total,
                reserved=row.reserved,
                min_unit=row.min_unit,
                max_unit=row.max_unit,
                step_size=row.step_size,
                allocation_ratio=row.allocation_ratio,
            )
        traits: dict[int, set[str]] = {}
        for pid, trait in conn.execute(trait_q):
            traits.setdefault(pid, set()).add(trait)
        usages: dict[int, dict[str, int]] = {}
        for pid, rc, used in conn.execute(use_q):
            per = usages.setdefault(pid, {})
            per[rc] = per.get(rc, 0) + used
        seen: set[int] = set()
        for pid, uuid, name, generation in conn.execute(rp_q):
            seen.add(pid)
            self._put(
                ProviderState(
                    id=pid,
                    uuid=uuid,
                    name=name,
                    generation=generation,
                    traits=frozenset(traits.get(pid, ())),
                    inventories=inventories.get(pid, {}),
                    usages=usages.get(pid, {}),
                )
            )
        for pid in ids or ():
            if pid not in seen:
                self._drop(pid)

    def _put(self, state: ProviderState) -> None:
        old = self.providers.get(state.id)
        if old is not None:
            for trait in old.traits - state.traits:
                self._by_trait[trait].discard(state.id)
            for rc in old.inventories.keys() - state.inventories.keys():
                self._by_rc[rc].discard(state.id)
            if old.uuid != state.uuid:
                self.by_uuid.pop(old.uuid, None)
        for trait in state.traits:
            self._by_trait.setdefault(trait, set()).add(state.id)
        for rc in state.inventories:
            self._by_rc.setdefault(rc, set()).add(state.id)
        self.providers[state.id] = state
        self.by_uuid[state.uuid] = state.id
        self.uuid_of[state.id] = state.uuid
        for rc in state.inventories.keys() - self._free.keys():
            self._free[rc] = dict.fromkeys(self.providers, 0.0)
        for rc, column in self._free.items():
            column[state.id] = state.free(rc)
        for (rc, amount), members in self._fit_cache.items():
            if state.fits(rc, amount):
                members.add(state.id)
            else:
                members.discard(state.id)

    def _drop(self, provider_id: int) -> None:
        old = self.providers.pop(provider_id, None)
        if old is None:
            return
        self.by_uuid.pop(old.uuid, None)
        self.uuid_of.pop(provider_id, None)
        for trait in old.traits:
            self._by_trait[trait].discard(provider_id)
        for rc in old.inventories:
            self._by_rc[rc].discard(provider_id)
        for members in self._fit_cache.values():
            members.discard(provider_id)
        for column in self._free.values():
            column.pop(provider_id, None)

    def apply_own_write(
        self,
        seq: int,
        usage_deltas: dict[int, dict[str, int]],
        generation_bumps: dict[int, int] | None = None,
    ) -> None:
        """Apply an allocation write this process just committed as sequence ``seq``.

        ``generation_bumps`` says how often each provider's generation went up (default
        once). Only when no other write came in between (``seq`` follows the index's own)
        does the index know the result without reading it back; otherwise the next refresh
        reloads the changed providers as usual.
        """
        with self._lock:
            if seq != self._seq + 1:
                return
            for pid, deltas in usage_deltas.items():
                old = self.providers.get(pid)
                if old is None:
                    return
                usages = dict(old.usages)
                for rc, delta in deltas.items():
                    usages[rc] = usages.get(rc, 0) + delta
                    if usages[rc] == 0:
                        del usages[rc]
                self._put(
                    ProviderState(
                        id=old.id,
                        uuid=old.uuid,
                        name=old.name,
                        generation=old.generation + (generation_bumps or {}).get(pid, 1),
                        traits=old.traits,
                        inventories=old.inventories,
                        usages=usages,
                    )
                )
            self._seq = seq

    def free_column(self, resource_class: str) -> dict[int, float]:
        """Capacity left per provider id for ``resource_class`` (do not mutate)."""
        column = self._free.get(resource_class)
        if column is None:
            column = self._free[resource_class] = dict.fromkeys(self.providers, 0.0)
        return column

    def fitting(self, resource_class: str, amount: int) -> set[int]:
        """Providers that can take ``amount`` of ``resource_class`` now (do not mutate)."""
        key = (resource_class, amount)
        members = self._fit_cache.get(key)
        if members is not None:
            self._fit_cache.move_to_end(key)
            return members
        providers = self.providers
        members = {
            pid
            for pid in self._by_rc.get(resource_class, ())
            if providers[pid].fits(resource_class, amount)
        }
        self._fit_cache[key] = members
        if len(self._fit_cache) > _FIT_CACHE_SIZE:
            self._fit_cache.popitem(last=False)
        return members

    def with_trait(self, trait: str) -> set[int] | frozenset[int]:
        return self._by_trait.get(trait, _EMPTY)

    def with_any_trait(self, traits: Iterable[str]) -> set[int]:
        out: set[int] = set()
        for trait in traits:
            out |= self._by_trait.get(trait, _EMPTY)
        return out

    def matching(self, request: CandidateRequest) -> set[int]:
        """Ids of providers that satisfy every resource and trait constraint of ``request``.

        Call with ``lock`` held, after ``refresh()``.
        """
        positive: list[set[int] | frozenset[int]] = [
            self.with_trait(t) for t in request.traits.required
        ]
        positive.extend(self.with_any_trait(group) for group in request.traits.any_of)
        positive.extend(self.fitting(rc, amount) for rc, amount in request.resources.items())
        total = len(self.providers)
        # A constraint every provider meets (a trait the whole fleet has) filters nothing.
        positive = [members for members in positive if len(members) < total]
        if not positive:
            result = set(self.providers)
        else:
            positive.sort(key=len)
            result = set(positive[0])
            for members in positive[1:]:
                if not result:
                    break
                result &= members
        for trait in request.traits.forbidden:
            if not result:
                break
            result -= self.with_trait(trait)
        return result

    def eliminate(self, checks: Iterable[Check]) -> tuple[list[Elimination], int]:
        """Apply ``checks`` in order and attribute each provider to the first one it fails.

        Returns one entry per check (``removed`` may be 0) and how many providers pass
        them all. Call with ``lock`` held, after ``refresh()``.
        """
        remaining = set(self.providers)
        out: list[Elimination] = []
        for check in checks:
            if check.kind == "excluded":
                removed = {self.by_uuid[u] for u in check.uuids if u in self.by_uuid}
            elif check.kind == "required":
                removed = remaining - self.with_trait(check.name)
            elif check.kind == "forbidden":
                removed = remaining & self.with_trait(check.name)
            elif check.kind == "any_of":
                removed = remaining - self.with_any_trait(check.names)
            else:
                removed = remaining - self.fitting(check.name, check.amount)
            removed &= remaining
            remaining -= removed
            if check.kind != "resource":
                out.append(Elimination(check, len(removed)))
                continue
            largest, without = 0, 0
            for pid in removed:
                state = self.providers[pid]
                inventory = state.inventories.get(check.name)
                if inventory is None:
                    without += 1
                    continue
                free = int(state.free(check.name))
                largest = max(largest, min(free, inventory.max_unit))
            out.append(Elimination(check, len(removed), largest, without))
        return out, len(remaining)

    def summary(self, provider_id: int) -> ProviderSummary:
        return self.providers[provider_id].summary()

    def known_trait(self, name: str) -> bool:
        return name in standard_traits() or name in self.custom_traits

    def known_resource_class(self, name: str) -> bool:
        return name in standard_resource_classes() or name in self.custom_resource_classes

    def check_traits(self, query: TraitQuery) -> list[str]:
        """Trait names in ``query`` that do not exist (sorted)."""
        return sorted(n for n in query.names() if not self.known_trait(n))
