"""Single duties: work that only one controller of a fleet may do at a time.

Power-state sync or history downsampling done by two controllers at once would do the
work twice and race on its writes. On PostgreSQL a duty is a session advisory lock
(``pg_try_advisory_lock``) held on a connection of its own for as long as the duty
runs: the server releases it when the holder lets go, and also when the holder's
connection dies with its process, so another controller takes the duty over at its
next try. No lease, no clock, no lock table of our own. On SQLite (``wattvisor up``,
one process) an in-process lock per database and duty name does the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

MAX_DUTY_NAME_CHARS = 100


class Duty:
    """The outcome of asking for a duty: ``held`` is True when this caller has it."""

    __slots__ = ("_conn", "held", "name")

    def __init__(self, name: str, held: bool, conn: Connection | None = None) -> None:
        self.name = name
        self.held = held
        self._conn = conn

    def __bool__(self) -> bool:
        return self.held

    def still_held(self) -> bool:
        """True while the duty is this caller's. A long duty asks between its steps: on
        PostgreSQL a lost connection means the lock is gone and someone else may have it."""
        if not self.held:
            return False
        if self._conn is None:
            return True
        try:
            self._conn.execute(text("SELECT 1"))
        except Exception:
            self.held = False
        return self.held

    def __repr__(self) -> str:
        return f"Duty({self.name!r}, held={self.held})"


def advisory_key(name: str, space: str = "duty") -> int:
    """The 64-bit advisory lock key of ``name`` in ``space``, the same in every process and
    version (Python's ``hash`` is salted per process; PostgreSQL's ``hashtext`` has 32 bits)."""
    digest = hashlib.blake2b(f"wattvisor-{space}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_local_guard = threading.Lock()
_local_duties: dict[tuple[str, str], threading.Lock] = {}


@contextmanager
def single_duty(engine: Engine, name: str) -> Iterator[Duty]:
    """Try to take the duty ``name`` without waiting; the result says whether it was taken.

    ``with single_duty(engine, "power-sync") as duty: if duty: sync()`` — whoever
    does not get it skips this round and tries again at its next one.
    """
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_DUTY_NAME_CHARS
        or not name.isprintable()
    ):
        raise ValueError(f"duty name {name!r} must be 1-{MAX_DUTY_NAME_CHARS} printable characters")
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, name) as duty:
            yield duty
        return
    key = (engine.url.render_as_string(hide_password=True), name)
    with _local_guard:
        lock = _local_duties.setdefault(key, threading.Lock())
    held = lock.acquire(blocking=False)
    try:
        yield Duty(name, held)
    finally:
        if held:
            lock.release()


@contextmanager
def _advisory_lock(engine: Engine, name: str) -> Iterator[Duty]:
    key = advisory_key(name)
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    acquired = False
    try:
        acquired = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        yield Duty(name, acquired, conn if acquired else None)
    finally:
        if acquired:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            except Exception:
                # A session lock surely ends with its session: never pool this connection.
                with contextlib.suppress(Exception):
                    conn.invalidate()
        with contextlib.suppress(Exception):
            conn.close()
