"""Allocation candidates over provider trees and sharing providers (Placement 1.25-1.39).

Request groups are an unsuffixed group, whose resources may come from several
providers of one tree (and from providers sharing with it through an aggregate), and
suffixed groups, each satisfied whole by one provider. ``group_policy=isolate`` keeps
suffixed groups on different providers, ``same_subtree`` keeps named groups under one
of their providers, ``root_required`` constrains the tree's root. This works on a
snapshot of the whole store and enumerates combinations, which suits the size of a
Placement API request; the scheduler's flat fast path is :mod:`wattvisor.placement.index`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from wattvisor.placement.entities import Inventory, TraitQuery

SHARES = "MISC_SHARES_VIA_AGGREGATE"
MAX_COMBINATIONS = 100_000
"""Upper bound of combinations tried for one tree (a request that large is refused)."""


@dataclass(frozen=True, slots=True)
class TreeProvider:
    id: int
    uuid: str
    parent_id: int | None
    traits: frozenset[str]
    aggregates: frozenset[str]
    inventories: dict[str, Inventory]
    used: dict[str, int]

    def free(self, rc: str) -> int:
        inventory = self.inventories.get(rc)
        if inventory is None:
            return 0
        return int(inventory.capacity) - self.used.get(rc, 0)

    def fits(self, rc: str, amount: int) -> bool:
        inventory = self.inventories.get(rc)
        return (
            inventory is not None
            and inventory.min_unit <= amount <= inventory.max_unit
            and amount % inventory.step_size == 0
            and self.used.get(rc, 0) + amount <= inventory.capacity
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    providers: dict[int, TreeProvider]
    roots: dict[int, int] = field(init=False, repr=False, compare=False)
    """Each provider's root, worked out once."""
    trees: dict[int, list[int]] = field(init=False, repr=False, compare=False)
    """Each root's providers (itself included), in ``providers`` order."""

    def __post_init__(self) -> None:
        roots = {rp_id: self._walk_to_root(rp_id) for rp_id in self.providers}
        trees: dict[int, list[int]] = {}
        for rp_id, root_id in roots.items():
            trees.setdefault(root_id, []).append(rp_id)
        object.__setattr__(self, "roots", roots)
        object.__setattr__(self, "trees", trees)

    def _walk_to_root(self, rp_id: int) -> int:
        seen: set[int] = set()
        while (parent := self.providers[rp_id].parent_id) is not None and rp_id not in seen:
            seen.add(rp_id)
            rp_id = parent
        return rp_id

    def root(self, rp_id: int) -> int:
        root_id = self.roots.get(rp_id)
        return self._walk_to_root(rp_id) if root_id is None else root_id

    def ancestors_or_self(self, rp_id: int) -> list[int]:
        out = [rp_id]
        while (parent := self.providers[out[-1]].parent_id) is not None and parent not in out:
            out.append(parent)
        return out

    def tree(self, root_id: int) -> list[int]:
        return list(self.trees.get(root_id, ()))


@dataclass(frozen=True, slots=True)
class RequestGroup:
    suffix: str
    resources: dict[str, int]
    traits: TraitQuery = field(default_factory=TraitQuery)
    member_of: tuple[tuple[frozenset[str], bool], ...] = ()
    in_tree: str | None = None


@dataclass(frozen=True, slots=True)
class TreeRequest:
    groups: tuple[RequestGroup, ...]
    isolate: bool = False
    same_subtree: tuple[frozenset[str], ...] = ()
    root_traits: TraitQuery = field(default_factory=TraitQuery)


@dataclass(frozen=True, slots=True)
class TreeCandidate:
    allocations: dict[str, dict[str, int]]
    """Provider uuid → resource class → amount."""
    mappings: dict[str, list[str]]
    """Group suffix (``""`` for the unsuffixed group) → provider uuids."""


def _traits_ok(traits: frozenset[str], query: TraitQuery) -> bool:
    return (
        query.required <= traits
        and not (query.forbidden & traits)
        and all(group & traits for group in query.any_of)
    )


def _member_ok(
    aggregates: frozenset[str], member_of: Sequence[tuple[frozenset[str], bool]]
) -> bool:
    return all(bool(aggregates & aggs) != forbidden for aggs, forbidden in member_of)


# One way to satisfy a group: (provider id, resource class, amount) triples and the
# providers the group maps to.
_Option = tuple[tuple[tuple[int, str, int], ...], tuple[int, ...]]


