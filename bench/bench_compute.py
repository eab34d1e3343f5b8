"""Server create → ACTIVE on ``test:///default``: 1,000 creates from 20 concurrent clients.

Goal: ≥ 100 creates/s and p99 ≤ 250 ms. Two layers are measured, each run on a fresh
data directory (``test:///default`` keeps its domains per process, so the service
runs delete their servers afterwards):

- HTTP: the real ``wattvisor up`` app (``AllInOne.build``, started, INFO logging
  through the same Rich handler ``up`` uses, here writing to /dev/null) served by
  uvicorn in a child process, so that the clients do not share its interpreter; the
  child freezes its start-up heap as ``up`` does. Twenty threads, each on its own
  keep-alive connection (:mod:`bench.keepalive_client`, ``http.client``: ``httpx``
  spent 4 ms of CPU per request in this process, on the two cores the server uses),
  post ``POST /v1/servers`` with a member token, as a user would. Each client opens
  its connection (one ``GET /v1/flavors``) before the clock starts.
- Service: ``ServerService.create`` called from twenty threads in this process
  (no HTTP, no auth), the same app otherwise.

Two load shapes: *burst*, each client posts its 50 creates back to back (the API
accepts faster than servers build, so create → ACTIVE mostly measures the queue of
accepted builds); *create+wait*, each client waits for its server to leave BUILD
before the next create (HTTP: ``GET /v1/servers/{id}?wait_s=``, or polling every
``POLL_S`` to show what polling costs the server).

Both layers see the same load: twenty clients, each waiting for its answer before the
next request, on the same kind of store. CPU per create is printed for each process
(the HTTP client's own share separately): on a shared machine the CPU a create costs
moves less than the creates per second.

Figures: accepted/s (creates answered per second), ACTIVE/s (servers ACTIVE per
second from the first request to the last server becoming ACTIVE), request latency
p50/p99 (client side), create → ACTIVE p50/p99 from the server's own ``created_at``
and ``updated_at`` (set when the status became ACTIVE), and errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

CREATES = 1_000
CLIENTS = 20
SETTLE_TIMEOUT_S = 120.0
START_TIMEOUT_S = 300.0
"""The bench server's start (imports included) took over 120 s on a loaded machine."""
POLL_S = 0.01
FLAVOR = "bench"


def _settings(data_dir: Path, port: int = 0) -> Any:
    from wattvisor.config import load_settings

    return load_settings(
        data_dir=data_dir,
        host={
            "libvirt_uri": "test:///default",
            "virt_type": "qemu",
            "instance_name_template": f"wvbench-{secrets.token_hex(3)}-%05x",
            # Room for 1,000 small servers on the test driver's 16 CPUs and 3 GiB.
            "cpu_allocation_ratio": 100.0,
            "ram_allocation_ratio": 20.0,
        },
        energy={"source": "model"},
        compute={"ready_image": False},
        api={"host": "127.0.0.1", "port": port or 8774},
    )


@contextlib.contextmanager
def _up_logging() -> Iterator[None]:
    """INFO through a RichHandler as ``wattvisor up`` configures it, printed to /dev/null."""
    from rich.console import Console
    from rich.logging import RichHandler

    with open(os.devnull, "w") as sink:
        handler = RichHandler(console=Console(file=sink), show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)


def _prepare_catalog(node: Any, data_dir: Path) -> None:
    kernel = data_dir / "vmlinuz"
    kernel.write_bytes(b"kernel")  # the test driver defines and starts, never boots
    node.compute.catalog.create_flavor(FLAVOR, 1, 16, 0)
    node.compute.catalog.create_image("kernel", kernel_path=str(kernel), cmdline="quiet")


# -- figures ---------------------------------------------------------------------------


