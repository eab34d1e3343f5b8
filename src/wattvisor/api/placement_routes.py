"""The Placement-compatible HTTP API (OpenStack Placement 1.39), mounted at ``/placement``.

Paths, bodies, status codes and error codes follow Placement's API reference so that
tools written for Placement work unchanged, checked by Placement's own gabbi tests
(tests/placement_gabbi). Each feature answers from the microversion Placement added it
in: provider trees and aggregates, sharing providers, request groups with
``group_policy``, ``same_subtree`` and ``root_required``, mappings, consumer types and
the reshaper. Allocation candidates are computed over a snapshot of the provider trees
(:mod:`wattvisor.placement.trees`); the in-process scheduler keeps its flat index.
"""

from __future__ import annotations

import dataclasses
import re
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response, params
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wattvisor.placement import (
    BadRequest,
    ConcurrentUpdate,
    Conflict,
    Inventory,
    NotFound,
    Placement,
    PlacementError,
    Provider,
    TraitQuery,
    parse_required,
    parse_resources,
)
from wattvisor.placement.entities import MAX_INT
from wattvisor.placement.errors import CODE_QUERY_BAD_VALUE
from wattvisor.placement.names import MAX_NAME_LENGTH, shown_name
from wattvisor.placement.service import ConsumerAllocationUpdate
from wattvisor.placement.trees import (
    RequestGroup,
    Snapshot,
    TreeCandidate,
    TreeCandidates,
    TreeRequest,
)

PREFIX = "/placement"
MAX_VERSION = (1, 39)
MIN_VERSION = (1, 0)
VERSION_HEADER = "OpenStack-API-Version"
_VERSION_RE = re.compile(r"^placement\s+(latest|\d+\.\d+)$", re.IGNORECASE)
_CONSUMER_TYPE_RE = re.compile(r"^[A-Z0-9_]+$")
_RESOURCE_CLASS_RE = re.compile(r"^[A-Z0-9_]+$")
DEFAULT_CONSUMER_TYPE = "INSTANCE"


@dataclass(frozen=True, slots=True)
class Microversion:
    major: int
    minor: int

    def at_least(self, minor: int) -> bool:
        return (self.major, self.minor) >= (1, minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


class VersionNotAcceptable(PlacementError):
    status = 406


def _microversion(request: Request) -> Microversion:
    raw = request.headers.get(VERSION_HEADER)
    if raw is None:
        return Microversion(*MIN_VERSION)
    match = _VERSION_RE.match(raw.strip())
    if match is None:
        # Headers for other services are ignored, as Placement does.
        if not raw.strip().lower().startswith("placement"):
            return Microversion(*MIN_VERSION)
        raise BadRequest(f"invalid version string: {raw}")
    value = match.group(1).lower()
    if value == "latest":
        return Microversion(*MAX_VERSION)
    major, minor = (int(p) for p in value.split("."))
    if not MIN_VERSION <= (major, minor) <= MAX_VERSION:
        raise VersionNotAcceptable(
            f"Unacceptable version header: {value}; this service offers "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} to {MAX_VERSION[0]}.{MAX_VERSION[1]}"
        )
    return Microversion(major, minor)


def _error_response(request: Request, status: int, detail: str, code: str) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) or _new_request_id()
    return JSONResponse(
        status_code=status,
        content={
            "errors": [
                {
                    "status": status,
                    "title": HTTPStatus(status).phrase,
                    "detail": detail,
                    "code": code,
                    "request_id": request_id,
                }
            ]
        },
    )


def placement_error(request: Request, status: int, detail: str, code: str) -> JSONResponse:
    """An error in Placement's shape, for refusals made before a Placement route runs."""
    return _error_response(request, status, detail, code)


def _new_request_id() -> str:
    return f"req-{uuidlib.uuid4()}"


# ------------------------------------------------------------------ body checks


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"JSON does not validate: {where} must be an object, got {value!r}")
    return value


