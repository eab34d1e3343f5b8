"""``/placement`` over HTTP against OpenStack Placement (on SQLite), same data, same queries.

OpenStack Placement runs from its own virtualenv (``.cache/placement-venv``, made on
first use with ``openstack-placement`` and ``gunicorn``), configured with SQLite and
``noauth2``, served by gunicorn on a loopback port. wattvisor's API runs under uvicorn
in its own process on a fresh SQLite store. Both get the same providers (VCPU,
MEMORY_MB, DISK_GB inventories, some traits, some allocations) through their HTTP APIs.

Loading is bounded by OpenStack Placement's write rate on SQLite (about a dozen
writes per second here, with "database is locked" answers retried): 10,000 providers
take it most of an hour. ``WATTVISOR_BENCH_PLACEMENT_SIZES=500`` measures one size.

Printed per size (500, then 10,000 providers): median and p95 of
``GET /allocation_candidates`` for both, their ratio and the load average; then
``PUT /allocations/{consumer}`` per second with 1 and 20 concurrent clients.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "placement-venv"
SIZES = tuple(
    int(size) for size in os.environ.get("WATTVISOR_BENCH_PLACEMENT_SIZES", "500,10000").split(",")
)
"""Provider counts measured in turn (each loads the difference into both systems)."""
SEED = 20261203
VERSION = "placement 1.39"
LOADERS = 8
START_TIMEOUT_S = 120.0
READ_ITERATIONS = 200
READ_BUDGET_S = 30.0
WRITE_BUDGET_S = 8.0
WRITE_MAX = 4_000
WRITERS = 20
LOCKED_RETRIES = 50
QUERIES = (
    ("3 classes, limit=1000", "resources=VCPU:1,MEMORY_MB:1024,DISK_GB:10&limit=1000"),
    ("3 classes + trait, limit=1000",
     "resources=VCPU:2,MEMORY_MB:2048,DISK_GB:20&required=HW_CPU_X86_AVX2&limit=1000"),
    ("3 classes, no limit", "resources=VCPU:1,MEMORY_MB:1024,DISK_GB:10"),
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2, headers={"X-Auth-Token": "admin"})
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"server for {url} did not start in {START_TIMEOUT_S:.0f} s")


@contextmanager
def _process(cmd: list[str], url: str, env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=False)
    try:
        _wait_up(url, proc)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ensure_placement_venv() -> Path:
    """The virtualenv holding OpenStack Placement and gunicorn, made when missing."""
    if not (VENV / "bin" / "placement-manage").exists() or not (VENV / "bin" / "gunicorn").exists():
        print(f"   installing openstack-placement into {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [
                str(VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "openstack-placement",
                "gunicorn",
            ],
            check=True,
        )
    return VENV


@contextmanager
def openstack_placement(tmp: Path) -> Iterator[str]:
    """OpenStack Placement on SQLite with ``noauth2``, served by gunicorn; yields its URL."""
    venv = ensure_placement_venv()
    conf_dir = tmp / "placement-conf"
    conf_dir.mkdir()
    (conf_dir / "placement.conf").write_text(
        "[DEFAULT]\ndebug = False\n"
        "[api]\nauth_strategy = noauth2\n"
        f"[placement_database]\nconnection = sqlite:///{tmp / 'placement.sqlite'}\n"
    )
    env = {**os.environ, "OS_PLACEMENT_CONFIG_DIR": str(conf_dir)}
    subprocess.run(
        # What bin/placement-manage runs, through the venv's interpreter.
        [str(venv / "bin" / "python"), "-c",
         "import sys; from placement.cmd.manage import main; sys.exit(main())",
         "--config-file", str(conf_dir / "placement.conf"), "db", "sync"],
        check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(venv / "bin" / "python"), "-m", "gunicorn",
        "--bind", f"127.0.0.1:{port}", "--workers", "1",
        "--threads", "8", "--worker-class", "gthread", "--log-level", "warning",
        "--timeout", "300", "placement.wsgi.api:application",
    ]  # fmt: skip
    with _process(cmd, url, env):
        yield url


@contextmanager
def wattvisor_placement(tmp: Path) -> Iterator[str]:
    """wattvisor's API under uvicorn in its own process, fresh SQLite store; yields its URL."""
    port = _free_port()
    data = tmp / "wattvisor"
    data.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    cmd = [sys.executable, "-m", "bench.placement_serve", str(data), str(port)]
    with _process(cmd, f"http://127.0.0.1:{port}/placement/", env):
        yield f"http://127.0.0.1:{port}/placement"


