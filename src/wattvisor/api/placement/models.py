"""Pydantic models of Placement's request bodies, one per body and microversion range.

Handlers read the JSON themselves and validate it with the model of the request's
microversion (:func:`validated`), so a refusal keeps Placement's 400 and its words
("JSON does not validate: ... Failed validating 'minimum' ..."), which clients and
Placement's own tests match. :func:`request_body` documents a model in the OpenAPI
document of the route.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from wattvisor.placement import BadRequest
from wattvisor.placement.entities import MAX_INT

MAX_ALLOCATION_RATIO = 3.40282e38

Generation = Annotated[StrictInt, Field(ge=0, le=MAX_INT)]
PositiveCount = Annotated[StrictInt, Field(ge=1, le=MAX_INT)]
ProviderName = Annotated[StrictStr, Field(min_length=1, max_length=200)]
ResourceClassName = Annotated[StrictStr, Field(max_length=255)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InventoryFields(_Body):
    """One inventory record: how much of a resource class a provider offers."""

    total: PositiveCount
    reserved: Annotated[StrictInt, Field(ge=0, le=MAX_INT)] = 0
    min_unit: PositiveCount = 1
    max_unit: PositiveCount = MAX_INT
    step_size: PositiveCount = 1
    allocation_ratio: Annotated[StrictFloat | StrictInt, Field(le=MAX_ALLOCATION_RATIO)] = 1.0


class InventoriesBody(_Body):
    """PUT /resource_providers/{uuid}/inventories."""

    inventories: dict[str, InventoryFields]
    resource_provider_generation: Generation


class InventoryCreateBody(InventoryFields):
    """POST /resource_providers/{uuid}/inventories."""

    resource_class: ResourceClassName


class InventoryUpdateBody(InventoryFields):
    """PUT /resource_providers/{uuid}/inventories/{resource_class}."""

    resource_provider_generation: Generation


class ProviderCreateBody(_Body):
    """POST /resource_providers before 1.14."""

    name: ProviderName
    uuid: UUID | None = None


class ProviderCreateBody14(ProviderCreateBody):
    """POST /resource_providers from 1.14: a provider may name its parent."""

    parent_provider_uuid: UUID | None = None


class ProviderUpdateBody(_Body):
    """PUT /resource_providers/{uuid} before 1.14."""

    name: ProviderName


class ProviderUpdateBody14(ProviderUpdateBody):
    """PUT /resource_providers/{uuid} from 1.14."""

    parent_provider_uuid: UUID | None = None


class ProviderTraitsBody(_Body):
    """PUT /resource_providers/{uuid}/traits."""

    traits: list[StrictStr]
    resource_provider_generation: Generation


class ResourceClassBody(_Body):
    """POST /resource_classes, and PUT /resource_classes/{name} before 1.7 (a rename)."""

    name: StrictStr


M = TypeVar("M", bound=BaseModel)

_UNION_TAGS = {"int", "float", "str", "uuid", "none", "function-after", "function-plain"}

_JSON_TYPES = {
    "int_type": "integer",
    "float_type": "number",
    "string_type": "string",
    "dict_type": "object",
    "list_type": "array",
    "bool_type": "boolean",
    "model_type": "object",
    "model_attributes_type": "object",
}


def validated(model: type[M], body: Any) -> M:
    """``body`` as ``model``, or :class:`BadRequest` in Placement's JSON-schema words."""
    try:
        return model.model_validate(body)
    except PydanticValidationError as exc:
        raise BadRequest(placement_words(exc)) from exc


def placement_words(exc: PydanticValidationError) -> str:
    """The first problem of a pydantic validation error, said as Placement says it."""
    error = exc.errors(include_url=False)[0]
    # A union names the alternative that failed after the field: not part of the path.
    loc = [
        str(part)
        for i, part in enumerate(error["loc"])
        if not isinstance(part, int) and not (i > 0 and str(part) in _UNION_TAGS)
    ]
    kind = error["type"]
    value = error.get("input")
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    field = loc[-1] if loc else ""
    rule = kind
    if kind == "missing":
        problem, rule = f"'{field}' is a required property", "required"
        loc = loc[:-1]
    elif kind == "extra_forbidden":
        problem = f"Additional properties are not allowed ('{field}' was unexpected)"
        rule = "additionalProperties"
        loc = loc[:-1]
    elif kind in _JSON_TYPES:
        problem, rule = f"{value!r} is not of type '{_JSON_TYPES[kind]}'", "type"
    elif kind == "greater_than_equal":
        problem, rule = f"{value} is less than the minimum of {ctx.get('ge')}", "minimum"
    elif kind == "greater_than":
        problem = f"{value} is less than or equal to the minimum of {ctx.get('gt')}"
        rule = "exclusiveMinimum"
    elif kind == "less_than_equal":
        problem, rule = f"{value} is greater than the maximum of {ctx.get('le')}", "maximum"
    elif kind == "string_too_long":
        problem, rule = f"{value!r} is too long", "maxLength"
    elif kind == "string_too_short":
        problem, rule = f"{value!r} is too short", "minLength"
    elif kind == "string_pattern_mismatch":
        problem, rule = f"{value!r} does not match '{ctx.get('pattern')}'", "pattern"
    elif kind in {"too_short", "too_long"}:
        problem, rule = f"{value!r} is {kind.replace('_', ' ')}", kind
    elif kind.startswith("uuid_"):
        problem, rule = f"{value!r} is not a 'uuid'", "format"
    else:
        problem = f"{value!r}: {error['msg']}"
    where = "".join(f"['properties']['{part}']" for part in loc)
    return f"JSON does not validate: {problem}\n\nFailed validating '{rule}' in schema{where}"


def request_body(*models: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body of one of ``models`` (by microversion)."""
    schemas = [_inline(model.model_json_schema()) for model in models]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` references replaced by the definitions themselves."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
