"""Values that cross the placement service boundary (never ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_INT = 2147483647


@dataclass(frozen=True, slots=True)
class Provider:
    """A resource provider: for wattvisor, one compute host."""

    uuid: str
    name: str
    generation: int
    parent_provider_uuid: str | None = None
    root_provider_uuid: str | None = None
    """The top of the provider's tree (itself for a root); None when not looked up."""


@dataclass(frozen=True, slots=True)
class Inventory:
    """How much of one resource class a provider has, and how it may be allocated.

    Capacity is ``(total - reserved) * allocation_ratio``; a single allocation must lie in
    ``[min_unit, max_unit]`` and be a multiple of ``step_size`` (OpenStack Placement rules).
    """

    total: int
    reserved: int = 0
    min_unit: int = 1
    max_unit: int = MAX_INT
    step_size: int = 1
    allocation_ratio: float = 1.0

    @property
    def capacity(self) -> float:
        return (self.total - self.reserved) * self.allocation_ratio

    def admits(self, used: int, amount: int) -> bool:
        """Whether ``amount`` more can be allocated when ``used`` is allocated already."""
        return (
            self.min_unit <= amount <= self.max_unit
            and amount % self.step_size == 0
            and used + amount <= self.capacity
        )


@dataclass(frozen=True, slots=True)
class ProviderInventories:
    generation: int
    inventories: dict[str, Inventory]


@dataclass(frozen=True, slots=True)
class ProviderTraits:
    generation: int
    traits: frozenset[str]


@dataclass(frozen=True, slots=True)
class ProviderUsages:
    generation: int
    usages: dict[str, int]


@dataclass(frozen=True, slots=True)
class ProviderAllocation:
    """One consumer's allocation against one provider."""

    provider_uuid: str
    provider_generation: int
    resources: dict[str, int]


@dataclass(frozen=True, slots=True)
class ConsumerAllocations:
    """Everything one consumer holds; ``generation`` is ``None`` when it holds nothing."""

    consumer_uuid: str
    allocations: tuple[ProviderAllocation, ...] = ()
    generation: int | None = None
    project_id: str | None = None
    user_id: str | None = None
    consumer_type: str | None = None


@dataclass(frozen=True, slots=True)
class TraitQuery:
    """Trait constraints of a request: all of ``required``, none of ``forbidden``, and at
    least one trait of each set in ``any_of``."""

    required: frozenset[str] = frozenset()
    forbidden: frozenset[str] = frozenset()
    any_of: tuple[frozenset[str], ...] = ()

    def merged(self, other: TraitQuery) -> TraitQuery:
        return TraitQuery(
            self.required | other.required,
            self.forbidden | other.forbidden,
            self.any_of + tuple(g for g in other.any_of if g not in self.any_of),
        )

    def names(self) -> frozenset[str]:
        out = set(self.required | self.forbidden)
        for group in self.any_of:
            out |= group
        return frozenset(out)


@dataclass(frozen=True, slots=True)
class CandidateRequest:
    """One unnumbered request group of ``GET /allocation_candidates``."""

    resources: dict[str, int]
    traits: TraitQuery = field(default_factory=TraitQuery)


@dataclass(frozen=True, slots=True)
class ResourceSummary:
    capacity: int
    used: int


@dataclass(frozen=True, slots=True)
class ProviderSummary:
    uuid: str
    resources: dict[str, ResourceSummary]
    traits: frozenset[str]
