"""Query parameter parsing: filters, request groups and allocation candidates."""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from fastapi import Request

from wattvisor.api.placement.microversion import Microversion, _microversion
from wattvisor.placement import (
    BadRequest,
    TraitQuery,
    parse_required,
    parse_resources,
)
from wattvisor.placement.errors import CODE_QUERY_BAD_VALUE
from wattvisor.placement.names import MAX_NAME_LENGTH, shown_name
from wattvisor.placement.trees import (
    RequestGroup,
    Snapshot,
    TreeCandidate,
    TreeRequest,
)

# ------------------------------------------------------------------ query checks


_CANDIDATE_PARAMS = {"resources", "required", "limit", "root_required", "group_policy"}
# Query parameters of GET /resource_providers by the microversion that added them.
_PROVIDER_PARAMS = {"name": 0, "uuid": 0, "member_of": 3, "resources": 4, "in_tree": 14,
                    "required": 18}  # fmt: skip
_UUID_RE = re.compile(
    r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE
)


_CUSTOM_RE = re.compile(r"^CUSTOM_[A-Z0-9_]+$")


def _resource_class_name(name: Any) -> str:
    """A custom resource class name, checked as Placement's JSON schema checks it."""
    if not isinstance(name, str):
        raise BadRequest(f"JSON does not validate: {name!r} is not of type 'string'")
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(
            f"JSON does not validate: {shown_name(name)} is too long: {len(name)} characters, "
            f"at most {MAX_NAME_LENGTH}\n\n"
            "Failed validating 'maxLength' in schema['properties']['name']"
        )
    if not _CUSTOM_RE.match(name):
        raise BadRequest(
            f"JSON does not validate: {name!r} does not match '^CUSTOM_[A-Z0-9_]+$'\n\n"
            "Failed validating 'pattern' in schema['properties']['name']"
        )
    return name


def _member_of(values: list[str], version: Microversion) -> list[tuple[frozenset[str], bool]]:
    """``member_of`` values: ``in:A,B`` (any of), a single uuid, ``!`` forbids (1.32)."""
    if len(values) > 1 and not version.at_least(24):
        raise BadRequest(
            "Multiple member_of parameters are not supported in the specified microversion",
            code=CODE_QUERY_BAD_VALUE,
        )
    out: list[tuple[frozenset[str], bool]] = []
    for value in values:
        forbidden = value.startswith("!")
        if forbidden:
            if not version.at_least(32):
                raise BadRequest(
                    "Forbidden member_of parameters are not supported in the specified "
                    "microversion",
                    code=CODE_QUERY_BAD_VALUE,
                )
            value = value[1:]
        if value.startswith("in:"):
            if forbidden:
                raise BadRequest(
                    "Invalid query string parameters: Expected 'member_of' parameter to "
                    "contain valid UUID(s). Got: !in:" + value.removeprefix("in:"),
                    code=CODE_QUERY_BAD_VALUE,
                )
            value = value.removeprefix("in:")
        aggregates = [a.strip() for a in value.split(",")]
        if not aggregates or not all(_UUID_RE.match(a) for a in aggregates):
            raise BadRequest(
                "Invalid query string parameters: Expected 'member_of' parameter to contain "
                f"valid UUID(s). Got: {value}",
                code=CODE_QUERY_BAD_VALUE,
            )
        out.append((frozenset(str(uuidlib.UUID(a)) for a in aggregates), forbidden))
    return out


def _single(request: Request, key: str) -> str | None:
    values = request.query_params.getlist(key)
    if len(values) > 1:
        raise BadRequest(
            f"Query parameter {key!r} may be given only once, got {len(values)}",
            code="placement.query.duplicate_key",
        )
    return values[0] if values else None


def _check_params(request: Request, allowed: Mapping[str, int] | set[str]) -> None:
    if isinstance(allowed, Mapping):
        version = _microversion(request)
        allowed = {key for key, minor in allowed.items() if version.at_least(minor)}
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise BadRequest(
            "Invalid query string parameters: Additional properties are not allowed "
            f"({', '.join(repr(u) for u in unknown)} were unexpected)"
        )


