"""Errors of the placement service, each mapped one-to-one onto an HTTP status and a
Placement error code by the API layer."""

from __future__ import annotations

CODE_DEFAULT = "placement.undefined_code"
CODE_CONCURRENT_UPDATE = "placement.concurrent_update"
CODE_INVENTORY_IN_USE = "placement.inventory.inuse"
CODE_DUPLICATE_NAME = "placement.duplicate_name"
CODE_PROVIDER_IN_USE = "placement.resource_provider.inuse"
CODE_QUERY_BAD_VALUE = "placement.query.bad_value"
CODE_QUERY_MISSING_VALUE = "placement.query.missing_value"


class PlacementError(Exception):
    """Base of every error a caller of the placement service can see."""

    status = 500
    code = CODE_DEFAULT

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class NotFound(PlacementError):
    """The named provider, consumer, trait or resource class does not exist."""

    status = 404


class BadRequest(PlacementError):
    """The request itself is invalid; nothing was changed."""

    status = 400


class Conflict(PlacementError):
    """The request is valid but the current state forbids it; nothing was changed."""

    status = 409


class ConcurrentUpdate(Conflict):
    """A provider or consumer generation did not match: somebody else wrote first."""

    code = CODE_CONCURRENT_UPDATE


class ConsumerConflict(ConcurrentUpdate):
    """The consumer's generation did not match (for a new consumer: it exists already)."""


class CapacityExceeded(Conflict):
    """An allocation does not fit the provider's inventory (capacity or unit constraints)."""


class InventoryInUse(Conflict):
    """An inventory that has allocations against it cannot be removed."""

    code = CODE_INVENTORY_IN_USE


class DuplicateName(Conflict):
    """A provider with this name or uuid exists already."""

    code = CODE_DUPLICATE_NAME


class ProviderInUse(Conflict):
    """A provider with allocations cannot be deleted."""

    code = CODE_PROVIDER_IN_USE
