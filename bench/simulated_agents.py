"""Many ``wattvisor agent``s in one process, for the fleet bench only (never shipped).

Each simulated agent is the product's own agent parts without a machine under them:

- its own host key and cluster trust (:class:`AgentCredentials`), joined through the
  real flow: an admin's ``POST /v1/hosts/join-tokens`` for a token of its own, then
  ``POST /v1/hosts/join`` with the facts :func:`join_facts` reads from its host;
- its own libvirt connection: a test-driver node file of its own
  (``test:///<dir>/node-N.xml``), so it has its own domains, its own domain names
  and its own host UUID (derived from the URI); the libvirt test driver does in
  memory what QEMU would do;
- the agent's HTTP app (:func:`create_agent_app` with the controller-token check)
  over a :class:`LocalHostClient` whose image files come from the controller with the
  host's token, as a real agent's do;
- the agent's heartbeat (:meth:`AgentCredentials.heartbeat`, which also rewrites
  ``trust.json``) with its domain states when they changed, as the real agent sends
  them, and an :class:`EnergyPusher` sending with :func:`http_sender`, each
  agent with an ``httpx.Client`` of its own (its own connection to the controller).

What is shared, and why the figures stay honest: the agents of one process answer on
one listening socket, told apart by a path prefix (``/agents/N``): the controller still
makes one HTTP request per host call, to the URL that host joined with. Heartbeats and
pushes run on a bounded thread pool driven by one timer instead of two threads per
agent; how late each one started is recorded, so a process that cannot keep up shows
in the report. No energy sampler runs: before each push an agent queues the samples
(one per ``SAMPLE_S``) a sampler would have taken, listing the domains its libvirt
connection runs.

Run as ``python -m bench.simulated_agents agents <json>`` (see :func:`serve_agents`):
it builds its agents, serves them and prints ``ready``; on ``go`` it joins them all and
prints ``joined <over HTTP> <seconds> <by service call> <seconds> <failures>``, then
heartbeats and pushes until ``stop``, and prints one JSON line of what it measured.
"""

from __future__ import annotations

import heapq
import json
import random
import secrets
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from wattvisor.agent.app import create_agent_app
from wattvisor.agent.credentials import (
    AgentCredentials,
    join_cluster,
    make_controller_dependency,
)
from wattvisor.agent.energy_push import EnergyPusher, http_sender
from wattvisor.agent.join_facts import join_facts
from wattvisor.compute.local_host import LocalHostClient
from wattvisor.config.settings import HostSettings
from wattvisor.energy.fleet_samples import HostSample, ServerSample
from wattvisor.host.driver import HostDriver
from wattvisor.host.image_fetch import ControllerImages

SAMPLE_S = 2.0
"""A sampler's interval (``energy.interval_s``'s default): samples per push = push / this."""
NODE_XML = (
    "<node><cpu><mode>fixed</mode><nodes>1</nodes><sockets>1</sockets><cores>32</cores>"
    "<threads>1</threads><active>32</active><mhz>2000</mhz><model>x86_64</model></cpu>"
    "<memory>67108864</memory></node>"
)
"""Each simulated host: 32 CPUs, 64 GiB."""

Scope = MutableMapping[str, Any]


@dataclass
class Record:
    kind: str
    at: float
    """Wall-clock time the call started."""
    ms: float
    ok: bool
    late_ms: float = 0.0


@dataclass
class SimulatedAgent:
    index: int
    name: str
    url: str
    credentials: AgentCredentials
    driver: HostDriver
    host: LocalHostClient
    http: httpx.Client
    pusher: EnergyPusher | None = None
    energy_total: float = 0.0
    last_sample: float = 0.0
    joined: bool = False
    reported: dict[str, str] | None = None
    """The domain states the controller last took with a heartbeat (sent when changed)."""
    _send: Callable[[Sequence[HostSample]], object] | None = field(default=None, repr=False)


class AgentRouter:
    """One listening socket for many agents: ``/agents/<n>/...`` goes to agent n's app
    (with the prefix removed), and each host call's time is recorded."""

    def __init__(self, apps: dict[str, Any], records: list[Record], lock: threading.Lock):
        self.apps = apps
        self.records = records
        self.lock = lock

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        parts = scope["path"].split("/", 3)  # "", "agents", n, rest
        app = self.apps.get(parts[2]) if len(parts) == 4 and parts[1] == "agents" else None
        if app is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        path = "/" + parts[3]
        started, at = time.perf_counter(), time.time()
        status = 0

        async def timed_send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await app({**scope, "path": path, "raw_path": path.encode()}, receive, timed_send)
        method = path.rsplit("/", 1)[-1]
        record = Record(f"host:{method}", at, (time.perf_counter() - started) * 1e3, status < 400)
        with self.lock:
            self.records.append(record)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def build_agents(root: Path, first: int, count: int, base_url: str) -> list[SimulatedAgent]:
    """``count`` agents numbered from ``first``, each with its own node file, libvirt
    connection, data directory and host key; none has joined yet."""
    tls = ssl.create_default_context()  # one context for every client: making one costs
    agents = []
    for n in range(first, first + count):
        home = root / f"agent-{n:04d}"
        home.mkdir(parents=True)
        node = home / "node.xml"
        node.write_text(NODE_XML)
        driver = HostDriver(HostSettings(virt_type="qemu"), home / "data", uri=f"test://{node}")
        credentials = AgentCredentials(home / "agent")
        credentials.ensure_host_key()
        agents.append(
            SimulatedAgent(
                index=n,
                name=f"sim-{n:04d}-{secrets.token_hex(3)}",
                url=f"{base_url}/agents/{n}",
                credentials=credentials,
                driver=driver,
                host=LocalHostClient(driver),
                http=httpx.Client(timeout=30.0, verify=tls),
            )
        )
    return agents