@dataclass
class Figures:
    started: float
    accepted_at: float = 0.0
    request_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    build_s: list[float] = field(default_factory=list)
    last_active: float = 0.0
    not_active: dict[str, int] = field(default_factory=dict)
    observed_s: list[float] = field(default_factory=list)
    warm_s: list[float] = field(default_factory=list)
    cpu_s: float = float("nan")
    """CPU of the process serving the creates during the timed creates."""
    client_cpu_s: float = float("nan")
    """CPU of the clients' process (HTTP only; the service's clients are its own threads)."""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _print(label: str, f: Figures) -> None:
    """One load shape's figures; the latency goal applies to create+wait only (in a burst,
    create -> ACTIVE is mostly the time spent queued behind earlier accepted creates)."""
    latency_note = "(goal p99 <= 250 ms)" if f.observed_s else "(queue included)"
    accepted = len(f.request_s)
    active = len(f.build_s)
    settled = (
        f"; {active} ACTIVE in {f.last_active - f.started:.2f} s = "
        f"{active / max(1e-9, f.last_active - f.started):.0f}/s (goal >= 100/s)"
        if active
        else " (not waited for ACTIVE)"
    )
    print(
        f"   {label}: {accepted} accepted in {f.accepted_at - f.started:.2f} s = "
        f"{accepted / (f.accepted_at - f.started):.0f}/s{settled}"
    )
    print(
        f"      request p50 {_pct(f.request_s, 0.5) * 1e3:.1f} ms, "
        f"p99 {_pct(f.request_s, 0.99) * 1e3:.1f} ms; create -> ACTIVE (server clock) p50 "
        f"{_pct(f.build_s, 0.5) * 1e3:.1f} ms, p99 {_pct(f.build_s, 0.99) * 1e3:.1f} ms "
        f"{latency_note}; errors {len(f.errors)}"
        + (f", not ACTIVE {f.not_active}" if f.not_active else "")
    )
    if f.observed_s:
        print(
            f"      as the client sees it (POST sent -> ACTIVE seen): p50 "
            f"{_pct(f.observed_s, 0.5) * 1e3:.1f} ms, p99 {_pct(f.observed_s, 0.99) * 1e3:.1f} ms"
        )
    if f.warm_s:
        print(
            f"      before the clock: each client's first request (client built, connected, "
            f"GET /v1/flavors, {len(f.warm_s)} at once) p50 {_pct(f.warm_s, 0.5) * 1e3:.0f} ms, "
            f"max {max(f.warm_s) * 1e3:.0f} ms"
        )
    if f.cpu_s == f.cpu_s:
        per = 1e3 / max(1, accepted)
        client = (
            f", the clients' process {f.client_cpu_s * per:.2f} ms"
            if f.client_cpu_s == f.client_cpu_s
            else ""
        )
        print(f"      CPU per create: serving process {f.cpu_s * per:.2f} ms{client}")
    for error in sorted(set(f.errors))[:3]:
        print(f"      error: {error}")


def _drive(
    create: Callable[[int], str],
    wait: Callable[[str], None] | None,
    figures: Figures,
    warm: Callable[[], None] | None = None,
    server_cpu: Callable[[], float] = time.process_time,
) -> None:
    """``CLIENTS`` threads share ``CREATES`` calls of ``create(i)`` (returning the server
    id), each followed by ``wait(id)`` when given; records the creates' latencies.

    ``warm`` runs once in each thread before the clock starts (an HTTP client opens its
    connection there, as a long-lived client has already done). ``server_cpu`` reads the
    CPU time of the process serving the creates (this one by default)."""
    lock = threading.Lock()
    per_client = CREATES // CLIENTS
    ready = threading.Barrier(CLIENTS + 1)

    def client(index: int) -> None:
        if warm is not None:
            start = time.perf_counter()
            warm()
            with lock:
                figures.warm_s.append(time.perf_counter() - start)
        ready.wait()
        for n in range(per_client):
            start = time.perf_counter()
            try:
                server_id = create(index * per_client + n)
            except Exception as exc:
                with lock:
                    figures.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - start
            with lock:
                figures.request_s.append(elapsed)
            if wait is not None:
                try:
                    wait(server_id)
                except Exception as exc:
                    with lock:
                        figures.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                observed = time.perf_counter() - start
                with lock:
                    figures.observed_s.append(observed)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    ready.wait()
    figures.started = time.time()
    serving, own = server_cpu(), time.process_time()
    for t in threads:
        t.join()
    figures.accepted_at = time.time()
    figures.cpu_s = server_cpu() - serving
    if server_cpu is not time.process_time:
        figures.client_cpu_s = time.process_time() - own


def _settle(figures: Figures, servers: list[dict[str, Any]]) -> None:
    """Build times from each server's own timestamps (ISO strings or datetimes)."""
    for server in servers:
        if server["status"] != "ACTIVE":
            figures.not_active[server["status"]] = figures.not_active.get(server["status"], 0) + 1
            continue
        created, updated = (
            v if isinstance(v, datetime) else datetime.fromisoformat(v)
            for v in (server["created_at"], server["updated_at"])
        )
        figures.build_s.append((updated - created).total_seconds())
        figures.last_active = max(figures.last_active, updated.timestamp())


