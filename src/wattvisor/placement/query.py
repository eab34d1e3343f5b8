"""Parsing of Placement's query-string syntax (``resources=VCPU:1,MEMORY_MB:512``,
``required=A,!B``, ``required=in:C,D``) into request values, with Placement's 400 errors."""

from __future__ import annotations

import re
from collections.abc import Sequence

from wattvisor.placement.entities import TraitQuery
from wattvisor.placement.errors import CODE_QUERY_BAD_VALUE, BadRequest

_TRAIT_NAME = re.compile(r"^[A-Z0-9_]+$")


def parse_resources(value: str) -> dict[str, int]:
    """``VCPU:2,MEMORY_MB:1024`` → ``{"VCPU": 2, "MEMORY_MB": 1024}``."""
    out: dict[str, int] = {}
    for part in value.split(","):
        rc, sep, amount = part.partition(":")
        rc = rc.strip()
        try:
            number = int(amount)
        except ValueError:
            number = -1
        if not sep or not rc or number < 0:
            raise BadRequest(
                "Badly formed resources parameter. Expected resources query string "
                f"parameter in form: ?resources=VCPU:2,MEMORY_MB:1024. Got: {value}.",
                code=CODE_QUERY_BAD_VALUE,
            )
        if rc in out:
            raise BadRequest(
                f"Badly formed resources parameter: resource class {rc} appears twice in {value!r}",
                code=CODE_QUERY_BAD_VALUE,
            )
        if number < 1:
            raise BadRequest(
                f"Invalid resources parameter: amount for {rc} must be at least 1, got {number}.",
                code=CODE_QUERY_BAD_VALUE,
            )
        out[rc] = number
    return out


def parse_required(values: Sequence[str]) -> TraitQuery:
    """Each value is ``T1,!T2`` or ``in:T3,T4``; repeated values are ANDed (1.39)."""
    required: set[str] = set()
    forbidden: set[str] = set()
    any_of: list[frozenset[str]] = []
    for value in values:
        if value.startswith("in:"):
            names = [n.strip() for n in value[3:].split(",")]
            for name in names:
                if name.startswith("!") or not _TRAIT_NAME.match(name):
                    raise BadRequest(
                        f"Invalid query string parameters: 'required' in:{value[3:]!r} must "
                        "list trait names without '!' (forbidden traits cannot be any-of)",
                        code=CODE_QUERY_BAD_VALUE,
                    )
            group = frozenset(names)
            if len(group) == 1:
                required |= group
            elif group not in any_of:
                any_of.append(group)
            continue
        for raw in value.split(","):
            name = raw.strip()
            negative = name.startswith("!")
            bare = name[1:] if negative else name
            if not _TRAIT_NAME.match(bare):
                raise BadRequest(
                    f"Invalid query string parameters: Expected 'required' parameter value "
                    f"of the form: HW_CPU_X86_VMX,!CUSTOM_MAGIC or in:A,B. Got: {value}",
                    code=CODE_QUERY_BAD_VALUE,
                )
            (forbidden if negative else required).add(bare)
    both = sorted(required & forbidden)
    if both:
        raise BadRequest(
            "Conflicting required and forbidden traits found in the following traits "
            f"keys: {', '.join(both)}",
            code=CODE_QUERY_BAD_VALUE,
        )
    return TraitQuery(frozenset(required), frozenset(forbidden), tuple(any_of))