def _only(body: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        verb = "was" if len(extra) == 1 else "were"
        raise BadRequest(
            "JSON does not validate: Additional properties are not allowed "
            f"({', '.join(repr(e) for e in extra)} {verb} unexpected) in {where}; allowed: "
            f"{', '.join(sorted(allowed))}"
        )


def _need(body: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in body:
        raise BadRequest(
            f"JSON does not validate: '{key}' is a required property of {where}\n\n"
            "Failed validating 'required' in schema"
        )
    return body[key]


def _int(value: Any, where: str, minimum: int, maximum: int = MAX_INT) -> int:
    """``value`` as an integer in [minimum, maximum]; errors read like Placement's
    JSON-schema ones, naming the property (the last part of ``where``)."""
    field = where.rsplit(": ", 1)[-1]
    if not isinstance(value, int) or isinstance(value, bool):
        problem, rule = f"{value!r} is not of type 'integer'", "type"
    elif value < minimum:
        problem, rule = f"{value} is less than the minimum of {minimum}", "minimum"
    elif value > maximum:
        problem, rule = f"{value} is greater than the maximum of {maximum}", "maximum"
    else:
        return value
    raise BadRequest(
        f"JSON does not validate: {problem} ({where})\n\n"
        f"Failed validating '{rule}' in schema['properties']['{field}']"
    )


def _uuid(value: Any, where: str) -> str:
    try:
        return str(uuidlib.UUID(str(value)))
    except ValueError as exc:
        raise BadRequest(f"JSON does not validate: {where} is not a uuid: {value!r}") from exc


async def _json(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        raise PlacementUnsupportedMedia(
            f"The media type {content_type or None} is not supported, use application/json"
        )
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest(f"Malformed JSON: {exc}") from exc
    return _obj(body, "the request body")


class PlacementUnsupportedMedia(PlacementError):
    status = 415


# ------------------------------------------------------------------ serializers


def _provider_body(provider: Provider, version: Microversion) -> dict[str, Any]:
    base = f"{PREFIX}/resource_providers/{provider.uuid}"
    links = [
        {"rel": "self", "href": base},
        {"rel": "inventories", "href": f"{base}/inventories"},
        {"rel": "usages", "href": f"{base}/usages"},
    ]
    if version.at_least(1):
        links.append({"rel": "aggregates", "href": f"{base}/aggregates"})
    if version.at_least(6):
        links.append({"rel": "traits", "href": f"{base}/traits"})
    if version.at_least(11):
        links.append({"rel": "allocations", "href": f"{base}/allocations"})
    body: dict[str, Any] = {
        "uuid": provider.uuid,
        "name": provider.name,
        "generation": provider.generation,
        "links": links,
    }
    if version.at_least(14):
        body["parent_provider_uuid"] = provider.parent_provider_uuid
        body["root_provider_uuid"] = provider.root_provider_uuid or provider.uuid
    return body


def _inventory_body(inventory: Inventory) -> dict[str, Any]:
    return {
        "allocation_ratio": inventory.allocation_ratio,
        "max_unit": inventory.max_unit,
        "min_unit": inventory.min_unit,
        "reserved": inventory.reserved,
        "step_size": inventory.step_size,
        "total": inventory.total,
    }


MAX_ALLOCATION_RATIO = 3.40282e38
_INVENTORY_FIELDS = {"total", "reserved", "min_unit", "max_unit", "step_size", "allocation_ratio"}


def _parse_inventory(rc: str, raw: Any) -> Inventory:
    where = f"inventory of {rc}"
    body = _obj(raw, where)
    _only(body, _INVENTORY_FIELDS, where)
    ratio = body.get("allocation_ratio", 1.0)
    if not isinstance(ratio, int | float) or isinstance(ratio, bool):
        raise BadRequest(
            f"JSON does not validate: {where}: allocation_ratio must be a number, got {ratio!r}"
        )
    if ratio > MAX_ALLOCATION_RATIO:
        raise BadRequest(
            f"JSON does not validate: {ratio} is greater than the maximum of "
            f"{MAX_ALLOCATION_RATIO} ({where})\n\n"
            "Failed validating 'maximum' in schema['properties']['allocation_ratio']"
        )
    return Inventory(
        total=_int(_need(body, "total", where), f"{where}: total", 1),
        reserved=_int(body.get("reserved", 0), f"{where}: reserved", 0),
        min_unit=_int(body.get("min_unit", 1), f"{where}: min_unit", 1),
        max_unit=_int(body.get("max_unit", MAX_INT), f"{where}: max_unit", 1),
        step_size=_int(body.get("step_size", 1), f"{where}: step_size", 1),
        allocation_ratio=float(ratio),
    )


INCOMPLETE_CONSUMER_ID = "00000000-0000-0000-0000-000000000000"
"""Project and user of allocations written before 1.8, as Placement records them."""


def _allocations_by_provider(raw: Any, version: Microversion) -> dict[str, dict[str, int]]:
    """The allocations of one consumer, in the list form before 1.12 or the dict form."""
    if not version.at_least(12):
        if not isinstance(raw, list):
            raise BadRequest(f"JSON does not validate: {raw!r} is not of type 'array'")
        if not raw:
            raise BadRequest(
                "JSON does not validate: [] is too short\n\n"
                "Failed validating 'minItems' in schema['properties']['allocations']"
            )
        entries: dict[str, Any] = {}
        for item in raw:
            item = _obj(item, "an allocation")
            for key in ("resource_provider", "resources"):
                if key not in item:
                    raise BadRequest(
                        f"JSON does not validate: '{key}' is a required property\n\n"
                        "Failed validating 'required' in schema['properties']['allocations']"
                    )
            provider = _obj(item["resource_provider"], "resource_provider")
            entries[str(_need(provider, "uuid", "resource_provider"))] = {
                "resources": item["resources"]
            }
        raw = entries
    raw = _obj(raw, "allocations")
    allocations: dict[str, dict[str, int]] = {}
    for rp_uuid, entry in raw.items():
        entry = _obj(entry, f"allocation for {rp_uuid}")
        _only(entry, {"resources", "generation"}, f"allocation for {rp_uuid}")
        resources = _obj(_need(entry, "resources", f"allocation for {rp_uuid}"), "resources")
        if not resources:
            raise BadRequest(
                f"JSON does not validate: resources of {rp_uuid} are empty\n\n"
                "Failed validating 'minProperties' in schema['properties']['resources']"
            )
        for rc in resources:
            if not _RESOURCE_CLASS_RE.match(rc):
                raise BadRequest(
                    f"JSON does not validate: {rc!r} does not match '^[A-Z0-9_]+$'\n\n"
                    "Failed validating 'pattern' in schema['properties']['resources']"
                )
        allocations[_uuid(rp_uuid, "resource provider uuid")] = {
            rc: _int(amount, f"allocation of {rc} on {rp_uuid}: {rc}", 1)
            for rc, amount in resources.items()
        }
    return allocations


def _consumer_update(
    consumer_uuid: str, body: dict[str, Any], version: Microversion
) -> ConsumerAllocationUpdate:
    """One consumer's allocations body (PUT /allocations/{uuid}, or an entry of POST).

    Before 1.28 the consumer generation is not part of the body; the caller fills in
    the current one (``consumer_generation`` is then -1).
    """
    try:
        consumer_uuid = str(uuidlib.UUID(consumer_uuid))
    except ValueError as exc:
        raise BadRequest(f"Malformed consumer_uuid: {consumer_uuid}") from exc
    where = f"the allocations of {consumer_uuid}"
    allowed = {"allocations"}
    if version.at_least(8):
        allowed |= {"project_id", "user_id"}
    if version.at_least(12):
        allowed |= {"project_id", "user_id"}
    if version.at_least(28):
        allowed.add("consumer_generation")
    if version.at_least(34):
        allowed.add("mappings")
    if version.at_least(38):
        allowed.add("consumer_type")
    if not version.at_least(8):
        allowed |= {"project_id", "user_id"}  # accepted, optional
    _only(body, allowed, where)
    allocations = _allocations_by_provider(_need(body, "allocations", where), version)
    if version.at_least(8):
        project_id = _need(body, "project_id", where)
        user_id = _need(body, "user_id", where)
    else:
        project_id = body.get("project_id", INCOMPLETE_CONSUMER_ID)
        user_id = body.get("user_id", INCOMPLETE_CONSUMER_ID)
    generation: int | None = -1
    if version.at_least(28):
        generation = _need(body, "consumer_generation", where)
        if generation is not None:
            generation = _int(generation, "consumer_generation", 0)
    if version.at_least(38):
        consumer_type = _need(body, "consumer_type", where)
    else:
        consumer_type = DEFAULT_CONSUMER_TYPE
    for key, value in (("project_id", project_id), ("user_id", user_id)):
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LENGTH:
            shown = shown_name(value) if isinstance(value, str) else repr(value)
            raise BadRequest(
                f"JSON does not validate: {key} must be a string of 1-{MAX_NAME_LENGTH} "
                f"characters, got {shown}"
            )
    if (
        not isinstance(consumer_type, str)
        or len(consumer_type) > MAX_NAME_LENGTH
        or not _CONSUMER_TYPE_RE.match(consumer_type)
    ):
        shown = shown_name(consumer_type) if isinstance(consumer_type, str) else repr(consumer_type)
        raise BadRequest(
            f"JSON does not validate: {shown} does not match '^[A-Z0-9_]+$' (consumer_type, "
            f"at most {MAX_NAME_LENGTH} characters)"
        )
    return ConsumerAllocationUpdate(
        consumer_uuid,
        allocations,
        project_id=project_id,
        user_id=user_id,
        consumer_generation=generation,
        consumer_type=consumer_type,
    )


def _with_current_generation(
    placement: Placement, update_: ConsumerAllocationUpdate
) -> ConsumerAllocationUpdate:
    """Before 1.28 a write does not name the consumer generation: take the current one."""
    if update_.consumer_generation != -1:
        return update_
    held = placement.get_allocations(update_.consumer_uuid)
    return dataclasses.replace(update_, consumer_generation=held.generation)


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
        involved |= {rp.uuid for rp in snapshot.providers.values() if snapshot.root(rp.id) in roots}
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


# ------------------------------------------------------------------ router


def versions_router() -> APIRouter:
    """Placement's version document: public, as clients read it before they authenticate."""
    router = APIRouter(prefix=PREFIX, tags=["placement"])

    @router.get("/", summary="Placement API versions")
    async def versions() -> dict[str, Any]:
        return {
            "versions": [
                {
                    "id": "v1.0",
                    "max_version": f"{MAX_VERSION[0]}.{MAX_VERSION[1]}",
                    "min_version": f"{MIN_VERSION[0]}.{MIN_VERSION[1]}",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": ""}],
                }
            ]
        }

    return router


def build_router(placement: Placement, dependencies: Sequence[params.Depends] = ()) -> APIRouter:
    """All Placement routes over ``placement``, to be mounted at ``PREFIX``."""
    router = APIRouter(prefix=PREFIX, tags=["placement"], dependencies=list(dependencies))

    async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(function, *args, **kwargs)

    @router.get("/resource_providers", summary="List resource providers")
    async def list_providers(request: Request) -> dict[str, Any]:
        version = _microversion(request)
        _check_params(request, _PROVIDER_PARAMS)
        resources_raw = _single(request, "resources")
        uuid = _single(request, "uuid")
        if uuid is not None and not _UUID_RE.match(uuid):
            raise BadRequest(f"Invalid query string parameters: Invalid uuid value: {uuid}")
        in_tree = _single(request, "in_tree")
        if in_tree is not None and not _UUID_RE.match(in_tree):
            raise BadRequest(f"Invalid query string parameters: Invalid uuid value: {in_tree}")
        providers = await call(
            placement.list_providers,
            name=_single(request, "name"),
            uuid=uuid,
            resources=parse_resources(resources_raw) if resources_raw else None,
            traits=_trait_query(request) if request.query_params.getlist("required") else None,
            in_tree=in_tree,
            member_of=_member_of(request.query_params.getlist("member_of"), version),
        )
        return {"resource_providers": [_provider_body(p, version) for p in providers]}

    @router.post("/resource_providers", summary="Create resource provider")
    async def create_provider(request: Request) -> Response:
        version = _microversion(request)
        body = await _json(request)
        allowed = {"name", "uuid", "parent_provider_uuid"} if version.at_least(14) else {
            "name", "uuid"}  # fmt: skip
        _only(body, allowed, "the resource provider")
        name = _need(body, "name", "the resource provider")
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise BadRequest(f"JSON does not validate: name must be 1-200 characters: {name!r}")
        parent = body.get("parent_provider_uuid")
        if parent is not None:
            parent = _uuid(parent, "parent_provider_uuid")
        uuid = _uuid(body["uuid"], "uuid") if body.get("uuid") is not None else None
        provider = await call(placement.create_provider, name, uuid, parent)
        location = {"Location": f"{PREFIX}/resource_providers/{provider.uuid}"}
        if version.at_least(20):
            return JSONResponse(_provider_body(provider, version), headers=location)
        return Response(status_code=201, headers=location)

    @router.get("/resource_providers/{uuid}", summary="Show resource provider")
    async def show_provider(uuid: str, request: Request) -> dict[str, Any]:
        return _provider_body(await call(placement.get_provider, uuid), _microversion(request))

    @router.put("/resource_providers/{uuid}", summary="Update resource provider")
    async def update_provider(uuid: str, request: Request) -> dict[str, Any]:
        version = _microversion(request)
        body = await _json(request)
        allowed = {"name", "parent_provider_uuid"} if version.at_least(14) else {"name"}
        _only(body, allowed, "the resource provider")
        name = _need(body, "name", "the resource provider")
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise BadRequest(f"JSON does not validate: name must be 1-200 characters: {name!r}")
        current = await call(placement.get_provider, uuid)
        parent = body.get("parent_provider_uuid", current.parent_provider_uuid)
        if parent is not None:
            parent = _uuid(parent, "parent_provider_uuid")
        provider = await call(
            placement.update_provider, uuid, name, parent, may_reparent=version.at_least(37)
        )
        return _provider_body(provider, version)

    @router.get("/resource_providers/{uuid}/aggregates", summary="List aggregates")
    async def get_aggregates(uuid: str, request: Request) -> dict[str, Any]:
        generation, aggregates = await call(placement.get_aggregates, uuid)
        body: dict[str, Any] = {"aggregates": aggregates}
        if _microversion(request).at_least(19):
            body["resource_provider_generation"] = generation
        return body

    @router.put("/resource_providers/{uuid}/aggregates", summary="Replace aggregates")
    async def put_aggregates(uuid: str, request: Request) -> dict[str, Any]:
        version = _microversion(request)
        await call(placement.get_provider, uuid)
        try:
            raw = await request.json()
        except ValueError as exc:
            raise BadRequest(f"Malformed JSON: {exc}") from exc
        generation: int | None = None
        if version.at_least(19):
            body = _obj(raw, "the aggregates")
            _only(body, {"aggregates", "resource_provider_generation"}, "the aggregates")
            raw = _need(body, "aggregates", "the aggregates")
            generation = _int(
                _need(body, "resource_provider_generation", "the aggregates"),
                "resource_provider_generation",
                0,
            )
        if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
            raise BadRequest(f"JSON does not validate: {raw!r} is not of type 'array'")
        for aggregate in raw:
            if not _UUID_RE.match(aggregate):
                raise BadRequest(f"JSON does not validate: {aggregate!r} is not a 'uuid'")
        if len(set(raw)) != len(raw):
            raise BadRequest(f"JSON does not validate: {raw!r} has non-unique elements")
        new_generation, _stored = await call(placement.set_aggregates, uuid, raw, generation)
        out: dict[str, Any] = {"aggregates": [str(uuidlib.UUID(a)) for a in raw]}
        if version.at_least(19):
            out["resource_provider_generation"] = new_generation
        return out

    @router.delete("/resource_providers/{uuid}", status_code=204, summary="Delete provider")
    async def delete_provider(uuid: str) -> Response:
        await call(placement.delete_provider, uuid)
        return Response(status_code=204)

    @router.get("/resource_providers/{uuid}/inventories", summary="List inventories")
    async def get_inventories(uuid: str) -> dict[str, Any]:
        result = await call(placement.get_inventories, uuid)
        return {
            "inventories": {rc: _inventory_body(i) for rc, i in result.inventories.items()},
            "resource_provider_generation": result.generation,
        }

    @router.put("/resource_providers/{uuid}/inventories", summary="Replace inventories")
    async def put_inventories(uuid: str, request: Request) -> dict[str, Any]:
        body = await _json(request)
        _only(body, {"inventories", "resource_provider_generation"}, "the inventories")
        generation = _int(
            _need(body, "resource_provider_generation", "the inventories"),
            "resource_provider_generation",
            0,
        )
        raw = _obj(_need(body, "inventories", "the inventories"), "inventories")
        inventories = {rc: _parse_inventory(rc, inv) for rc, inv in raw.items()}
        result = await call(placement.set_inventories, uuid, generation, inventories)
        return {
            "inventories": {rc: _inventory_body(i) for rc, i in result.inventories.items()},
            "resource_provider_generation": result.generation,
        }

    @router.post(
        "/resource_providers/{uuid}/inventories", status_code=201, summary="Add an inventory"
    )
    async def post_inventory(uuid: str, request: Request) -> JSONResponse:
        body = await _json(request)
        resource_class = _need(body, "resource_class", "the inventory")
        if not isinstance(resource_class, str):
            raise BadRequest(f"JSON does not validate: {resource_class!r} is not of type 'string'")
        inventory = _parse_inventory(
            resource_class, {k: v for k, v in body.items() if k != "resource_class"}
        )
        current = await call(placement.get_inventories, uuid)
        if resource_class not in await call(placement.list_resource_classes):
            raise BadRequest(f"No such resource class {resource_class}")
        if resource_class in current.inventories:
            raise Conflict(
                f"Update conflict: inventory for {resource_class} on resource provider {uuid} "
                "already exists"
            )
        wanted = {**current.inventories, resource_class: inventory}
        try:
            result = await call(placement.set_inventories, uuid, current.generation, wanted)
        except BadRequest as exc:
            raise BadRequest(
                exc.detail.replace("Unable to update inventory", "Unable to create inventory"),
                code=exc.code,
            ) from exc
        return JSONResponse(
            {
                **_inventory_body(result.inventories[resource_class]),
                "resource_provider_generation": result.generation,
            },
            status_code=201,
            headers={
                "Location": f"{PREFIX}/resource_providers/{uuid}/inventories/{resource_class}"
            },
        )

    @router.get("/resource_providers/{uuid}/inventories/{resource_class}", summary="Show inventory")
    async def get_inventory(uuid: str, resource_class: str) -> dict[str, Any]:
        result = await call(placement.get_inventories, uuid)
        inventory = result.inventories.get(resource_class)
        if inventory is None:
            raise NotFound(f"No inventory of class {resource_class} for {uuid}")
        return {
            **_inventory_body(inventory),
            "resource_provider_generation": result.generation,
        }

    @router.put(
        "/resource_providers/{uuid}/inventories/{resource_class}", summary="Update inventory"
    )
    async def put_inventory(uuid: str, resource_class: str, request: Request) -> dict[str, Any]:
        body = await _json(request)
        generation = _int(
            _need(body, "resource_provider_generation", "the inventory"),
            "resource_provider_generation",
            0,
        )
        inventory = _parse_inventory(
            resource_class, {k: v for k, v in body.items() if k != "resource_provider_generation"}
        )
        current = await call(placement.get_inventories, uuid)
        if resource_class not in current.inventories:
            raise BadRequest(
                f"No inventory record with resource class {resource_class} for resource "
                f"provider {uuid}; create it with POST /resource_providers/{uuid}/inventories"
            )
        wanted = {**current.inventories, resource_class: inventory}
        result = await call(placement.set_inventories, uuid, generation, wanted)
        return {
            **_inventory_body(result.inventories[resource_class]),
            "resource_provider_generation": result.generation,
        }

    @router.delete(
        "/resource_providers/{uuid}/inventories/{resource_class}", summary="Delete inventory"
    )
    async def delete_inventory(uuid: str, resource_class: str) -> Response:
        current = await call(placement.get_inventories, uuid)
        if resource_class not in current.inventories:
            raise NotFound(f"No inventory of class {resource_class} found for delete")
        wanted = {rc: i for rc, i in current.inventories.items() if rc != resource_class}
        await call(placement.set_inventories, uuid, current.generation, wanted)
        return Response(status_code=204)

    @router.get("/resource_providers/{uuid}/allocations", summary="List provider allocations")
    async def get_provider_allocations(uuid: str) -> dict[str, Any]:
        generation, held = await call(placement.get_provider_allocations, uuid)
        return {
            "allocations": {
                c.consumer_uuid: {
                    "resources": dict(c.allocations[0].resources),
                    "consumer_generation": c.generation,
                }
                for c in held
            },
            "resource_provider_generation": generation,
        }

    @router.delete("/resource_providers/{uuid}/inventories", summary="Delete inventories")
    async def delete_inventories(uuid: str) -> Response:
        current = await call(placement.get_inventories, uuid)
        await call(placement.set_inventories, uuid, current.generation, {})
        return Response(status_code=204)

    @router.get("/resource_providers/{uuid}/traits", summary="List provider traits")
    async def get_provider_traits(uuid: str) -> dict[str, Any]:
        result = await call(placement.get_provider_traits, uuid)
        return {
            "traits": sorted(result.traits),
            "resource_provider_generation": result.generation,
        }

    @router.put("/resource_providers/{uuid}/traits", summary="Replace provider traits")
    async def put_provider_traits(uuid: str, request: Request) -> dict[str, Any]:
        body = await _json(request)
        _only(body, {"traits", "resource_provider_generation"}, "the traits")
        generation = _int(
            _need(body, "resource_provider_generation", "the traits"),
            "resource_provider_generation",
            0,
        )
        traits = _need(body, "traits", "the traits")
        if not isinstance(traits, list):
            raise BadRequest(f"JSON does not validate: {traits!r} is not of type 'array'")
        if not all(isinstance(t, str) for t in traits):
            raise BadRequest(f"JSON does not validate: traits must be names: {traits!r}")
        try:
            result = await call(placement.set_provider_traits, uuid, generation, traits)
        except ConcurrentUpdate as exc:
            raise ConcurrentUpdate(
                "Resource provider's generation already changed. Please update the generation "
                f"and try again. ({exc.detail})"
            ) from exc
        return {
            "traits": sorted(result.traits),
            "resource_provider_generation": result.generation,
        }

    @router.delete("/resource_providers/{uuid}/traits", summary="Delete provider traits")
    async def delete_provider_traits(uuid: str) -> Response:
        current = await call(placement.get_provider_traits, uuid)
        await call(placement.set_provider_traits, uuid, current.generation, [])
        return Response(status_code=204)

    @router.get("/resource_providers/{uuid}/usages", summary="List provider usages")
    async def get_usages(uuid: str) -> dict[str, Any]:
        result = await call(placement.get_usages, uuid)
        return {"usages": result.usages, "resource_provider_generation": result.generation}

    @router.get("/usages", summary="Usages of a project (and user)")
    async def project_usages(request: Request) -> dict[str, Any]:
        version = _microversion(request)
        _check_params(request, {"project_id": 9, "user_id": 9, "consumer_type": 38})
        project_id = _single(request, "project_id")
        if project_id is None:
            raise BadRequest("Invalid query string parameters: 'project_id' is a required property")
        user_id = _single(request, "user_id")
        for key, value in (("project_id", project_id), ("user_id", user_id)):
            if value is not None and not 1 <= len(value) <= MAX_NAME_LENGTH:
                rule = "minLength" if not value else "maxLength"
                raise BadRequest(
                    f"Invalid query string parameters: {key} must have 1-{MAX_NAME_LENGTH} "
                    f"characters\n\nFailed validating '{rule}' in schema['properties']['{key}']"
                )
        by_type = await call(placement.project_usages, project_id, user_id)
        if not version.at_least(38):
            totals: dict[str, int] = {}
            for _count, amounts in by_type.values():
                for rc, used in amounts.items():
                    totals[rc] = totals.get(rc, 0) + used
            return {"usages": totals}
        consumer_type = _single(request, "consumer_type")
        if consumer_type == "all":
            count = sum(c for c, _a in by_type.values())
            merged: dict[str, int] = {}
            for _count, amounts in by_type.values():
                for rc, used in amounts.items():
                    merged[rc] = merged.get(rc, 0) + used
            return {"usages": {"all": {"consumer_count": count, **merged}} if count else {}}
        return {
            "usages": {
                ctype: {"consumer_count": count, **amounts}
                for ctype, (count, amounts) in by_type.items()
                if consumer_type is None or ctype == consumer_type
            }
        }

    @router.get("/traits", summary="List traits")
    async def list_traits(request: Request) -> dict[str, Any]:
        _check_params(request, {"name", "associated"})
        name = _single(request, "name")
        starts_with: str | None = None
        names: list[str] | None = None
        if name is not None:
            if name.startswith("startswith:"):
                starts_with = name.removeprefix("startswith:")
            elif name.startswith("in:"):
                names = [n.strip() for n in name.removeprefix("in:").split(",")]
            else:
                raise BadRequest(
                    "Badly formatted name parameter. Expected name query string parameter "
                    f'in form: ?name=[in|startswith]:[name1,name2|prefix]. Got: "{name}"',
                    code=CODE_QUERY_BAD_VALUE,
                )
        associated_raw = _single(request, "associated")
        associated: bool | None = None
        if associated_raw is not None:
            if associated_raw.lower() not in ("true", "false"):
                raise BadRequest(
                    'The query parameter "associated" only accepts "true" or "false", got '
                    f'"{associated_raw}"',
                    code=CODE_QUERY_BAD_VALUE,
                )
            associated = associated_raw.lower() == "true"
        traits = await call(
            placement.list_traits, starts_with=starts_with, names=names, associated=associated
        )
        return {"traits": traits}

    @router.get("/traits/{name}", summary="Show trait")
    async def show_trait(name: str) -> Response:
        if name not in await call(placement.list_traits, names=[name]):
            raise NotFound(f"No such trait(s): {name}")
        return Response(status_code=204)

    @router.put("/traits/{name}", summary="Create custom trait")
    async def put_trait(name: str) -> Response:
        if not _CUSTOM_RE.match(name) or len(name) > MAX_NAME_LENGTH:
            raise BadRequest(
                "The trait is invalid. A valid trait must be no longer than 255 characters, "
                'start with the prefix "CUSTOM_" and use following characters: "A"-"Z", '
                f'"0"-"9" and "_" (got {shown_name(name)}: {len(name)} characters, at most '
                f"{MAX_NAME_LENGTH})"
            )
        created = await call(placement.ensure_custom_trait, name)
        return Response(
            status_code=201 if created else 204,
            headers={"Location": f"{PREFIX}/traits/{name}"},
        )

    @router.delete("/traits/{name}", summary="Delete custom trait")
    async def delete_trait(name: str) -> Response:
        await call(placement.delete_custom_trait, name)
        return Response(status_code=204)

    @router.get("/resource_classes/{name}", summary="Show resource class")
    async def show_resource_class(name: str) -> dict[str, Any]:
        if name not in await call(placement.list_resource_classes):
            raise NotFound(f"No such resource class {name}.")
        return {
            "name": name,
            "links": [{"rel": "self", "href": f"{PREFIX}/resource_classes/{name}"}],
        }

    @router.delete("/resource_classes/{name}", summary="Delete custom resource class")
    async def delete_resource_class(name: str) -> Response:
        try:
            await call(placement.delete_custom_resource_class, name)
        except Conflict as exc:
            raise Conflict(
                f"Error in delete resource class '{name}': Class is in use in inventory. "
                f"({exc.detail})",
                code=exc.code,
            ) from exc
        return Response(status_code=204)

    @router.get("/resource_classes", summary="List resource classes")
    async def list_resource_classes() -> dict[str, Any]:
        names = await call(placement.list_resource_classes)
        return {
            "resource_classes": [
                {"name": n, "links": [{"rel": "self", "href": f"{PREFIX}/resource_classes/{n}"}]}
                for n in names
            ]
        }

    @router.post("/resource_classes", status_code=201, summary="Create custom resource class")
    async def post_resource_class(request: Request) -> Response:
        body = await _json(request)
        _only(body, {"name"}, "the resource class")
        name = _resource_class_name(_need(body, "name", "the resource class"))
        if not await call(placement.ensure_custom_resource_class, name):
            raise Conflict(f"Conflicting resource class already exists: {name}")
        return Response(status_code=201, headers={"Location": f"{PREFIX}/resource_classes/{name}"})

    @router.put("/resource_classes/{name}", summary="Create (1.7) or rename a resource class")
    async def put_resource_class(name: str, request: Request) -> Response:
        if not _microversion(request).at_least(7):
            body = await _json(request)
            _only(body, {"name"}, "the resource class")
            new_name = _resource_class_name(_need(body, "name", "the resource class"))
            await call(placement.rename_custom_resource_class, name, new_name)
            return JSONResponse(
                {
                    "name": new_name,
                    "links": [{"rel": "self", "href": f"{PREFIX}/resource_classes/{new_name}"}],
                }
            )
        name = _resource_class_name(name)
        created = await call(placement.ensure_custom_resource_class, name)
        return Response(
            status_code=201 if created else 204,
            headers={"Location": f"{PREFIX}/resource_classes/{name}"},
        )

    @router.get("/allocations/{consumer_uuid}", summary="List allocations of a consumer")
    async def get_allocations(consumer_uuid: str, request: Request) -> dict[str, Any]:
        version = _microversion(request)
        held = await call(placement.get_allocations, consumer_uuid)
        body: dict[str, Any] = {
            "allocations": {
                a.provider_uuid: {"generation": a.provider_generation, "resources": a.resources}
                for a in held.allocations
            }
        }
        if held.allocations and version.at_least(12):
            body.update(project_id=held.project_id, user_id=held.user_id)
        if held.allocations and version.at_least(28):
            body["consumer_generation"] = held.generation
        if held.allocations and version.at_least(38):
            body["consumer_type"] = held.consumer_type
        return body

    @router.put("/allocations/{consumer_uuid}", status_code=204, summary="Update allocations")
    async def put_allocations(consumer_uuid: str, request: Request) -> Response:
        version = _microversion(request)
        update_ = _consumer_update(consumer_uuid, await _json(request), version)
        update_ = await call(_with_current_generation, placement, update_)
        if not update_.allocations and update_.consumer_generation is None:
            raise BadRequest(
                "JSON does not validate: empty allocations need the consumer_generation of "
                "an existing consumer"
            )
        try:
            await call(
                placement.set_allocations,
                update_.consumer_uuid,
                update_.allocations,
                project_id=update_.project_id,
                user_id=update_.user_id,
                consumer_generation=update_.consumer_generation,
                consumer_type=update_.consumer_type,
            )
        except BadRequest as exc:
            raise BadRequest(
                f"Unable to allocate inventory for consumer {update_.consumer_uuid}: {exc.detail}",
                code=exc.code,
            ) from exc
        return Response(status_code=204)

    @router.post("/allocations", status_code=204, summary="Manage allocations")
    async def post_allocations(request: Request) -> Response:
        version = _microversion(request)
        body = await _json(request)
        if not body:
            raise BadRequest("JSON does not validate: at least one consumer is required")
        updates = [
            _consumer_update(consumer_uuid, _obj(entry, f"consumer {consumer_uuid}"), version)
            for consumer_uuid, entry in body.items()
        ]
        updates = [await call(_with_current_generation, placement, u) for u in updates]
        await call(placement.set_allocations_many, updates)
        return Response(status_code=204)

    @router.delete("/allocations/{consumer_uuid}", status_code=204, summary="Delete allocations")
    async def delete_allocations(consumer_uuid: str) -> Response:
        await call(placement.delete_allocations, consumer_uuid)
        return Response(status_code=204)

    @router.post("/reshaper", status_code=204, summary="Move inventory and allocations at once")
    async def reshaper(request: Request) -> Response:
        version = _microversion(request)
        body = await _json(request)
        _only(body, {"inventories", "allocations"}, "the reshape")
        raw_inventories = _obj(_need(body, "inventories", "the reshape"), "inventories")
        raw_allocations = _obj(_need(body, "allocations", "the reshape"), "allocations")
        known = set(await call(placement.list_resource_classes))
        inventories: dict[str, tuple[int, dict[str, Inventory]]] = {}
        for rp_uuid, entry in raw_inventories.items():
            where = f"the inventories of {rp_uuid}"
            entry = _obj(entry, where)
            _only(entry, {"inventories", "resource_provider_generation"}, where)
            generation = _int(
                _need(entry, "resource_provider_generation", where),
                "resource_provider_generation",
                0,
            )
            wanted = _obj(_need(entry, "inventories", where), "inventories")
            for rc in wanted:
                if rc not in known:
                    raise BadRequest(f"No such resource class {rc}")
            inventories[_uuid(rp_uuid, "resource provider uuid")] = (
                generation,
                {rc: _parse_inventory(rc, inv) for rc, inv in wanted.items()},
            )
        updates = [
            _consumer_update(consumer, _obj(entry, f"consumer {consumer}"), version)
            for consumer, entry in raw_allocations.items()
        ]
        for update_ in updates:
            for resources in update_.allocations.values():
                for rc in resources:
                    if rc not in known:
                        raise BadRequest(f"No such resource class {rc}")
        await call(placement.reshape, inventories, updates)
        return Response(status_code=204)

    @router.get("/allocation_candidates", summary="List allocation candidates")
    async def allocation_candidates(request: Request) -> dict[str, Any]:
        version = _microversion(request)
        tree_request, limit = _candidate_request(request, version)
        traits = TraitQuery()
        for group in tree_request.groups:
            traits = traits.merged(group.traits)
        await call(
            placement.check_names,
            {rc for group in tree_request.groups for rc in group.resources},
            traits.merged(tree_request.root_traits),
        )
        snapshot = await call(placement.tree_snapshot)
        found = TreeCandidates(snapshot).candidates(tree_request)
        if limit is not None:
            found = found[:limit]
        return _candidates_body(snapshot, tree_request, found, version)

    return router


class PlacementHeaders:
    """Placement's request id and microversion headers, on ``/placement`` requests only.

    A plain ASGI middleware: ``@app.middleware("http")`` would wrap every request of
    the application (``/v1`` too) in Starlette's streaming ``call_next`` machinery.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = state.get("request_id") or _new_request_id()
        state["request_id"] = request_id
        request = Request(scope)
        method = scope["method"]
        path = scope["path"].removeprefix(PREFIX) or "/"
        refusal: tuple[int, str, str] | None = None
        try:
            version = _microversion(request)
        except PlacementError as exc:
            version = Microversion(*MIN_VERSION)
            refusal = (exc.status, exc.detail, exc.code)
        else:
            if not _route_available(method, path, version):
                refusal = (404, "The resource could not be found.", "placement.undefined_code")
            elif method in ("GET", "HEAD") and not _accepts_json(request.headers.get("accept")):
                refusal = (406, "Only application/json is provided", "placement.undefined_code")
        if refusal is not None:
            response = _error_response(request, *refusal)
            _add_placement_headers(response.headers, request_id, version)
            await response(scope, receive, send)
            return
        cached = version.at_least(15) and method in ("GET", "PUT", "POST")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                _add_placement_headers(headers, request_id, version)
                status = message["status"]
                if cached and (
                    status == 200
                    or (path.startswith("/traits/") and status in (201, 204))
                    or (method == "POST" and path.endswith("/inventories") and status == 201)
                ):
                    headers["cache-control"] = "no-cache"
                    headers["last-modified"] = formatdate(usegmt=True)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# (method or "*", path pattern, the first microversion that offers it), as Placement gates.
_GATES: tuple[tuple[str, re.Pattern[str], int], ...] = tuple(
    (method, re.compile(pattern), minor)
    for method, pattern, minor in (
        ("*", r"^/resource_providers/[^/]+/aggregates$", 1),
        ("*", r"^/resource_classes(/[^/]*)?$", 2),
        ("DELETE", r"^/resource_providers/[^/]+/inventories$", 5),
        ("*", r"^/traits(/[^/]*)?$", 6),
        ("*", r"^/resource_providers/[^/]+/traits$", 6),
        ("*", r"^/usages$", 9),
        ("*", r"^/allocation_candidates$", 10),
        ("POST", r"^/allocations$", 13),
        ("*", r"^/reshaper$", 30),
    )
)


def _route_available(method: str, path: str, version: Microversion) -> bool:
    return all(
        version.at_least(minor)
        for gate_method, pattern, minor in _GATES
        if gate_method in ("*", method) and pattern.match(path)
    )


def _accepts_json(accept: str | None) -> bool:
    if accept is None or not accept.strip():
        return True
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("application/json", "application/*", "*/*"):
            return True
    return False


def _add_placement_headers(headers: MutableHeaders, request_id: str, version: Microversion) -> None:
    headers["openstack-request-id"] = request_id
    headers[VERSION_HEADER] = f"placement {version}"
    headers["Vary"] = VERSION_HEADER.lower()


def install(
    app: FastAPI, placement: Placement, dependencies: Sequence[params.Depends] = ()
) -> None:
    """Mount the Placement API on ``app`` with Placement's headers and error format."""
    app.include_router(versions_router())
    app.include_router(build_router(placement, dependencies))

    app.add_middleware(PlacementHeaders)

    @app.exception_handler(PlacementError)
    async def placement_error(request: Request, exc: PlacementError) -> Response:
        return _error_response(request, exc.status, exc.detail, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(PREFIX):
            detail = str(exc.detail)
            if exc.status_code == 405:
                detail = f"The method {request.method} is not allowed for this resource."
            elif exc.status_code == 404 and detail == "Not Found":
                detail = "The resource could not be found."
            return _error_response(request, exc.status_code, detail, "placement.undefined_code")
        return await http_exception_handler(request, exc)
