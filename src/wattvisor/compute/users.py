"""Users in the store, and the cached lookup the API's token check calls on every request."""

from __future__ import annotations

import threading
import uuid as uuidlib
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Engine, Table, delete, insert, select, update

from wattvisor.auth import InvalidPublicKey, InvalidUserName, RegisteredUser
from wattvisor.compute.errors import Conflict, InvalidRequest, NotFound
from wattvisor.compute.identifiers import check_project_id
from wattvisor.compute.identities import ensure_project
from wattvisor.compute.names import quoted, require_printable
from wattvisor.compute.records import UserRecord
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import ProjectRow, UserRow
from wattvisor.store.generations import (
    USERS,
    bump_generation,
    current_generation,
    read_generation,
)

_users = cast(Table, UserRow.__table__)
_projects = cast(Table, ProjectRow.__table__)


class UserStore:
    """Registered users; :meth:`lookup` is a ``wattvisor.auth.UserLookup``.

    Lookups run on every API request, so users are cached in memory (found and not
    found alike). Every change bumps the store's ``users`` generation in the same
    commit, and a cached answer is used only while the generation it was read with is
    still the store's: a user removed or re-keyed by any process (the CLI, another
    controller on the same database) is refused on the very next request.
    """

    MAX_CACHED = 10_000

    def __init__(self, engine: Engine, protected: frozenset[str] = frozenset()) -> None:
        self.engine = engine
        self.protected = protected
        self._cache: dict[str, RegisteredUser | None] = {}
        self._generation = -1
        self._lock = threading.Lock()

    def lookup(self, name: str) -> RegisteredUser | None:
        generation = current_generation(self.engine, USERS)
        with self._lock:
            if generation == self._generation and name in self._cache:
                return self._cache[name]
        with read_transaction(self.engine) as conn:
            # The row and the generation from one snapshot, so the answer belongs to it.
            generation = read_generation(conn, USERS)
            row = conn.execute(select(_users).where(_users.c.name == name)).first()
        user = None
        if row is not None:
            user = RegisteredUser(row.name, row.project, row.role, row.public_key)
        with self._lock:
            if generation > self._generation:
                self._cache = {}
                self._generation = generation
            if generation == self._generation:
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.clear()
                self._cache[name] = user
        return user

    def register(
        self, name: str, project: str, role: str, public_key: str, *, replace: bool = False
    ) -> UserRecord:
        """Add a user (or, with ``replace``, change its key, role or project).

        A new user gets a uuid that stays with it through every later change; its
        project is recorded (with a uuid of its own) on first use.
        """
        require_printable("user name", name)
        require_printable("project", project)
        check_project_id(project)
        try:
            user = RegisteredUser(name, project, role, public_key)  # type: ignore[arg-type]
        except (InvalidUserName, InvalidPublicKey, ValueError) as exc:
            raise InvalidRequest(str(exc), name=name, role=role) from exc
        now = datetime.now(UTC)
        with write_transaction(self.engine) as conn:
            exists = conn.execute(select(_users.c.name).where(_users.c.name == name)).first()
            if exists is not None and not replace:
                raise Conflict(f"user {name!r} is already registered", name=name)
            values = {"project": user.project, "role": user.role, "public_key": user.public_key}
            ensure_project(conn, user.project)
            if exists is None:
                conn.execute(
                    insert(_users).values(
                        name=name, uuid=str(uuidlib.uuid4()), created_at=now, **values
                    )
                )
            else:
                conn.execute(update(_users).where(_users.c.name == name).values(**values))
            bump_generation(conn, USERS)
        return self.get(name)

    def get(self, name: str) -> UserRecord:
        with read_transaction(self.engine) as conn:
            row = conn.execute(_with_project_uuid().where(_users.c.name == name)).first()
        if row is None:
            raise NotFound(f"user {quoted(name)} does not exist", name=name)
        return _record(row)

    def list_all(self) -> list[UserRecord]:
        with read_transaction(self.engine) as conn:
            rows = conn.execute(_with_project_uuid().order_by(_users.c.name))
            return [_record(r) for r in rows]

    def delete(self, name: str) -> None:
        if name in self.protected:
            raise Conflict(
                f"user {name!r} holds the admin key of this controller and cannot be removed",
                name=name,
            )
        with write_transaction(self.engine) as conn:
            if conn.execute(delete(_users).where(_users.c.name == name)).rowcount == 0:
                raise NotFound(f"user {quoted(name)} does not exist", name=name)
            bump_generation(conn, USERS)


def _with_project_uuid() -> Any:
    return select(_users, _projects.c.uuid.label("project_uuid")).outerjoin(
        _projects, _projects.c.name == _users.c.project
    )


def _record(row: Any) -> UserRecord:
    created = row.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return UserRecord(
        name=row.name,
        uuid=row.uuid,
        project=row.project,
        project_uuid=row.project_uuid or "",
        role=row.role,
        public_key=row.public_key,
        created_at=created,
    )
