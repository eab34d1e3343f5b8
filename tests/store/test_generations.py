"""The generation check's own connection lives only as long as its engine is in use."""

from __future__ import annotations

from support.fd_budget import open_descriptors
from wattvisor.store import make_engine
from wattvisor.store.generations import USERS, current_generation


def test_disposing_the_engine_closes_the_generation_checks_connection(store_url: str) -> None:
    before = open_descriptors()
    for _round in range(5):
        engine = make_engine(store_url)
        assert current_generation(engine, USERS) >= 0
        engine.dispose()
    # Each round held a database connection (a socket, or the file and its WAL) until
    # dispose; none may stay open after it.
    assert open_descriptors() - before == set()


def test_the_check_opens_a_new_connection_after_dispose(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        first = current_generation(engine, USERS)
        engine.dispose()
        assert current_generation(engine, USERS) == first
    finally:
        engine.dispose()