def join(agent: SimulatedAgent, controller: str, admin_token: str) -> None:
    """The real join: a join token of its own from the admin, then the join itself."""
    issued = agent.http.post(
        f"{controller}/v1/hosts/join-tokens",
        json={"ttl": "1h"},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    if issued.status_code != 201:
        raise RuntimeError(f"join token refused: {issued.status_code} {issued.text[:200]}")
    facts = join_facts(agent.host, [agent.url], name=agent.name)
    facts["energy_source"] = "estimate"
    join_cluster(agent.credentials, agent.http, controller, issued.json()["token"], facts)
    _joined(agent)


def provision(agent: SimulatedAgent, trust: Any, controller: str) -> None:
    """A join by service call instead of HTTP: the same join token, checks and store
    writes (:meth:`HostTrust.join`, run in this process on the shared store), for the
    hosts beyond those that join over HTTP, whose join rate is measured apart."""
    from datetime import timedelta

    from wattvisor.api.host_trust_routes import HostTrustAnswer
    from wattvisor.auth import Principal
    from wattvisor.compute.host_trust import JoinRequest
    from wattvisor.host.driver import Inventory

    issued = trust.create_join_token(Principal("admin", "admin", "admin"), timedelta(hours=1))
    facts = join_facts(agent.host, [agent.url], name=agent.name)
    inventory = facts["inventory"]
    request = JoinRequest(
        host_id=facts["id"], name=facts["name"], libvirt_uri=facts["libvirt_uri"],
        traits=frozenset(facts["traits"]),
        inventory=Inventory(inventory["VCPU"], inventory["MEMORY_MB"], inventory["DISK_GB"]),
        energy_source="estimate", addresses=tuple(facts["addresses"]),
        public_key=agent.credentials.public_key(),
    )  # fmt: skip
    answer = trust.join(trust.join_verifier().verify(issued.token), request)
    agent.credentials.learn(HostTrustAnswer.of(answer).model_dump(mode="json"), controller)
    _joined(agent)


def _joined(agent: SimulatedAgent) -> None:
    trust = agent.credentials.trust()
    agent.host.image_sources = ControllerImages(
        trust.controller_url, agent.credentials.host_token, client=agent.http
    )
    agent._send = http_sender(
        agent.http, trust.controller_url, trust.host_id, agent.credentials.host_token
    )
    agent.pusher = EnergyPusher(lambda: None, agent._send, batch_samples=60)
    agent.last_sample = time.time() - 10.0
    agent.joined = True


def queue_samples(agent: SimulatedAgent) -> None:
    """The samples a sampler would have taken since the last push, listing the domains
    this host runs (their uuids are the servers' uuids)."""
    assert agent.pusher is not None
    now = time.time()
    servers = sorted(agent.host.domain_states())
    while agent.last_sample + SAMPLE_S <= now:
        agent.last_sample += SAMPLE_S
        watts = 120.0 + 10.0 * len(servers)
        joules = watts * SAMPLE_S
        agent.energy_total += joules
        agent.pusher.offer(
            HostSample(
                agent.last_sample, SAMPLE_S, "estimate", False, watts, joules, agent.energy_total,
                tuple(ServerSample(s, 10.0, 20.0, 20.0) for s in servers),
            )
        )  # fmt: skip


class Beats:
    """Heartbeats and pushes of every joined agent on a bounded pool, from one timer."""

    def __init__(
        self,
        agents: list[SimulatedAgent],
        heartbeat_s: float,
        push_s: float,
        threads: int,
        records: list[Record],
        lock: threading.Lock,
    ) -> None:
        self.agents = agents
        self.periods = {"heartbeat": heartbeat_s, "push": push_s}
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="sim-beat")
        self.records = records
        self.lock = lock
        self.stop = threading.Event()
        self.timer = threading.Thread(target=self._run, name="sim-timer", daemon=True)

    def start(self) -> None:
        self.timer.start()

    def _one(self, agent: SimulatedAgent, kind: str, due: float) -> None:
        at = time.time()
        late = (time.monotonic() - due) * 1e3
        started = time.perf_counter()
        ok = True
        try:
            if kind == "heartbeat":
                states = agent.host.domain_states()
                changed = states if states != agent.reported else None
                agent.credentials.heartbeat(agent.http, None, changed)
                if changed is not None:
                    agent.reported = changed
            else:
                assert agent.pusher is not None
                queue_samples(agent)
                ok = agent.pusher.flush()
        except Exception:
            ok = False
        record = Record(kind, at, (time.perf_counter() - started) * 1e3, ok, late)
        with self.lock:
            self.records.append(record)

    def _run(self) -> None:
        now = time.monotonic()
        due: list[tuple[float, int, str]] = []
        for i, agent in enumerate(self.agents):
            if agent.joined:
                for kind, period in self.periods.items():
                    due.append((now + random.uniform(0, period), i, kind))
        heapq.heapify(due)
        while due and not self.stop.is_set():
            when, i, kind = due[0]
            wait = when - time.monotonic()
            if wait > 0:
                self.stop.wait(min(wait, 0.5))
                continue
            heapq.heappop(due)
            self.pool.submit(self._one, self.agents[i], kind, when)
            period = self.periods[kind]
            heapq.heappush(due, (when + period * random.uniform(0.95, 1.05), i, kind))

    def close(self) -> None:
        self.stop.set()
        self.timer.join(5)
        self.pool.shutdown(wait=True, cancel_futures=True)