class TreeCandidates:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snap = snapshot
        self.roots = sorted(snapshot.trees)
        self.sharing = [p for p, rp in snapshot.providers.items() if SHARES in rp.traits]

    def _pool(self, root_id: int) -> tuple[list[int], list[int]]:
        """The tree's own providers and the sharing providers associated with it."""
        own = self.snap.tree(root_id)
        tree_aggs: set[str] = set()
        for p in own:
            tree_aggs |= self.snap.providers[p].aggregates
        shared = [
            s for s in self.sharing
            if s not in own and self.snap.providers[s].aggregates & tree_aggs
        ]  # fmt: skip
        return own, shared

    def _group_options(
        self, group: RequestGroup, own: list[int], shared: list[int]
    ) -> list[_Option]:
        snap = self.snap
        in_tree_root: int | None = None
        if group.in_tree is not None:
            match = [p for p, rp in snap.providers.items() if rp.uuid == group.in_tree]
            if not match:
                return []
            in_tree_root = snap.root(match[0])

        def allowed(p: int) -> bool:
            rp = snap.providers[p]
            if in_tree_root is not None and snap.root(p) != in_tree_root:
                return False
            return _member_ok(rp.aggregates, group.member_of) or (
                not group.suffix and _member_ok(snap.providers[snap.root(p)].aggregates,
                                                group.member_of)
            )  # fmt: skip

        pool = own + shared
        if group.suffix:
            options: list[_Option] = []
            candidates = own if not group.resources else pool
            for p in candidates:
                rp = snap.providers[p]
                if not allowed(p) or not _traits_ok(rp.traits, group.traits):
                    continue
                if all(rp.fits(rc, n) for rc, n in group.resources.items()):
                    options.append((tuple((p, rc, n) for rc, n in group.resources.items()), (p,)))
            return options
        if not group.resources:
            return [((), ())]
        per_class = []
        for rc, n in group.resources.items():
            choices = [p for p in pool if allowed(p) and snap.providers[p].fits(rc, n)]
            if not choices:
                return []
            per_class.append([(p, rc, n) for p in choices])
        options = []
        for combo in itertools.product(*per_class):
            providers = tuple(sorted({p for p, _rc, _n in combo}))
            traits: frozenset[str] = frozenset().union(
                *(snap.providers[p].traits for p in providers)
            )
            if _traits_ok(traits, group.traits):
                options.append((tuple(combo), providers))
        return options

    def candidates(self, request: TreeRequest, limit: int | None = None) -> list[TreeCandidate]:
        """The candidates, in root order; with ``limit``, only the first ``limit`` of them."""
        out: list[TreeCandidate] = []
        seen: set[tuple[object, ...]] = set()
        for root_id in self.roots:
            root = self.snap.providers[root_id]
            if not _traits_ok(root.traits, request.root_traits):
                continue
            own, shared = self._pool(root_id)
            per_group = [self._group_options(g, own, shared) for g in request.groups]
            if any(not options for options in per_group):
                continue
            for combo in self._combinations(per_group):
                candidate = self._check(request, combo, set(own))
                if candidate is None:
                    continue
                key = (
                    tuple(sorted((p, tuple(sorted(r.items())))
                                 for p, r in candidate.allocations.items())),
                    tuple(sorted((s, tuple(sorted(m))) for s, m in candidate.mappings.items())),
                )  # fmt: skip
                if key not in seen:
                    seen.add(key)
                    out.append(candidate)
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    @staticmethod
    def _combinations(per_group: list[list[_Option]]) -> Iterator[tuple[_Option, ...]]:
        for count, combo in enumerate(itertools.product(*per_group)):
            if count >= MAX_COMBINATIONS:
                return
            yield combo

    def _check(
        self, request: TreeRequest, combo: tuple[_Option, ...], own: set[int]
    ) -> TreeCandidate | None:
        snap = self.snap
        if not any(p in own for option in combo for p, _rc, _n in option[0]) and any(
            option[0] for option in combo
        ):
            # Only sharing providers: that candidate belongs to the sharing provider's tree.
            return None
        if request.isolate:
            chosen = [
                option[1][0]
                for group, option in zip(request.groups, combo, strict=True)
                if group.suffix and option[1]
            ]
            if len(chosen) != len(set(chosen)):
                return None
        totals: dict[tuple[int, str], int] = {}
        for option in combo:
            for p, rc, n in option[0]:
                totals[(p, rc)] = totals.get((p, rc), 0) + n
        for (p, rc), n in totals.items():
            if n > snap.providers[p].free(rc):
                return None
        by_suffix = {
            group.suffix: option[1] for group, option in zip(request.groups, combo, strict=True)
        }
        for names in request.same_subtree:
            members = [p for name in names for p in by_suffix.get(name, ())]
            if members and not any(
                all(top in snap.ancestors_or_self(m) for m in members) for top in members
            ):
                return None
        allocations: dict[str, dict[str, int]] = {}
        for (p, rc), n in totals.items():
            allocations.setdefault(snap.providers[p].uuid, {})[rc] = n
        mappings = {
            suffix: sorted({snap.providers[p].uuid for p in providers})
            for suffix, providers in by_suffix.items()
            if providers
        }
        return TreeCandidate(allocations, mappings)
