"""One libvirt connection per host, reopened when libvirtd goes away.

libvirtd restarts (package upgrades, crashes) must not need a wattvisor
restart: every call goes through :meth:`HostConnection.call`, which reopens the
connection once when libvirt reports that the old one is dead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

log = logging.getLogger(__name__)

T = TypeVar("T")

FALLBACK_URI = "test:///default"
SYSTEM_URI = "qemu:///system"

# Errors that mean "the connection is gone", not "the request was wrong".
_DEAD_CONNECTION_CODES = frozenset(
    {
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_INTERNAL_ERROR,
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
    }
)


class HostConnectionError(RuntimeError):
    """libvirt cannot be reached at the configured URI; the message says what to do.

    It carries libvirt's error code and domain, never libvirt's message: that text can
    quote the files a URI names (the test driver prints their first line), so it only
    goes to the log.
    """


def _constant_names(prefix: str, skip: frozenset[str] = frozenset()) -> dict[int, str]:
    return {
        value: name
        for name, value in vars(libvirt).items()
        if name.startswith(prefix) and name not in skip and isinstance(value, int)
    }


# VIR_ERR_NONE/WARNING/ERROR are error levels, not codes.
_ERROR_CODES = _constant_names("VIR_ERR_", frozenset({"VIR_ERR_NONE", "VIR_ERR_WARNING",
                                                      "VIR_ERR_ERROR"}))  # fmt: skip
_ERROR_DOMAINS = _constant_names("VIR_FROM_")


def libvirt_error_summary(exc: BaseException) -> str:
    """What went wrong without libvirt's message: its error code and domain, by number and name.

    Follows ``__cause__``/``__context__`` to the libvirt error underneath; for any other
    failure it is the exception's type.
    """
    seen: BaseException | None = exc
    for _depth in range(10):
        if seen is None:
            break
        if isinstance(seen, libvirt.libvirtError):
            code, domain = seen.get_error_code(), seen.get_error_domain()
            return (
                f"libvirt error {code} ({_ERROR_CODES.get(code, 'unknown')}) from domain "
                f"{domain} ({_ERROR_DOMAINS.get(domain, 'unknown')})"
            )
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def _quiet_libvirt_errors() -> None:
    # libvirt prints every error to stderr by default; we raise them instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


_quiet_libvirt_errors()


def libvirt_answers(uri: str) -> bool:
    """True when a connection to ``uri`` can be opened right now."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    conn.close()
    return True


def choose_uri(configured: str | None) -> tuple[str, str]:
    """The URI to use and why, for a start-up message that does not pretend.

    An explicit setting is used as it is; otherwise ``qemu:///system`` when a
    libvirtd answers, else libvirt's built-in test hypervisor.
    """
    if configured:
        return configured, "configured by host.libvirt_uri"
    if libvirt_answers(SYSTEM_URI):
        return SYSTEM_URI, "a libvirtd answers on qemu:///system"
    return FALLBACK_URI, (
        "no libvirtd answers on qemu:///system, so guests run on libvirt's built-in "
        "test hypervisor (test:///default): nothing really boots. Start libvirtd "
        "(`make libvirtd`) and restart to run real VMs"
    )


class HostConnection:
    """A libvirt connection that is reopened transparently after libvirtd restarts."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.RLock()

    def _open(self) -> libvirt.virConnect:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            log.warning("cannot connect to libvirt at %s: %s", self.uri, exc.get_error_message())
            raise HostConnectionError(
                f"cannot connect to libvirt at {self.uri!r} ({libvirt_error_summary(exc)}; "
                "libvirt's message is in the log); check that libvirtd runs (`make libvirtd`) "
                "or set host.libvirt_uri"
            ) from exc
        log.debug("connected to libvirt at %s", self.uri)  # `up` prints the URI and why
        return conn

    def get(self) -> libvirt.virConnect:
        """The open connection, reopened first if libvirt says it is dead."""
        with self._lock:
            conn = self._conn
            if conn is not None:
                try:
                    alive = bool(conn.isAlive())
                except libvirt.libvirtError:
                    alive = False
                if alive:
                    return conn
                log.warning("libvirt connection to %s is dead; reconnecting", self.uri)
                self._drop()
            self._conn = self._open()
            return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None

    def call(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Run ``fn(conn)``; if the connection died under it, reconnect and retry once."""
        conn = self.get()
        try:
            return fn(conn)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _DEAD_CONNECTION_CODES or self._is_alive(conn):
                raise
            log.warning("libvirt connection lost (%s); retrying once", exc.get_error_message())
            with self._lock:
                if self._conn is conn:
                    self._drop()
            return fn(self.get())

    @staticmethod
    def _is_alive(conn: libvirt.virConnect) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> HostConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