@dataclass(frozen=True)
class ProviderSpec:
    uuid: str
    name: str
    vcpu: int
    memory_mb: int
    disk_gb: int
    traits: tuple[str, ...]
    consumer: str | None


def fleet(count: int, rng: random.Random) -> list[ProviderSpec]:
    specs = []
    for i in range(count):
        traits = ["HW_ARCH_X86_64"]
        if rng.random() < 0.5:
            traits.append("HW_CPU_X86_AVX2")
        if rng.random() < 0.1:
            traits.append("CUSTOM_BENCH_GPU")
        specs.append(
            ProviderSpec(
                uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                name=f"bench-cn-{i:05d}",
                vcpu=rng.choice((16, 32, 64)),
                memory_mb=rng.choice((65536, 131072, 262144)),
                disk_gb=rng.choice((1000, 2000)),
                traits=tuple(traits),
                consumer=(
                    str(uuid.UUID(int=rng.getrandbits(128), version=4))
                    if rng.random() < 0.3
                    else None
                ),
            )
        )
    return specs


def _client(url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        headers={"X-Auth-Token": "admin", "OpenStack-API-Version": VERSION},
        timeout=300,
    )


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response


def _retried(send: Callable[[], httpx.Response]) -> httpx.Response:
    """``send()`` again while SQLite answers "database is locked" (Placement's 500)."""
    for _ in range(LOCKED_RETRIES):
        response = send()
        if response.status_code != 500 or "database is locked" not in response.text:
            return response
        time.sleep(0.01)
    return response


def load(url: str, specs: list[ProviderSpec]) -> None:
    """Create ``specs`` through the HTTP API with a few concurrent clients."""
    local = threading.local()

    def one(spec: ProviderSpec) -> None:
        plain = getattr(local, "client", None)
        if plain is None:
            plain = local.client = _client(url)
        client = _Retrying(plain)
        _ok(client.post("/resource_providers", json={"name": spec.name, "uuid": spec.uuid}))
        inventories = {
            "VCPU": {"total": spec.vcpu, "allocation_ratio": 4.0},
            "MEMORY_MB": {"total": spec.memory_mb, "reserved": 512},
            "DISK_GB": {"total": spec.disk_gb},
        }
        body = {"resource_provider_generation": 0, "inventories": inventories}
        _ok(client.put(f"/resource_providers/{spec.uuid}/inventories", json=body))
        body = {"resource_provider_generation": 1, "traits": list(spec.traits)}
        _ok(client.put(f"/resource_providers/{spec.uuid}/traits", json=body))
        if spec.consumer is not None:
            _ok(client.put(f"/allocations/{spec.consumer}", json=_allocation(spec.uuid)))

    with _client(url) as client:
        _ok(client.put("/traits/CUSTOM_BENCH_GPU"))
    with ThreadPoolExecutor(LOADERS) as pool:
        for _ in pool.map(one, specs):
            pass


class _Retrying:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def post(self, path: str, json: Any) -> httpx.Response:
        return _retried(lambda: self.client.post(path, json=json))

    def put(self, path: str, json: Any) -> httpx.Response:
        return _retried(lambda: self.client.put(path, json=json))


def _allocation(rp: str) -> dict[str, Any]:
    return {
        "allocations": {rp: {"resources": {"VCPU": 2, "MEMORY_MB": 4096, "DISK_GB": 20}}},
        "project_id": "bench-project",
        "user_id": "bench-user",
        "consumer_generation": None,
        "consumer_type": "INSTANCE",
    }


@dataclass
class Timing:
    median_ms: float
    p95_ms: float
    runs: int
    candidates: int


