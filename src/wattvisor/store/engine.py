"""Engines and transactions for SQLite (the embedded default) and PostgreSQL.

SQLite runs in WAL mode so readers never block the writer, and every write
transaction starts with ``BEGIN IMMEDIATE`` so two writers queue on the database
lock instead of failing half-way when one tries to upgrade a read lock. Writers of
one process also queue on a lock of their own before ``BEGIN IMMEDIATE``: SQLite's
busy handler polls with sleeps of up to 100 ms, so under many concurrent writers
a transaction waited far longer than the lock was held, while a lock hands over
at once. Writers in other processes still meet SQLite's busy timeout.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url

_WRITE_OPTION = "wattvisor_write"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_POOL_SIZE = 16
SQLITE_POOL_OVERFLOW = 48
"""SQLite connections are a file handle each: enough for every API and worker thread
(the API serves sync routes on up to 40 threads) so none waits for a connection."""


class WriterQueue:
    """A re-entrant lock that writers get in the order they asked for it.

    ``threading.Lock`` is not fair: under a steady stream of writers an unlucky one
    waited 100 ms for a lock held 0.3 ms at a time. Handing the lock to the oldest
    waiter bounds every wait by the queue in front of it. Re-entrant so that a nested
    write transaction fails on SQLite's busy timeout, as it did before this lock,
    instead of deadlocking here.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._waiters: deque[tuple[int, threading.Lock]] = deque()

    def __enter__(self) -> None:
        me = threading.get_ident()
        with self._guard:
            if self._owner == me:
                self._depth += 1
                return
            if self._owner is None:
                self._owner, self._depth = me, 1
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append((me, gate))
        try:
            gate.acquire()  # the previous owner made this thread the owner, then opened it
        except BaseException:  # interrupted (KeyboardInterrupt): leave the queue cleanly
            with self._guard:
                if (me, gate) in self._waiters:
                    self._waiters.remove((me, gate))
                else:
                    self._hand_over()
            raise

    def queued(self) -> int:
        """How many writers wait for the lock now."""
        with self._guard:
            return len(self._waiters)

    def __exit__(self, *_exc: object) -> None:
        with self._guard:
            self._depth -= 1
            if not self._depth:
                self._hand_over()

    def _hand_over(self) -> None:
        """Give the lock to the oldest waiter, or free it (``_guard`` held)."""
        if self._waiters:
            owner, gate = self._waiters.popleft()
            self._owner, self._depth = owner, 1
            gate.release()
        else:
            self._owner, self._depth = None, 0


_write_locks: weakref.WeakKeyDictionary[Engine, WriterQueue] = weakref.WeakKeyDictionary()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the settings wattvisor relies on.

    A plain ``postgresql://`` URL is served by psycopg 3, the driver wattvisor ships with.
    """
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    if url in ("sqlite://", "sqlite:///:memory:"):
        raise ValueError(
            f"store URL {url!r} is an in-memory SQLite database, which each connection sees "
            "empty; use a file, e.g. 'sqlite:////var/lib/wattvisor/wattvisor.db'"
        )
    database = make_url(url).database
    if database:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    kwargs.setdefault("pool_size", SQLITE_POOL_SIZE)
    kwargs.setdefault("max_overflow", SQLITE_POOL_OVERFLOW)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _write_locks[engine] = WriterQueue()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event below decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes: committed on success, rolled back on any exception.

    Keep it short and do the reading that does not need the write lock before it:
    on SQLite every writer of the database waits for it.
    """
    lock = _write_locks.get(engine)
    with lock if lock is not None else nullcontext(), engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that only reads and sees one consistent snapshot of the database."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def as_utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime: SQLite hands back naive datetimes, and
    the store writes UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
