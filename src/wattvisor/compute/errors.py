"""Errors of the compute service, each with an HTTP status and a stable code.

The API turns every one into ``{"error": {"code", "message", "details"}}``; the
message names the offending value and what would be accepted.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ComputeError(Exception):
    """Base of every error a compute request can end in."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidRequest(ComputeError):
    status = 400
    code = "invalid_request"


class NotFound(ComputeError):
    """Missing, or belonging to another project (which must look the same)."""

    status = 404
    code = "not_found"


class Conflict(ComputeError):
    """The resource exists but is in a state (or has a name) that forbids the request."""

    status = 409
    code = "conflict"


class HostOperationFailed(ComputeError):
    """The host refused or failed an operation; nothing was recorded as done."""

    status = 502
    code = "host_error"