def time_query(url: str, query: str) -> Timing:
    samples: list[float] = []
    counts: set[int] = set()
    with _client(url) as client:
        for _ in range(3):
            _ok(client.get(f"/allocation_candidates?{query}"))
        deadline = time.perf_counter() + READ_BUDGET_S
        while len(samples) < READ_ITERATIONS and (
            len(samples) < 5 or time.perf_counter() < deadline
        ):
            started = time.perf_counter()
            response = _ok(client.get(f"/allocation_candidates?{query}"))
            samples.append((time.perf_counter() - started) * 1e3)
            counts.add(len(response.json()["allocation_requests"]))
    samples.sort()
    return Timing(
        statistics.median(samples),
        samples[min(len(samples) - 1, int(len(samples) * 0.95))],
        len(samples),
        max(counts),
    )


def writes_per_second(url: str, providers: list[str], clients: int) -> tuple[float, int, int]:
    """PUT /allocations/{new consumer} for WRITE_BUDGET_S: (per second, done, failed)."""
    done = failed = 0
    lock = threading.Lock()
    stop = time.perf_counter() + WRITE_BUDGET_S

    def writer(seed: int) -> None:
        nonlocal done, failed
        rng = random.Random(seed)
        with _client(url) as client:
            while time.perf_counter() < stop:
                with lock:
                    if done + failed >= WRITE_MAX:
                        return
                body = _allocation(rng.choice(providers))
                body["allocations"] = {
                    rp: {"resources": {"VCPU": 1, "MEMORY_MB": 256, "DISK_GB": 1}}
                    for rp in body["allocations"]
                }
                response = client.put(f"/allocations/{uuid.uuid4()}", json=body)
                with lock:
                    if response.status_code == 204:
                        done += 1
                    else:
                        failed += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(SEED + i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done / (time.perf_counter() - started), done, failed


def _load_avg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def _timed_load(label: str, url: str, specs: list[ProviderSpec]) -> None:
    started = time.perf_counter()
    load(url, specs)
    print(f"   {label} in {time.perf_counter() - started:.1f} s", flush=True)


def run() -> None:
    rng = random.Random(SEED)
    specs = fleet(max(SIZES), rng)
    with tempfile.TemporaryDirectory(prefix="wv-bench-placement-") as tmp_name:
        tmp = Path(tmp_name)
        with openstack_placement(tmp) as theirs, wattvisor_placement(tmp) as ours:
            loaded = 0
            for size in SIZES:
                batch = specs[loaded:size]
                _timed_load(f"loaded {len(batch)} providers into wattvisor", ours, batch)
                _timed_load(
                    f"loaded {len(batch)} providers into OpenStack Placement", theirs, batch
                )
                loaded = size
                print(f"   {size} providers ({_load_avg()}):", flush=True)
                for label, query in QUERIES:
                    mine = time_query(ours, query)
                    peer = time_query(theirs, query)
                    same = "same count" if mine.candidates == peer.candidates else "COUNTS DIFFER"
                    print(
                        f"     GET /allocation_candidates {label}: wattvisor median "
                        f"{mine.median_ms:.2f} ms p95 {mine.p95_ms:.2f} ms ({mine.runs} runs); "
                        f"Placement median {peer.median_ms:.1f} ms p95 {peer.p95_ms:.1f} ms "
                        f"({peer.runs} runs); {peer.median_ms / mine.median_ms:.1f}x; "
                        f"{mine.candidates}/{peer.candidates} candidates ({same})",
                        flush=True,
                    )
            providers = [spec.uuid for spec in specs]
            print(f"   writes over {len(providers)} providers ({_load_avg()}):", flush=True)
            for clients in (1, WRITERS):
                mine_w = writes_per_second(ours, providers, clients)
                peer_w = writes_per_second(theirs, providers, clients)
                print(
                    f"     PUT /allocations/{{consumer}}, {clients} client(s): wattvisor "
                    f"{mine_w[0]:.0f}/s ({mine_w[2]} failed); Placement {peer_w[0]:.0f}/s "
                    f"({peer_w[2]} failed); {mine_w[0] / max(peer_w[0], 1e-9):.1f}x",
                    flush=True,
                )
