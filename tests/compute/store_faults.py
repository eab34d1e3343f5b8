"""Make the real store refuse one kind of write, with a trigger (SQLite and PostgreSQL).

For proving that a step touching both a host and the store leaves nothing behind
when the store fails after the host did its part.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Engine, text

MESSAGE = "injected store failure"


@contextlib.contextmanager
def refused_writes(engine: Engine, table: str, event: str, when: str) -> Iterator[None]:
    """While inside, ``event`` (INSERT, UPDATE, DELETE) on ``table`` fails for each row
    matching the SQL condition ``when`` (on ``NEW``/``OLD``)."""
    if engine.dialect.name == "sqlite":
        create = [
            f"CREATE TRIGGER wv_refused BEFORE {event} ON {table} FOR EACH ROW WHEN {when} "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        ]
        drop = ["DROP TRIGGER wv_refused"]
    else:
        create = [
            "CREATE FUNCTION wv_refused() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$",
            f"CREATE TRIGGER wv_refused BEFORE {event} ON {table} FOR EACH ROW "
            f"WHEN ({when}) EXECUTE FUNCTION wv_refused()",
        ]
        drop = [f"DROP TRIGGER wv_refused ON {table}", "DROP FUNCTION wv_refused()"]
    with engine.begin() as conn:
        for statement in create:
            conn.execute(text(statement))
    try:
        yield
    finally:
        with engine.begin() as conn:
            for statement in drop:
                conn.execute(text(statement))
