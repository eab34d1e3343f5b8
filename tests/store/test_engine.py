"""SQLite write transactions: concurrent writers all commit, queued in arrival order."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from wattvisor.store import make_engine, migrate, read_transaction, write_transaction
from wattvisor.store.engine import WriterQueue


def test_concurrent_sqlite_writers_all_commit_and_lose_no_update(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(store_url)
    engine = make_engine(store_url)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(20):
                with write_transaction(engine) as conn:
                    value = conn.execute(
                        text("SELECT value FROM placement_sequence WHERE id = 1")
                    ).scalar_one()
                    conn.execute(
                        text("UPDATE placement_sequence SET value = :v WHERE id = 1"),
                        {"v": value + 1},
                    )
        except BaseException as exc:
            errors.append(exc)

    try:
        with read_transaction(engine) as conn:
            before = conn.execute(text("SELECT value FROM placement_sequence")).scalar_one()
        threads = [threading.Thread(target=writer) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with read_transaction(engine) as conn:
            after = conn.execute(text("SELECT value FROM placement_sequence")).scalar_one()
    finally:
        engine.dispose()
    assert errors == []
    assert after - before == 400


def _wait_until_queued(queue: WriterQueue, count: int) -> None:
    deadline = time.monotonic() + 10
    while queue.queued() < count:
        assert time.monotonic() < deadline, "writer never queued"
        time.sleep(0.001)


def test_sqlite_writers_get_the_lock_in_the_order_they_asked() -> None:
    queue = WriterQueue()
    order: list[int] = []

    def writer(index: int) -> None:
        with queue:
            order.append(index)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(5)]
    with queue:
        for i, t in enumerate(threads):
            t.start()
            _wait_until_queued(queue, i + 1)
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3, 4]
    assert queue.queued() == 0


def test_writer_queue_is_reentrant_for_one_thread() -> None:
    queue = WriterQueue()
    with queue, queue:
        pass
    done = threading.Event()

    def other() -> None:
        with queue:
            done.set()

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert done.is_set()
