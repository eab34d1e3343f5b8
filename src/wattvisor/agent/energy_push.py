"""The agent's energy push: its sampler's samples, in batches, to the controllers.

A collector thread reads the sampler's latest snapshot (a reference read: it never
waits for or delays a sample) and queues each new one; a sender thread pushes the
queue in order, oldest first, in batches of ``energy.push_batch_samples``. While the
controllers cannot be reached the queue is kept **in memory**, bounded by
``energy.push_backlog_samples`` (about an hour at the default 2 s interval): beyond
it the oldest samples are dropped and counted, so the agent's memory never grows with
an outage. The sender retries with exponential backoff (capped, with jitter) and
delivers the backlog in order once a controller answers. A batch the controller
refuses (4xx) can never succeed: it is dropped, logged and counted, so it cannot stall
every later sample. Re-sending a batch whose answer was lost is harmless: the
controller keys samples by (host, time).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from wattvisor.agent.credentials import AgentCredentials
from wattvisor.config.settings import EnergySettings
from wattvisor.energy.fleet_samples import HostSample, sample_of
from wattvisor.energy.snapshot import EnergySnapshot

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0


class PushRefused(Exception):
    """The controller refused the batch itself (4xx): sending it again cannot help."""


Sender = Callable[[Sequence[HostSample]], object]
"""Delivers one batch or raises: :class:`PushRefused` to drop it, anything else to retry."""


@dataclass(frozen=True, slots=True)
class PushStats:
    queued: int
    delivered: int
    dropped_backlog: int
    refused: int
    failures: int


class EnergyPusher:
    """Queues the sampler's snapshots and pushes them with ``send`` in order."""

    def __init__(
        self,
        latest: Callable[[], EnergySnapshot | None],
        send: Sender,
        *,
        poll_s: float = 1.0,
        push_interval_s: float = 10.0,
        batch_samples: int = 60,
        backlog_samples: int = 1800,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        if batch_samples < 1 or backlog_samples < 1:
            raise ValueError(
                f"batch_samples {batch_samples} and backlog_samples {backlog_samples} must be >= 1"
            )
        self._latest = latest
        self._send = send
        self.poll_s = poll_s
        self.push_interval_s = push_interval_s
        self.batch_samples = batch_samples
        self.max_backoff_s = max_backoff_s
        self._queue: deque[HostSample] = deque(maxlen=backlog_samples)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seen: EnergySnapshot | None = None
        self._threads: list[threading.Thread] = []
        self._delivered = self._dropped = self._refused = self._failures = 0

    @classmethod
    def from_settings(
        cls, settings: EnergySettings, latest: Callable[[], EnergySnapshot | None], send: Sender
    ) -> EnergyPusher:
        return cls(
            latest,
            send,
            poll_s=max(0.05, settings.interval_s / 2),
            push_interval_s=settings.push_interval_s,
            batch_samples=settings.push_batch_samples,
            backlog_samples=settings.push_backlog_samples,
        )

    # ----------------------------------------------------------------- collect

    def collect(self) -> bool:
        """Queue the sampler's latest snapshot if it is new; True when one was queued."""
        snapshot = self._latest()
        if snapshot is None or snapshot is self._seen:
            return False
        self._seen = snapshot
        self.offer(sample_of(snapshot))
        return True

    def offer(self, sample: HostSample) -> None:
        """Queue one sample; a full backlog drops its oldest."""
        with self._lock:
            if len(self._queue) == self._queue.maxlen:
                self._dropped += 1
            self._queue.append(sample)

    # -------------------------------------------------------------------- send

    def flush(self) -> bool:
        """Push queued samples, oldest first, until the queue is empty (True) or a push
        fails (False; the failed batch stays queued)."""
        while True:
            with self._lock:
                batch = [self._queue[i] for i in range(min(self.batch_samples, len(self._queue)))]
            if not batch:
                return True
            try:
                self._send(batch)
            except PushRefused as exc:
                log.warning(
                    "the controller refused %d energy samples, dropped: %s", len(batch), exc
                )
                with self._lock:
                    self._refused += len(batch)
                    self._pop(batch)
                continue
            except Exception as exc:
                with self._lock:
                    self._failures += 1
                log.info("energy push failed, kept for a retry: %s", exc)
                return False
            with self._lock:
                self._delivered += len(batch)
                self._pop(batch)

    def _pop(self, batch: list[HostSample]) -> None:
        # Drop what was sent; the backlog may have dropped some of it meanwhile.
        sent = {id(s) for s in batch}
        while self._queue and id(self._queue[0]) in sent:
            self._queue.popleft()

    def stats(self) -> PushStats:
        with self._lock:
            return PushStats(
                len(self._queue), self._delivered, self._dropped, self._refused, self._failures
            )

    # ---------------------------------------------------------------- schedule

    def start(self) -> None:
        """Run the collector and sender threads (daemons) until :meth:`stop`."""
        if self._threads:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(
                target=self._collect_loop, name="wattvisor-energy-collect", daemon=True
            ),
            threading.Thread(target=self._send_loop, name="wattvisor-energy-push", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop both threads; one last push of what is queued is tried first."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = []

    def _collect_loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.collect()
            except Exception:
                log.exception("reading the energy sampler failed")

    def _send_loop(self) -> None:
        delay = self.push_interval_s
        backoff = self.push_interval_s
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            stopping = self._stop.is_set()
            if self.flush():
                backoff = self.push_interval_s
                delay = self.push_interval_s
            else:
                backoff = min(self.max_backoff_s, backoff * 2)
                delay = backoff * random.uniform(0.8, 1.2)
            if stopping:
                return


def http_sender(
    client: httpx.Client, controller_url: str, host_id: str, token: Callable[[], str]
) -> Sender:
    """Push batches to ``POST /v1/hosts/{host_id}/energy`` signed with a fresh host token."""
    url = f"{controller_url.rstrip('/')}/v1/hosts/{host_id}/energy"

    def send(batch: Sequence[HostSample]) -> None:
        response = client.post(
            url,
            json={"samples": [s.to_json() for s in batch]},
            headers={"Authorization": f"Bearer {token()}"},
        )
        if response.status_code in (401, 408, 429) or response.status_code >= 500:
            raise RuntimeError(f"controller answered {response.status_code}: {response.text[:300]}")
        if response.status_code >= 400:
            raise PushRefused(f"controller answered {response.status_code}: {response.text[:300]}")

    return send


def start_energy_push(
    settings: EnergySettings,
    latest: Callable[[], EnergySnapshot | None],
    credentials: AgentCredentials,
    client: httpx.Client,
) -> EnergyPusher:
    """What the agent's main loop starts: push this host's samples to the controller it
    joined, with tokens of the host's own key. Stop it with :meth:`EnergyPusher.stop`."""
    trust = credentials.trust()
    pusher = EnergyPusher.from_settings(
        settings,
        latest,
        http_sender(client, trust.controller_url, trust.host_id, credentials.host_token),
    )
    pusher.start()
    return pusher
