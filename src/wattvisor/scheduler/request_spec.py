"""What one boot asks for: resources from the flavor, constraints from flavor extra specs
and image properties, with the reason for every trait so that a failed placement can say
which setting excluded which hosts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from wattvisor.placement.entities import CandidateRequest, TraitQuery
from wattvisor.scheduler.validation import InvalidSpec, Problem, grouped_specs


@dataclass(frozen=True, slots=True)
class Flavor:
    """A VM size. Memory in MiB, disks in GiB, as in Nova."""

    name: str
    vcpus: int
    memory_mb: int
    root_gb: int = 0
    ephemeral_gb: int = 0
    swap_mb: int = 0
    extra_specs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageMeta:
    """The properties of the image a VM boots from."""

    properties: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None


@dataclass(slots=True)
class RequestSpec:
    """A boot request on its way through the prefilters to placement.

    Prefilters add traits with ``require``/``forbid``; each records why, keyed by the
    trait (forbidden ones as ``!TRAIT``), for NoValidHost's explanation.
    """

    flavor: Flavor
    image: ImageMeta
    project_id: str
    user_id: str
    resources: dict[str, int]
    required: set[str] = field(default_factory=set)
    forbidden: set[str] = field(default_factory=set)
    reasons: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def require(self, trait: str, reason: str) -> None:
        if trait in self.forbidden:
            raise InvalidSpec(
                [f"{trait} is required by {reason} but forbidden by {self.reasons['!' + trait]}"]
            )
        self.required.add(trait)
        self.reasons.setdefault(trait, reason)

    def forbid(self, trait: str, reason: str) -> None:
        if trait in self.required:
            raise InvalidSpec(
                [f"{trait} is forbidden by {reason} but required by {self.reasons[trait]}"]
            )
        self.forbidden.add(trait)
        self.reasons.setdefault("!" + trait, reason)

    def candidate_request(self) -> CandidateRequest:
        return CandidateRequest(
            dict(self.resources),
            TraitQuery(frozenset(self.required), frozenset(self.forbidden)),
        )


def flavor_resources(flavor: Flavor) -> dict[str, int]:
    """Placement resources of a flavor: VCPU, MEMORY_MB and DISK_GB (root + ephemeral +
    swap rounded up to GiB), each replaced by a ``resources:<CLASS>=N`` extra spec when
    there is one (N=0 drops the class, as in Nova), plus the amounts of ``resources<N>:``
    extra specs. A wattvisor host is a single resource provider, so every numbered
    request group lands on the same host as the unnumbered one and the amounts add up.
    Zero amounts are left out, as Placement rejects them."""
    disk = flavor.root_gb + flavor.ephemeral_gb + math.ceil(flavor.swap_mb / 1024)
    resources = {"VCPU": flavor.vcpus, "MEMORY_MB": flavor.memory_mb, "DISK_GB": disk}
    numbered: dict[str, int] = {}
    problems: list[Problem | str] = []
    for spec in grouped_specs(flavor.extra_specs):
        if spec.kind != "resources":
            continue
        try:
            amount = int(spec.value.strip())
        except ValueError:
            amount = -1
        if amount < 0:
            problems.append(
                Problem("flavor extra spec", spec.key, spec.value, ("an integer >= 0",))
            )
        elif spec.group:
            numbered[spec.name] = numbered.get(spec.name, 0) + amount
        else:
            resources[spec.name] = amount
    if problems:
        raise InvalidSpec(problems)
    for rc, amount in numbered.items():
        resources[rc] = resources.get(rc, 0) + amount
    return {rc: amount for rc, amount in resources.items() if amount > 0}


def build_request_spec(
    flavor: Flavor, image: ImageMeta | None = None, *, project_id: str, user_id: str
) -> RequestSpec:
    """A RequestSpec before prefilters; run ``scheduler.prefilters.run_prefilters`` next."""
    return RequestSpec(
        flavor=flavor,
        image=image or ImageMeta(),
        project_id=project_id,
        user_id=user_id,
        resources=flavor_resources(flavor),
    )
