"""Stable uuids of users and projects: what a guest's metadata says owns it.

Users and projects are known by names people choose; a name can be given up and
taken again by someone else, so systems that outlive a name (the domain XML on a
host, exported metrics, another cloud's records) hold the uuid, as Nova's
``<owner><user uuid=...>name</user>`` does. A user's uuid is given when the user
is registered; a project's the first time its name is used, by one
``INSERT ... ON CONFLICT DO NOTHING`` on a unique name, so two first uses racing
(in one process or two, on SQLite or PostgreSQL) end with one uuid. Neither ever
changes afterwards.
"""

from __future__ import annotations

import threading
import uuid as uuidlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from wattvisor.compute.identifiers import check_project_id
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import ProjectRow, UserRow

_projects = cast(Table, ProjectRow.__table__)
_users = cast(Table, UserRow.__table__)

UNREGISTERED_USER_NS = uuidlib.UUID("8a1b5a4e-3d0c-5f0e-9a57-7761747476a1")
"""Namespace of the name-derived uuid a user name gets when it is not registered.

Only the compute service driven directly (not through the API, which knows
registered users only) acts for such names; the uuid is the same on every call."""


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    name: str
    uuid: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Owner:
    """Who owns a server, by name and by uuid."""

    user: str
    user_uuid: str
    project: str
    project_uuid: str


def ensure_project(conn: Connection, name: str) -> str:
    """The uuid of project ``name``, recorded now if this is its first use (in ``conn``'s
    transaction: a user registered with a new project commits both or neither)."""
    found = conn.execute(select(_projects.c.uuid).where(_projects.c.name == name)).scalar()
    if found is not None:
        return str(found)
    values = {"name": name, "uuid": str(uuidlib.uuid4()), "created_at": datetime.now(UTC)}
    dialect_insert: Any = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        dialect_insert(_projects).values(**values).on_conflict_do_nothing(index_elements=["name"])
    )
    # Ours, or the one a concurrent first use wrote first.
    return str(conn.execute(select(_projects.c.uuid).where(_projects.c.name == name)).scalar_one())


class IdentityStore:
    """Project records and owner lookups over the store.

    A project's record never changes once written (and is never removed), so records
    read once are kept in memory; first uses in this process take turns, so racing
    callers here cost one write, not one each (other processes are settled by the
    unique name).
    """

    MAX_CACHED = 10_000

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, ProjectRecord] = {}
        self._first_use = threading.Lock()

    def project(self, name: str) -> ProjectRecord:
        """Project ``name`` with its uuid, recorded on first use."""
        found = self._cache.get(name)
        if found is not None:
            return found
        check_project_id(name)
        row = self._read(name)
        if row is None:
            with self._first_use:
                row = self._read(name)
                if row is None:
                    with write_transaction(self.engine) as conn:
                        ensure_project(conn, name)
                        row = conn.execute(select(_projects).where(_projects.c.name == name)).one()
        record = _project(row)
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.clear()
        self._cache[name] = record
        return record

    def _read(self, name: str) -> Any:
        with read_transaction(self.engine) as conn:
            return conn.execute(select(_projects).where(_projects.c.name == name)).first()

    def projects(self) -> list[ProjectRecord]:
        with read_transaction(self.engine) as conn:
            return [_project(r) for r in conn.execute(select(_projects).order_by(_projects.c.name))]

    def owner(self, user: str, project: str) -> Owner:
        """Names and uuids of a server's owner; the project is recorded on first use."""
        project_uuid = self.project(project).uuid
        with read_transaction(self.engine) as conn:
            user_uuid = conn.execute(select(_users.c.uuid).where(_users.c.name == user)).scalar()
        if user_uuid is None:
            user_uuid = str(uuidlib.uuid5(UNREGISTERED_USER_NS, user))
        return Owner(user=user, user_uuid=str(user_uuid), project=project,
                     project_uuid=project_uuid)  # fmt: skip


def _project(row: Any) -> ProjectRecord:
    created = row.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return ProjectRecord(name=row.name, uuid=row.uuid, created_at=created)
