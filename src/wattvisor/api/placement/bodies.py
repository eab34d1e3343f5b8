"""Request body checks and response bodies shared by the Placement handlers."""

from __future__ import annotations

import dataclasses
import re
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from fastapi import Request

from wattvisor.api.placement.errors import PlacementUnsupportedMedia
from wattvisor.api.placement.microversion import PREFIX, Microversion
from wattvisor.api.placement.models import InventoryFields
from wattvisor.placement import (
    BadRequest,
    Inventory,
    Placement,
    Provider,
)
from wattvisor.placement.entities import MAX_INT
from wattvisor.placement.names import MAX_NAME_LENGTH, shown_name
from wattvisor.placement.service import UNKNOWN_CONSUMER_TYPE, ConsumerAllocationUpdate

_CONSUMER_TYPE_RE = re.compile(r"^[A-Z0-9_]+$")
_RESOURCE_CLASS_RE = re.compile(r"^[A-Z0-9_]+$")


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


# ------------------------------------------------------------------ serializers


def _provider_body(
    provider: Provider, version: Microversion, script_name: str = PREFIX
) -> dict[str, Any]:
    base = f"{script_name}/resource_providers/{provider.uuid}"
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


def _inventory(fields: InventoryFields) -> Inventory:
    """The inventory a validated body describes."""
    return Inventory(
        total=fields.total,
        reserved=fields.reserved,
        min_unit=fields.min_unit,
        max_unit=fields.max_unit,
        step_size=fields.step_size,
        allocation_ratio=float(fields.allocation_ratio),
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
        consumer_type = UNKNOWN_CONSUMER_TYPE
    for key, value in (("project_id", project_id), ("user_id", user_id)):
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LENGTH:
            shown = shown_name(value) if isinstance(value, str) else repr(value)
            raise BadRequest(
                f"JSON does not validate: {key} must be a string of 1-{MAX_NAME_LENGTH} "
                f"characters, got {shown}"
            )
    if consumer_type != UNKNOWN_CONSUMER_TYPE and (
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


def _check_reserved(uuid: str, rc: str, inventory: Inventory, version: Microversion) -> None:
    """Placement's reserved limit: below total before 1.26, at most total from 1.26."""
    if version.at_least(26):
        if inventory.reserved > inventory.total:
            raise BadRequest(
                f"Unable to update inventory for resource provider {uuid}: Invalid inventory "
                f"for '{rc}' on resource provider '{uuid}'. The reserved value "
                f"{inventory.reserved} is greater than total {inventory.total}."
            )
    elif inventory.reserved >= inventory.total:
        raise BadRequest(
            f"Unable to update inventory for resource provider {uuid}: Invalid inventory "
            f"for '{rc}' on resource provider '{uuid}'. The reserved value "
            f"{inventory.reserved} is greater than or equal to total {inventory.total}."
        )