def _trait_query(request: Request) -> TraitQuery:
    query = parse_required(request.query_params.getlist("required"))
    root = request.query_params.getlist("root_required")
    if root:
        # Every provider is a root here, so root traits are provider traits.
        query = query.merged(parse_required(root))
    return query


# ------------------------------------------------------------------ allocation candidates

_GROUP_KEY_RE = re.compile(r"^(resources|required|member_of|in_tree)(.*)$")
_SUFFIX_RE = re.compile(r"^([1-9][0-9]*|[a-zA-Z0-9_-]{1,64})$")


def _candidate_request(request: Request, version: Microversion) -> tuple[TreeRequest, int | None]:
    """``GET /allocation_candidates`` query parameters as a :class:`TreeRequest`."""
    params = request.query_params
    fixed = {"limit": 16, "group_policy": 25, "root_required": 35, "same_subtree": 36}
    grouped: dict[str, dict[str, list[str]]] = {}
    for key in params:
        if key in fixed and version.at_least(fixed[key]):
            continue
        match = _GROUP_KEY_RE.match(key)
        suffix = match.group(2) if match else ""
        if match is None:
            raise BadRequest(
                "Invalid query string parameters: Additional properties are not allowed "
                f"({key!r} was unexpected)"
            )
        if suffix and not _SUFFIX_RE.match(suffix):
            raise BadRequest(
                f"Invalid query string parameters: '{key}' does not match any of the regexes"
            )
        kind = match.group(1)
        if suffix and not version.at_least(33) and not suffix.isdigit():
            raise BadRequest(
                f"Invalid query string parameters: '{key}' does not match any of the regexes"
            )
        if suffix.startswith("0") and suffix.isdigit():
            raise BadRequest(
                f"Invalid query string parameters: '{key}' does not match any of the regexes"
            )
        since = {"resources": 10, "required": 17, "member_of": 21, "in_tree": 31}[kind]
        if suffix:
            since = max(since, 25 if suffix.isdigit() else 33)
        if not version.at_least(since):
            raise BadRequest(
                "Invalid query string parameters: Additional properties are not allowed "
                f"({key!r} was unexpected)"
            )
        grouped.setdefault(suffix, {})[kind] = params.getlist(key)
    if not version.at_least(35):
        for kind in ("required", "member_of"):
            orphans = sorted(
                f"{kind}{suffix}"
                for suffix, values in grouped.items()
                if kind in values and "resources" not in values
            )
            if orphans:
                noun = "traits" if kind == "required" else kind
                raise BadRequest(
                    f"All {noun} parameters must be associated with resources. Found the "
                    f"following orphaned {noun} keys: {', '.join(orphans)}",
                    code=CODE_QUERY_BAD_VALUE,
                )
    if not any("resources" in values for values in grouped.values()) and not (
        version.at_least(35) and grouped
    ):
        raise BadRequest(
            "At least one request group (`resources` or `resources{$S}`) is required."
            if version.at_least(25)
            else "Invalid query string parameters: 'resources' is a required property",
            code="placement.query.missing_value",
        )
    groups = []
    for suffix, values in grouped.items():
        raw_resources = values.get("resources", [])
        if len(raw_resources) > 1:
            raise BadRequest(
                f"Query parameter 'resources{suffix}' may be given only once",
                code="placement.query.duplicate_key",
            )
        resources = parse_resources(raw_resources[0]) if raw_resources else {}
        if suffix and not resources and not version.at_least(35):
            raise BadRequest(
                "All traits parameters must be associated with resources. Found the following "
                f"suffixes without resources: {suffix}",
                code=CODE_QUERY_BAD_VALUE,
            )
        in_tree = values.get("in_tree", [])
        if in_tree and not _UUID_RE.match(in_tree[0]):
            raise BadRequest(
                f"Invalid query string parameters: Expected 'in_tree' parameter to be a format "
                f"of uuid. Got: {in_tree[0]}",
                code=CODE_QUERY_BAD_VALUE,
            )
        groups.append(
            RequestGroup(
                suffix,
                resources,
                parse_required(values.get("required", [])),
                tuple(_member_of(values.get("member_of", []), version)),
                str(uuidlib.UUID(in_tree[0])) if in_tree else None,
            )
        )
    if "" not in grouped and not [g for g in groups if g.suffix]:
        raise BadRequest(
            "Invalid query string parameters: 'resources' is a required property",
            code="placement.query.missing_value",
        )
    if "" in grouped and not grouped[""].get("resources") and not version.at_least(35):
        raise BadRequest(
            "Invalid query string parameters: 'resources' is a required property",
            code="placement.query.missing_value",
        )
    suffixed = [g for g in groups if g.suffix]
    group_policy = _single(request, "group_policy") if version.at_least(25) else None
    if group_policy is not None and group_policy not in ("none", "isolate"):
        raise BadRequest(
            f"Invalid query string parameters: '{group_policy}' is not one of ['none', 'isolate']",
            code=CODE_QUERY_BAD_VALUE,
        )
    if len(suffixed) > 1 and group_policy is None:
        raise BadRequest(
            'The "group_policy" parameter is required when specifying more than one '
            '"resources{N}" parameter.',
            code="placement.query.missing_value",
        )
    limit: int | None = None
    limit_raw = _single(request, "limit") if version.at_least(16) else None
    if limit_raw is not None:
        if not limit_raw.isdigit() or int(limit_raw) < 1:
            raise BadRequest(
                "Invalid query string parameters: Failed validating 'pattern' in "
                f"schema['properties']['limit']: limit must be a positive integer, got "
                f"{limit_raw!r}",
                code=CODE_QUERY_BAD_VALUE,
            )
        limit = int(limit_raw)
    same_subtree = []
    if version.at_least(36):
        known = {g.suffix for g in suffixed}
        for value in params.getlist("same_subtree"):
            names = frozenset(n.strip() for n in value.split(","))
            unknown = sorted(names - known)
            if unknown:
                raise BadRequest(
                    "Real suffixes should be specified in same_subtree: "
                    f"{unknown} not found in {sorted(known)}.",
                    code=CODE_QUERY_BAD_VALUE,
                )
            same_subtree.append(names)
    root_traits = TraitQuery()
    if version.at_least(35):
        root_traits = parse_required(params.getlist("root_required"))
    return (
        TreeRequest(
            tuple(groups),
            isolate=group_policy == "isolate",
            same_subtree=tuple(same_subtree),
            root_traits=root_traits,
        ),
        limit,
    )


