"""Errors of the compute service, each with an HTTP status and a stable code.

The API turns every one into ``{"error": {"code", "message", "details"}}``; the
message names the offending value and what would be accepted. An error whose message
carries a host's own words (:attr:`ComputeError.host_detail`) also carries a
:attr:`~ComputeError.public_message` for members; the API picks one by the sender's role.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ComputeError(Exception):
    """Base of every error a compute request can end in."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    host_detail: ClassVar[bool] = False
    """True when ``message`` and ``details`` may hold host names, host paths or libvirt
    domain names: for admins only."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def public_message(self) -> str:
        """What any member may read about this error."""
        return self.message

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


class HostUnavailable(ComputeError):
    """A host's agent did not answer; nothing was changed (admins only: names the host)."""

    status = 503
    code = "host_unavailable"
    host_detail = True


class HostOperationFailed(ComputeError):
    """The host refused or failed an operation; nothing was recorded as done.

    ``message`` is the host's side of it (what libvirt said, with domain names and
    paths) and goes to admins; ``public`` says what failed in a member's terms, e.g.
    "attaching volume 'v' to server 's' failed on its host".
    """

    status = 502
    code = "host_error"
    host_detail = True

    def __init__(
        self,
        message: str,
        *,
        public: str = "the host could not carry out the request",
        **details: Any,
    ) -> None:
        super().__init__(message, **details)
        self.public = public

    @property
    def public_message(self) -> str:
        return self.public
