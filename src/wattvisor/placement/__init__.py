"""Resource providers, inventories, traits, allocations and allocation candidates with
OpenStack Placement semantics (flat providers, one unnumbered request group)."""

from wattvisor.placement.entities import (
    CandidateRequest,
    ConsumerAllocations,
    Inventory,
    Provider,
    ProviderAllocation,
    ProviderInventories,
    ProviderSummary,
    ProviderTraits,
    ProviderUsages,
    ResourceSummary,
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
    PlacementError,
    ProviderInUse,
)
from wattvisor.placement.index import Check, Elimination, ProviderState
from wattvisor.placement.query import parse_required, parse_resources
from wattvisor.placement.service import (
    Candidate,
    CandidateResult,
    ConsumerAllocationUpdate,
    Placement,
)

__all__ = [
    "BadRequest",
    "Candidate",
    "CandidateRequest",
    "CandidateResult",
    "CapacityExceeded",
    "Check",
    "ConcurrentUpdate",
    "Conflict",
    "ConsumerAllocationUpdate",
    "ConsumerAllocations",
    "ConsumerConflict",
    "DuplicateName",
    "Elimination",
    "Inventory",
    "InventoryInUse",
    "NotFound",
    "Placement",
    "PlacementError",
    "Provider",
    "ProviderAllocation",
    "ProviderInUse",
    "ProviderInventories",
    "ProviderState",
    "ProviderSummary",
    "ProviderTraits",
    "ProviderUsages",
    "ResourceSummary",
    "TraitQuery",
    "parse_required",
    "parse_resources",
]
