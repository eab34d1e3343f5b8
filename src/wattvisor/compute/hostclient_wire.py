"""How :class:`~wattvisor.compute.hostclient.HostClient` calls cross HTTP: one table.

Every protocol method is one ``POST /v1/host/<method>``; its body is a JSON object of
the method's keyword arguments and its answer ``{"result": ...}``. The argument and
result types are read from the protocol's own annotations, so a method added to
``HostClient`` is served by the agent as soon as its name is in :data:`WIRE_METHODS`
(and :class:`~wattvisor.compute.hostclient_http.HttpHostClient` gains a one-line
method). Validation is strict (pydantic over the dataclasses): an unknown or missing
argument, or a value of the wrong type, is refused naming the field.

Errors cross as ``{"error": {"type": ..., "message": ...}}``; the types of
:data:`WIRE_ERRORS` are raised again on the caller's side with the same message, any
other failure as :class:`~wattvisor.host.driver.HostError`.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from wattvisor.compute.hostclient import HostClient
from wattvisor.host.console_log import CursorError
from wattvisor.host.driver import DetachTimeout, DeviceNotFound, DomainNotFound, HostError

WIRE_METHODS: tuple[str, ...] = (
    "facts",
    "state",
    "domain_exists",
    "domain_states",
    "spawn",
    "stop",
    "start",
    "update_metadata",
    "resize",
    "delete",
    "create_volume",
    "delete_volume",
    "attach_volume",
    "attach_interface",
    "detach_by_alias",
    "console_log",
    "energy_source",
    "energy_snapshot",
    "vm_history",
    "project_history",
    "host_history",
    "migration_endpoint",
    "prepare_incoming",
    "prepare_incoming_shares",
    "plug_incoming_shares",
    "release_incoming_shares",
    "tunnel_up",
    "tunnel_down",
    "tunnels",
    "migrate_out",
    "migration_progress",
    "abort_migration",
)
"""The protocol methods served over HTTP (``uri``, ``pushes_energy`` and ``close`` are
the client's own)."""

LOCAL_ONLY: frozenset[str] = frozenset({"uri", "pushes_energy", "close"})

WIRE_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (HostError, DomainNotFound, DeviceNotFound, DetachTimeout, CursorError)
}
"""Exceptions raised again, by name, on the caller's side."""

HOST_ERROR_STATUS = 502
"""HTTP status of a host operation that failed (the agent itself answered)."""


class WireError(ValueError):
    """A request or answer that does not fit the method's types; the message says which."""


@dataclass(frozen=True)
class WireMethod:
    """One protocol method: how its arguments and its result are checked and encoded."""

    name: str
    parameters: tuple[str, ...]
    arguments: type[BaseModel]
    result: TypeAdapter[Any]
    timeout_extra_s: str | None = None
    """An argument (seconds) the call may wait for on the host, added to the timeout."""

    def encode_arguments(self, kwargs: dict[str, Any]) -> bytes:
        return self.arguments(**kwargs).model_dump_json().encode()

    def decode_arguments(self, body: bytes) -> dict[str, Any]:
        try:
            model = self.arguments.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise WireError(_describe(f"arguments of {self.name}", exc)) from exc
        return {name: getattr(model, name) for name in self.parameters}

    def encode_result(self, value: Any) -> bytes:
        return b'{"result":' + self.result.dump_json(value) + b"}"

    def decode_result(self, body: bytes) -> Any:
        try:
            return self.result.validate_json(_result_part(body), strict=True)
        except (ValidationError, ValueError) as exc:
            if isinstance(exc, ValidationError):
                raise WireError(_describe(f"answer of {self.name}", exc)) from exc
            raise WireError(f"answer of {self.name} is not {{'result': ...}}: {exc}") from exc


def _result_part(body: bytes) -> bytes:
    """The raw JSON of ``result`` in ``{"result": <json>}`` without parsing it twice."""
    text = body.strip()
    prefix = b'{"result":'
    if not text.startswith(prefix) or not text.endswith(b"}"):
        raise ValueError(f"unexpected answer {text[:80]!r}")
    return text[len(prefix) : -1]


def _describe(what: str, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"
        for err in exc.errors()[:5]
    )
    return f"{what} not accepted: {problems}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _build(name: str) -> WireMethod:
    function = getattr(HostClient, name)
    hints = typing.get_type_hints(function)
    signature = inspect.signature(function)
    parameters = tuple(p for p in signature.parameters if p != "self")
    fields: dict[str, Any] = {p: (hints[p], ...) for p in parameters}
    arguments = create_model(f"{name}_arguments", __base__=_Strict, **fields)
    extra = next((p for p in parameters if p.endswith("timeout_s")), None)
    return WireMethod(name, parameters, arguments, TypeAdapter(hints["return"]), extra)


WIRE_TABLE: dict[str, WireMethod] = {name: _build(name) for name in WIRE_METHODS}


def encode_error(exc: BaseException) -> dict[str, Any]:
    """The ``error`` object of a failed call: a known host error by name, else HostError."""
    kind = type(exc).__name__ if type(exc).__name__ in WIRE_ERRORS else "HostError"
    message = str(exc) or type(exc).__name__
    if kind == "HostError" and not isinstance(exc, HostError):
        message = f"{type(exc).__name__}: {message}"
    return {"type": kind, "message": message}


def decode_error(error: Any, where: str) -> Exception:
    """The exception an ``error`` object stands for; ``where`` names the agent."""
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return HostError(f"host agent {where} answered an unreadable error: {error!r:.200}")
    cls = WIRE_ERRORS.get(str(error.get("type")), HostError)
    return cls(error["message"])