def _candidates_body(
    snapshot: Snapshot,
    request: TreeRequest,
    found: list[TreeCandidate],
    version: Microversion,
) -> dict[str, Any]:
    by_uuid = {rp.uuid: rp for rp in snapshot.providers.values()}
    if version.at_least(12):
        requests: list[Any] = []
        for candidate in found:
            entry: dict[str, Any] = {
                "allocations": {
                    rp: {"resources": resources} for rp, resources in candidate.allocations.items()
                }
            }
            if version.at_least(34):
                entry["mappings"] = candidate.mappings
            requests.append(entry)
    else:
        requests = [
            {
                "allocations": [
                    {"resource_provider": {"uuid": rp}, "resources": resources}
                    for rp, resources in candidate.allocations.items()
                ]
            }
            for candidate in found
        ]
    involved = {rp for candidate in found for rp in candidate.allocations}
    if version.at_least(29):
        roots = {snapshot.root(by_uuid[rp].id) for rp in involved}
        involved |= {snapshot.providers[p].uuid for root in roots for p in snapshot.tree(root)}
    requested = {rc for group in request.groups for rc in group.resources}
    summaries: dict[str, Any] = {}
    for rp_uuid in sorted(involved):
        rp = by_uuid[rp_uuid]
        summary: dict[str, Any] = {
            "resources": {
                rc: {"capacity": int(inv.capacity), "used": rp.used.get(rc, 0)}
                for rc, inv in rp.inventories.items()
                if version.at_least(27) or rc in requested
            }
        }
        if version.at_least(17):
            summary["traits"] = sorted(rp.traits)
        if version.at_least(29):
            parent = rp.parent_id
            summary["parent_provider_uuid"] = (
                None if parent is None else snapshot.providers[parent].uuid
            )
            summary["root_provider_uuid"] = snapshot.providers[snapshot.root(rp.id)].uuid
        summaries[rp_uuid] = summary
    return {"allocation_requests": requests, "provider_summaries": summaries}
