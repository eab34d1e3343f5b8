"""Addresses to coordinates with a local MaxMind-format database (``maxminddb``).

The database is a file on the controller (``geo.database``): GeoLite2-City, GeoIP2-City
or any ``.mmdb`` whose records carry ``location.latitude`` / ``location.longitude``.
No address leaves the machine. The file is opened once and opened again when it is
replaced (its identity or size or mtime changed), so a weekly database update needs no
restart. Every failure is an answer (``Located.reason``), never an exception: a lookup
must not stop a host from registering.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb

from wattvisor.geo.coordinates import InvalidPair, check_coordinates, format_pair
from wattvisor.geo.public_ranges import public_addresses

log = logging.getLogger(__name__)

NO_DATABASE = "no database configured"
NO_PUBLIC_ADDRESS = "no public address"
NOT_IN_DATABASE = "address not in database"
LOOKUP_FAILED = "lookup failed"


@dataclass(frozen=True, slots=True)
class Located:
    """Where a host's public addresses are: ``pairs`` (one per address found, a pair
    shared by two addresses kept once) or, when there is none, ``reason``."""

    pairs: tuple[str, ...]
    reason: str | None
    public: tuple[str, ...] = ()


def _identity(path: Path) -> tuple[int, int, int, int]:
    info = os.stat(path)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class GeoDatabase:
    """The database at ``path`` (None: none configured). Thread-safe."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._reader: Any = None
        self._identity: tuple[int, int, int, int] | None = None
        self._failure: str | None = None

    def locate(self, addresses: Iterable[str]) -> Located:
        """The coordinates of the public ones among ``addresses``."""
        public = tuple(public_addresses(addresses))
        if self.path is None:
            return Located((), NO_DATABASE, public)
        if not public:
            return Located((), NO_PUBLIC_ADDRESS, public)
        try:
            reader = self._open()
            pairs: dict[str, None] = {}
            for address in public:
                pair = _pair(reader.get(address))
                if pair is not None:
                    pairs.setdefault(pair, None)
        except Exception as exc:  # a lookup error is an answer, never a refused join
            log.warning("geolocation lookup in %s failed: %s", self.path, exc)
            return Located((), f"{LOOKUP_FAILED}: {_describe(exc)}", public)
        if not pairs:
            return Located((), NOT_IN_DATABASE, public)
        return Located(tuple(pairs), None, public)

    def _open(self) -> Any:
        assert self.path is not None
        try:
            identity = _identity(self.path)
        except OSError as exc:
            raise LookupError(
                f"database {str(self.path)!r} cannot be read ({exc.strerror})"
            ) from exc
        with self._lock:
            if identity == self._identity:
                if self._failure is not None:
                    raise LookupError(self._failure)
                return self._reader
            old, self._reader, self._failure = self._reader, None, None
            self._identity = identity
            if old is not None:
                old.close()
            try:
                self._reader = maxminddb.open_database(str(self.path), maxminddb.MODE_AUTO)
            except Exception as exc:
                self._failure = (
                    f"database {str(self.path)!r} is not a MaxMind DB file ({_describe(exc)})"
                )
                raise LookupError(self._failure) from exc
            return self._reader

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
            self._reader, self._identity, self._failure = None, None, None


def _pair(record: Any) -> str | None:
    """``location.latitude,longitude`` of a record; None when it has no usable location."""
    if not isinstance(record, dict):
        return None
    location = record.get("location")
    if not isinstance(location, dict):
        return None
    latitude, longitude = location.get("latitude"), location.get("longitude")
    if not isinstance(latitude, int | float) or not isinstance(longitude, int | float):
        return None
    if isinstance(latitude, bool) or isinstance(longitude, bool):
        return None
    try:
        check_coordinates(float(latitude), float(longitude), (latitude, longitude))
    except InvalidPair:
        return None
    return format_pair(float(latitude), float(longitude))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