def serve_agents(raw: str) -> None:
    """One agent process: ``raw`` is JSON with ``root``, ``first``, ``count``,
    ``controller``, ``admin_token``, ``heartbeat_s``, ``push_s``, ``threads``,
    ``join_threads``, ``http_joins`` (how many join over HTTP; the others by
    :func:`provision`) and ``controller_config`` (its settings file, for those)."""
    cfg = json.loads(raw)
    records: list[Record] = []
    lock = threading.Lock()
    port = _free_port()
    agents = build_agents(Path(cfg["root"]), cfg["first"], cfg["count"], f"http://127.0.0.1:{port}")
    apps = {
        str(a.index): create_agent_app(a.host, make_controller_dependency(a.credentials))
        for a in agents
    }
    server = uvicorn.Server(
        uvicorn.Config(
            AgentRouter(apps, records, lock), host="127.0.0.1", port=port,
            log_level="critical", lifespan="off",
        )
    )  # fmt: skip
    served = threading.Thread(target=server.run, name="sim-uvicorn", daemon=True)
    served.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the agents' listener did not start within 60 s")
        time.sleep(0.02)
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    over_http, rest = agents[: cfg["http_joins"]], agents[cfg["http_joins"] :]
    started = time.perf_counter()
    failures: list[str] = []
    with ThreadPoolExecutor(cfg["join_threads"]) as pool:
        futures = [pool.submit(join, a, cfg["controller"], cfg["admin_token"]) for a in over_http]
        for future in futures:
            try:
                future.result(timeout=600)
            except Exception as exc:
                failures.append(str(exc)[:200])
    http_s = time.perf_counter() - started
    if rest:
        from wattvisor.allinone import build_host_trust
        from wattvisor.config import load_settings
        from wattvisor.placement import Placement
        from wattvisor.store import make_engine

        settings = load_settings(cfg["controller_config"])
        engine = make_engine(settings.store_url)
        trust, _notes = build_host_trust(settings, engine, Placement(engine))
        with ThreadPoolExecutor(cfg["join_threads"]) as pool:
            futures = [pool.submit(provision, a, trust, cfg["controller"]) for a in rest]
            for future in futures:
                try:
                    future.result(timeout=600)
                except Exception as exc:
                    failures.append(str(exc)[:200])
        engine.dispose()
    joined = sum(a.joined for a in over_http)
    provisioned = sum(a.joined for a in rest)
    print(
        f"joined {joined} {http_s:.2f} {provisioned} {time.perf_counter() - started - http_s:.2f} "
        f"{len(failures)}",
        flush=True,
    )
    if failures:
        print(f"join failure: {failures[0]}", file=sys.stderr, flush=True)
    beats = Beats(agents, cfg["heartbeat_s"], cfg["push_s"], cfg["threads"], records, lock)
    beats.start()
    sys.stdin.readline()  # "stop"
    beats.close()
    server.should_exit = True
    served.join(30)
    for a in agents:
        a.http.close()
        a.driver.close()
    with lock:
        out = [[r.kind, round(r.at, 3), round(r.ms, 2), r.ok, round(r.late_ms, 1)] for r in records]
    print(json.dumps({"records": out, "join_failures": failures[:5]}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "agents":
        serve_agents(sys.argv[2])
    else:
        raise SystemExit("usage: python -m bench.simulated_agents agents <json>")