# -- HTTP --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _process_cpu(pid: int) -> Callable[[], float]:
    """A reader of the CPU time (user + system) process ``pid`` has used, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    return read


def _Server(config: Any) -> Any:
    """A uvicorn server that returns on SIGTERM instead of re-raising it (as ``up`` does)."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = signal.signal(
                signal.SIGTERM, lambda sig, frame: self.handle_exit(sig, frame)
            )
            try:
                yield
            finally:
                signal.signal(signal.SIGTERM, previous)

    return Server(config)


def serve(data_dir: Path, port: int) -> None:
    """The child process: ``wattvisor up``'s app on ``port`` with a bench flavor and image."""
    import uvicorn

    from wattvisor.allinone import AllInOne, freeze_startup_heap

    settings = _settings(data_dir, port)
    with _up_logging():
        node = AllInOne.build(settings)
        _prepare_catalog(node, data_dir)
        node.start()
        freeze_startup_heap()
        server = _Server(uvicorn.Config(node.app, host="127.0.0.1", port=port, log_level="warning"))
        profile_to = os.environ.get("WATTVISOR_BENCH_PROFILE")
        profiler = None
        if profile_to:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        try:
            server.run()
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile_to)
            node.stop()


def _http(waiting: bool, *, long_poll: bool = True, settle: bool = True) -> Figures:
    """``waiting``: each client waits for ACTIVE, with ``GET ...?wait_s=`` when
    ``long_poll``, else by polling every ``POLL_S``; without ``settle`` only the
    creates are measured (no ACTIVE figures)."""
    import httpx
    from biscuit_auth import KeyPair

    from bench.keepalive_client import KeepAliveClient
    from wattvisor.auth import mint_token, mint_token_from_file

    with tempfile.TemporaryDirectory(prefix="wattvisor-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        port = _free_port()
        command = [sys.executable, "-m", "bench.bench_compute", "serve", str(data_dir), str(port)]
        child = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1])
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    httpx.get(base + "/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    if child.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the bench server did not start") from None
                    time.sleep(0.1)
            admin_token = mint_token_from_file(
                _settings(data_dir).admin_key_path, "admin", timedelta(hours=1)
            )
            keys = KeyPair()
            made = httpx.post(
                base + "/v1/users",
                json={"name": "bench", "project": "bench", "role": "member",
                      "public_key": repr(keys.public_key)},
                headers={"Authorization": f"Bearer {admin_token}"},
            )  # fmt: skip
            made.raise_for_status()
            token = mint_token(keys.private_key, "bench", timedelta(hours=1))
            headers = {"Authorization": f"Bearer {token}"}
            local = threading.local()
            wait_params = {"wait_s": 30} if long_poll else {}

            def client() -> KeepAliveClient:
                if getattr(local, "client", None) is None:
                    local.client = KeepAliveClient(base, headers, timeout=30)
                return cast(KeepAliveClient, local.client)

            def create(i: int) -> str:
                response = client().post(
                    "/v1/servers", json={"name": f"b{i}", "flavor": FLAVOR, "image": "kernel"}
                )
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code} {response.text[:200]}")
                return str(response.json()["id"])

            def wait(server_id: str) -> None:
                deadline = time.monotonic() + SETTLE_TIMEOUT_S
                while time.monotonic() < deadline:
                    body = client().get(f"/v1/servers/{server_id}", params=wait_params).json()
                    if body["status"] != "BUILD":
                        return
                    if not wait_params:
                        time.sleep(POLL_S)
                raise TimeoutError(f"server {server_id} still BUILD")

            def warm() -> None:
                client().get("/v1/flavors").raise_for_status()

            figures = Figures(started=0.0)
            _drive(create, wait if waiting else None, figures, warm, _process_cpu(child.pid))
            if not settle:
                return figures
            with httpx.Client(base_url=base, headers=headers, timeout=30) as poll:
                deadline = time.monotonic() + SETTLE_TIMEOUT_S
                while True:
                    servers = poll.get("/v1/servers").json()
                    if all(s["status"] != "BUILD" for s in servers):
                        break
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
            _settle(figures, servers)
            return figures
        finally:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


# -- service layer -----------------------------------------------------------------------


