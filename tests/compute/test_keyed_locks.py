"""Per-key locks: exclusive per key, independent across keys, and gone once unused."""

from __future__ import annotations

import threading

from wattvisor.compute.keyed_locks import KeyedLocks


def test_a_key_is_held_by_one_at_a_time_and_other_keys_are_free() -> None:
    locks = KeyedLocks()
    with locks.hold("a"):
        with locks.hold("a", blocking=False) as again:
            assert again is False
        with locks.hold("b", blocking=False) as other:
            assert other is True
        assert len(locks) == 1  # "b" went with its holder, "a" is still held


def test_entries_are_dropped_by_the_last_user_out() -> None:
    locks = KeyedLocks()
    lock = locks.lock("server")
    lock.acquire()
    waited = threading.Event()

    def wait_for_it() -> None:
        with locks.lock("server"):
            waited.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert not waited.wait(0.2)  # held: the waiter cannot get in
    lock.release()
    waiter.join(10)
    assert waited.is_set()
    for key in ("x", "y", "z"):
        with locks.lock(key):
            pass
    assert len(locks) == 0
