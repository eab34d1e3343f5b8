"""The agent's energy pusher: snapshots become samples with the interval's joules, a
hung or refusing controller never holds up sampling or later samples."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from telemetry.conftest import BUSY_VM, sampled_host
from wattvisor.agent.energy_push import EnergyPusher, PushRefused
from wattvisor.energy.fleet_samples import HostSample
from wattvisor.energy.snapshot import EnergySnapshot


def test_a_snapshot_becomes_one_sample_with_the_intervals_joules(tmp_path: Path) -> None:
    sampler = sampled_host(tmp_path)
    sent: list[HostSample] = []
    pusher = EnergyPusher(sampler.latest, lambda batch: sent.extend(batch))
    assert pusher.collect() is True
    assert pusher.collect() is False  # the same snapshot is queued once
    assert pusher.flush() is True
    [sample] = sent
    snapshot = sampler.latest()
    assert snapshot is not None
    assert sample.joules == pytest.approx(100.0) and sample.measured and sample.source == "rapl"
    busy = {s.uuid: s for s in sample.servers}[BUSY_VM]
    assert busy.joules == pytest.approx(snapshot.interval.vm_joules[BUSY_VM])
    assert busy.energy_joules_total == pytest.approx(snapshot.vms[BUSY_VM].energy_joules_total)


def _wait(condition: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_hung_controller_holds_up_neither_sampling_nor_collection(tmp_path: Path) -> None:
    sampler = sampled_host(tmp_path)
    first = sampler.latest()
    assert first is not None
    current: list[EnergySnapshot] = [first]
    release = threading.Event()
    sent: list[float] = []

    def hung_send(batch: Sequence[HostSample]) -> None:
        release.wait(30)
        sent.extend(s.taken_at for s in batch)

    pusher = EnergyPusher(
        lambda: current[-1], hung_send, poll_s=0.01, push_interval_s=0.01, batch_samples=100
    )
    pusher.start()
    try:
        _wait(lambda: pusher.stats().queued == 1, "the first sample was not queued")
        for i in range(1, 6):
            sampler.sample()  # the sampler itself is never touched by the push
            current.append(replace(first, taken_at=first.taken_at + i))
            _wait(lambda i=i: pusher.stats().queued >= i + 1 or sent, "a sample was not queued")
        assert not sent
        release.set()
        _wait(lambda: len(sent) == 6, "the backlog was not delivered")
    finally:
        release.set()
        pusher.stop()
    assert sent == sorted(sent)


def test_a_refused_batch_is_dropped_and_the_next_ones_still_go(tmp_path: Path) -> None:
    sampler = sampled_host(tmp_path)
    snapshot = sampler.latest()
    assert snapshot is not None
    delivered: list[float] = []

    def send(batch: Sequence[HostSample]) -> None:
        if batch[0].taken_at == snapshot.taken_at:
            raise PushRefused("400: samples[0].power_watts -1.0 is out of range")
        delivered.extend(s.taken_at for s in batch)

    pusher = EnergyPusher(lambda: None, send, batch_samples=1)
    for i in range(3):
        pusher.collect()
        pusher.offer(HostSample(snapshot.taken_at + i, 2.0, "rapl", True, 1.0, 2.0, 10.0 + i))
    assert pusher.flush() is True
    assert delivered == [snapshot.taken_at + 1, snapshot.taken_at + 2]
    assert pusher.stats().refused == 1
