"""The user and catalog caches never outlive a change, made here or by another process.

Every change bumps a generation row in the commit that makes it; a cache answers only
while the generation it was read with is still the store's. The races are reproduced
deterministically: a reader is held right after its store read (an engine event) while
a change lands, then let go to fill its cache.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from biscuit_auth import KeyPair
from sqlalchemy import Engine, event

from wattvisor.compute import NotFound
from wattvisor.compute.catalog import Catalog
from wattvisor.compute.users import UserStore
from wattvisor.store import make_engine

READER = "stalled-reader"
WAIT_S = 10.0


def _key() -> str:
    return repr(KeyPair().public_key)


@pytest.fixture
def engines(store_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one store: two controller processes sharing a database."""
    first, second = make_engine(store_url), make_engine(store_url)
    try:
        yield first, second
    finally:
        first.dispose()
        second.dispose()


@contextmanager
def held_after_reading(
    engine: Engine, table: str
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold the thread named READER right after its first SELECT from ``table`` ran.

    Yields (reached, release): ``reached`` is set once the reader is held; setting
    ``release`` lets it go on with what it read.
    """
    reached, release = threading.Event(), threading.Event()
    armed = [True]

    def after_execute(*args: Any) -> None:
        statement: str = args[2]
        if (
            armed[0]
            and threading.current_thread().name == READER
            and statement.lstrip().upper().startswith("SELECT")
            and f"FROM {table}" in statement
        ):
            armed[0] = False
            reached.set()
            release.wait(WAIT_S)

    event.listen(engine, "after_cursor_execute", after_execute)
    try:
        yield reached, release
    finally:
        release.set()
        event.remove(engine, "after_cursor_execute", after_execute)


def _in_reader(work: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        result["value"] = work()

    thread = threading.Thread(target=run, name=READER, daemon=True)
    thread.start()
    return thread, result


def test_user_deleted_while_a_lookup_is_under_way_stays_deleted(
    engines: tuple[Engine, Engine],
) -> None:
    engine, _ = engines
    UserStore(engine).register("alice", "proj-a", "member", _key())
    users = UserStore(engine)  # e.g. after a restart: alice is not cached yet
    with held_after_reading(engine, "users") as (reached, release):
        thread, result = _in_reader(lambda: users.lookup("alice"))
        assert reached.wait(WAIT_S), "the lookup never read the store"
        users.delete("alice")  # lands between the lookup's read and its cache write
        release.set()
        thread.join(WAIT_S)
    assert result["value"] is not None  # it read before the delete: fine for that request
    assert users.lookup("alice") is None  # but its answer must not outlive the delete


def test_flavor_deleted_while_the_catalog_loads_stays_deleted(
    engines: tuple[Engine, Engine],
) -> None:
    engine, _ = engines
    catalog = Catalog(engine)
    catalog.create_flavor("m1", 1, 256)
    with held_after_reading(engine, "flavors") as (reached, release):
        thread, result = _in_reader(catalog.flavors)
        assert reached.wait(WAIT_S), "the catalog never read the store"
        catalog.delete_flavor("m1")
        release.set()
        thread.join(WAIT_S)
    assert [f.name for f in result["value"]] == ["m1"]
    assert catalog.flavors() == []
    with pytest.raises(NotFound):
        catalog.flavor("m1")


def test_image_deleted_while_the_catalog_loads_stays_deleted(
    engines: tuple[Engine, Engine], tmp_path: Any
) -> None:
    engine, _ = engines
    catalog = Catalog(engine)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    catalog.create_image("linux", kernel_path=str(kernel))
    with held_after_reading(engine, "images") as (reached, release):
        thread, result = _in_reader(catalog.images)
        assert reached.wait(WAIT_S), "the catalog never read the store"
        catalog.delete_image("linux")
        release.set()
        thread.join(WAIT_S)
    assert [i.name for i in result["value"]] == ["linux"]
    with pytest.raises(NotFound):
        catalog.image("linux")


def test_user_changes_made_through_another_engine_are_seen_at_once(
    engines: tuple[Engine, Engine],
) -> None:
    here, there = UserStore(engines[0]), UserStore(engines[1])
    first_key, second_key = _key(), _key()
    assert here.lookup("bob") is None  # cached as unknown
    there.register("bob", "proj-b", "member", first_key)
    found = here.lookup("bob")
    assert found is not None and found.public_key == first_key
    there.register("bob", "proj-b", "member", second_key, replace=True)  # key rotation
    found = here.lookup("bob")
    assert found is not None and found.public_key == second_key
    there.delete("bob")
    assert here.lookup("bob") is None


def test_catalog_changes_made_through_another_engine_are_seen_at_once(
    engines: tuple[Engine, Engine], tmp_path: Any
) -> None:
    here, there = Catalog(engines[0]), Catalog(engines[1])
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    there.create_flavor("m1", 1, 256)
    there.create_image("linux", kernel_path=str(kernel))
    assert here.flavor("m1").vcpus == 1 and here.image("linux").boot == "kernel"  # now cached
    there.delete_flavor("m1")
    there.delete_image("linux")
    with pytest.raises(NotFound):
        here.flavor("m1")
    with pytest.raises(NotFound):
        here.image("linux")
    there.create_flavor("m1", 2, 512)  # the same name again, changed
    assert here.flavor("m1").vcpus == 2


def test_a_lost_store_connection_does_not_break_the_checks(postgres_server: Any) -> None:
    # The generation check keeps a connection open; a restarted server or a dropped
    # connection must cost one reconnect, not a failed request.
    from wattvisor.store import migrate

    url = postgres_server.create_database()
    migrate(url)
    engine = make_engine(url)
    try:
        users = UserStore(engine)
        users.register("alice", "proj-a", "member", _key())
        assert users.lookup("alice") is not None
        with engine.connect() as conn:
            killed = conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).scalar()
        assert killed
        assert users.lookup("alice") is not None
        users.delete("alice")
        assert users.lookup("alice") is None
    finally:
        engine.dispose()