def _service(waiting: bool, *, settle: bool = True) -> Figures:
    """Without ``settle`` only the creates are measured: the servers are left to the
    process's own ``test:///default``, which ends with it (``ratio`` runs nothing else on it)."""
    from wattvisor.allinone import AllInOne
    from wattvisor.auth import Principal

    with tempfile.TemporaryDirectory(prefix="wattvisor-bench-") as tmp, _up_logging():
        data_dir = Path(tmp) / "data"
        node = AllInOne.build(_settings(data_dir))
        try:
            _prepare_catalog(node, data_dir)
            node.start()
            servers = node.compute.servers
            principal = Principal(user="bench", project="bench", role="member")

            def create(i: int) -> str:
                return servers.create(principal, f"b{i}", FLAVOR, "kernel").uuid

            def wait(server_id: str) -> None:
                servers.wait(server_id, SETTLE_TIMEOUT_S)

            figures = Figures(started=0.0)
            _drive(create, wait if waiting else None, figures)
            if not settle:
                return figures
            records = servers.list_all(principal)
            for record in records:
                servers.wait(record.uuid, SETTLE_TIMEOUT_S)
            records = servers.list_all(principal)
            _settle(figures, [
                {"status": r.status, "created_at": r.created_at, "updated_at": r.updated_at}
                for r in records
            ])  # fmt: skip
            # test:///default outlives the app in this process: leave no domains behind.
            for record in records:
                servers.delete(principal, record.uuid)
            for record in records:
                servers.wait(record.uuid, SETTLE_TIMEOUT_S)
            return figures
        finally:
            node.stop()


def _ratio(service: Figures, http: Figures) -> None:
    """HTTP accepted/s over service accepted/s, with the machine reference beside it:
    absolute figures on a shared machine move by 2x from hour to hour, their ratio less."""
    from bench.__main__ import reference_ms

    def rate(f: Figures) -> float:
        return len(f.request_s) / max(1e-9, f.accepted_at - f.started)

    print(
        f"   side by side, burst: HTTP {rate(http):.0f} creates/s, service "
        f"{rate(service):.0f} creates/s: HTTP = {rate(http) / rate(service) * 100:.0f} % of "
        f"the service layer (goal >= 80 %); machine reference {reference_ms():.1f} ms"
    )

    def cpu_ms(f: Figures, seconds: float) -> float:
        return seconds / max(1, len(f.request_s)) * 1e3

    print(
        f"   CPU per create, burst: HTTP server {cpu_ms(http, http.cpu_s):.2f} ms (its clients "
        f"{cpu_ms(http, http.client_cpu_s):.2f} ms), service {cpu_ms(service, service.cpu_s):.2f}"
        f" ms: the service layer's CPU = {service.cpu_s / max(1e-9, http.cpu_s) * 100:.0f} % of "
        "the HTTP server's"
    )


def run_side_by_side() -> None:
    """Only the two burst figures and their ratio (``python -m bench.bench_compute ratio``)."""
    service = _service(waiting=False, settle=False)
    _print("service, burst", service)
    http = _http(waiting=False, settle=False)
    _print("HTTP, burst", http)
    _ratio(service, http)


def run() -> None:
    workers = _settings(Path(tempfile.gettempdir()) / "unused").compute.workers
    print(f"   {CREATES} creates from {CLIENTS} concurrent clients, test:///default, SQLite WAL, "
          f"{workers} compute workers")  # fmt: skip
    print("   burst: each client posts its creates back to back (create -> ACTIVE includes")
    print("   the queue of accepted builds); create+wait: each client waits for ACTIVE before")
    print(f"   its next create, by GET ?wait_s= or by polling every {POLL_S * 1e3:.0f} ms.")
    service_burst = _service(waiting=False)
    _print("service, burst", service_burst)
    _print("service, create+wait", _service(waiting=True))
    http_burst = _http(waiting=False)
    _print("HTTP, burst", http_burst)
    _ratio(service_burst, http_burst)
    _print("HTTP, create+wait (GET ?wait_s=)", _http(waiting=True))
    _print("HTTP, create+wait (polling)", _http(waiting=True, long_poll=False))


if __name__ == "__main__":
    if sys.argv[1:] == ["ratio"]:
        run_side_by_side()
    elif sys.argv[1:2] == ["serve"] and len(sys.argv) == 4:
        serve(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: python -m bench.bench_compute (ratio | serve DATA_DIR PORT)")
