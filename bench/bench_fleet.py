"""A controller with 1,000 hosts: its CPU, create→ACTIVE latency and scheduling time,
each beside the Fleet goal.

A real ``wattvisor controller`` process on a private PostgreSQL 15 (fsync off), and
HOSTS simulated agents (:mod:`bench.simulated_agents`) in AGENT_PROCESSES processes:
each joins with a join token of its own (HTTP_JOINS of them over HTTP, their rate
printed; the others by the same service call, since a thousand joins over HTTP took
minutes here), serves the host protocol over HTTP on a
libvirt test-driver connection of its own, and sends real heartbeats and energy
pushes every 10 s (random phase, ±5 % jitter). After every host joined and had time
for a first heartbeat and push, two windows are measured:

- *idle fleet*: heartbeats (with domain states when they changed), pushes and the
  controller's own duties (the power sync every 10 s reads the reported states from
  the store) only;
- *creates*: CREATES servers at CREATE_RATE per second through ``POST /v1/servers``,
  on top of the same traffic.

Controller CPU is utime+stime of its process from ``/proc/<pid>/stat`` over each window,
as % of one core. Create→ACTIVE is the server's ``updated_at`` at ACTIVE minus its
``created_at`` (both stamped by the controller, read from the store afterwards, so
nothing polls the API). Scheduling time is the controller's own figure: each build
logs "scheduled in N ms" (choosing and claiming the host). The agents' side: how long
heartbeats and pushes took, and how late the agents' timers started them (a large
lateness means the agent processes, not the controller, fell behind). Everything runs
on the same 2 shared cores, agents included, so latencies carry the machine's load.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.postgres_processes import finish, private_postgres, read_line, ready_processes, tell

HOSTS = int(os.environ.get("WATTVISOR_BENCH_FLEET_HOSTS", "1000"))
AGENT_PROCESSES = 2
HTTP_JOINS = int(os.environ.get("WATTVISOR_BENCH_FLEET_HTTP_JOINS", "100"))
"""Hosts that join over HTTP (their rate is reported); the others join by the same
service call in the agent processes: 1,000 joins over HTTP took minutes here."""
CREATES = int(os.environ.get("WATTVISOR_BENCH_FLEET_CREATES", "300"))
CREATE_RATE = 5.0
IDLE_WINDOW_S = 20.0
SETTLE_S = 12.0
"""After the last join: every agent heartbeats and pushes once (10 s) before measuring."""
WAIT_ACTIVE_S = 240.0
START_TIMEOUT_S = 180.0

GOALS = {"cpu": 10.0, "p99": 250.0, "sched": 5.0}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_controller(root: Path, url: str) -> tuple[subprocess.Popen[bytes], str, Path, Any]:
    from wattvisor.config import load_settings

    port = _free_port()
    config = root / "controller.toml"
    config.write_text(
        f'data_dir = "{root / "controller"}"\n'
        f'[store]\nurl = "{url}"\n'
        f'[api]\nhost = "127.0.0.1"\nport = {port}\n'
        "[compute]\nready_image = false\ndefault_flavors = true\n"
    )
    log_path = root / "controller.log"
    # WATTVISOR_BENCH_FLEET_CONTROLLER: a script run instead of ``-m wattvisor.cli`` with
    # the same arguments (e.g. one that profiles the controller).
    wrapper = os.environ.get("WATTVISOR_BENCH_FLEET_CONTROLLER")
    command = [sys.executable, *([wrapper] if wrapper else ["-m", "wattvisor.cli"]), "controller"]
    env = {**os.environ, "WATTVISOR_CONFIG": str(config), "COLUMNS": "400"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the controller ended: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the controller did not answer in {START_TIMEOUT_S:.0f} s")
        try:
            if httpx.get(f"{base}/v1/", timeout=2).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    settings = load_settings(config)
    return proc, base, log_path, settings


def _creates(base: str, admin: dict[str, str], prefix: str) -> list[float]:
    """CREATES creates at CREATE_RATE/s (open loop); each request's time in ms."""
    times: list[float] = []
    lock = threading.Lock()
    client = httpx.Client(timeout=60, headers=admin)

    def one(n: int) -> None:
        started = time.perf_counter()
        r = client.post(
            f"{base}/v1/servers", json={"name": f"{prefix}{n}", "flavor": "fleet", "image": "fleet"}
        )
        if r.status_code != 202:
            raise RuntimeError(f"create refused: {r.status_code} {r.text[:300]}")
        with lock:
            times.append((time.perf_counter() - started) * 1e3)

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        futures = []
        for n in range(CREATES):
            wait = start + n / CREATE_RATE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            futures.append(pool.submit(one, n))
        for f in futures:
            f.result(timeout=120)
    client.close()
    return times


def _summary(records: list[list[Any]], kind: str, start: float, end: float) -> str:
    picked = [r for r in records if r[0] == kind and start <= r[1] < end]
    if not picked:
        return f"{kind:<20} none"
    ms = [r[2] for r in picked]
    failed = sum(1 for r in picked if not r[3])
    late = [r[4] for r in picked]
    extra = f", timer late p99 {_pct(late, 0.99):.0f} ms" if kind in ("heartbeat", "push") else ""
    return (
        f"{kind:<20} {len(picked):>6} calls {len(picked) / (end - start):>6.1f}/s   "
        f"p50 {_pct(ms, 0.5):>7.1f} ms  p99 {_pct(ms, 0.99):>7.1f} ms  failed {failed}{extra}"
    )


def run() -> None:
    with private_postgres() as server, tempfile.TemporaryDirectory(prefix="wvfleet-") as tmp:
        if server is None:
            return
        _run(server, Path(tmp))


def _run(server: Any, root: Path) -> None:
    from sqlalchemy import select

    from wattvisor.auth import mint_token_from_file
    from wattvisor.compute.catalog import Catalog
    from wattvisor.store import make_engine
    from wattvisor.store.compute_tables import ServerRow

    url = server.create_database()
    controller, base, log_path, settings = _start_controller(root, url)
    agents: list[subprocess.Popen[str]] = []
    engine = make_engine(url)
    try:
        token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=2))
        admin = {"Authorization": f"Bearer {token}"}
        catalog = Catalog(engine)
        catalog.create_flavor("fleet", 1, 64, 0)
        kernel = root / "vmlinuz"
        kernel.write_bytes(b"\0" * 1024)
        catalog.create_image("fleet", kernel_path=str(kernel))

        per = -(-HOSTS // AGENT_PROCESSES)
        for p in range(AGENT_PROCESSES):
            count = min(per, HOSTS - p * per)
            cfg = {
                "root": str(root / f"agents-{p}"), "first": p * per, "count": count,
                "controller": base, "admin_token": token, "heartbeat_s": 10.0,
                "push_s": 10.0, "threads": 16, "join_threads": 8,
                "http_joins": min(count, HTTP_JOINS // AGENT_PROCESSES),
                "controller_config": str(root / "controller.toml"),
            }  # fmt: skip
            agents += ready_processes("bench.simulated_agents", ["agents", json.dumps(cfg)], 1)
        cpu0, t0 = _cpu_s(controller.pid), time.monotonic()
        tell(agents, "go")
        joins = [read_line(a).split() for a in agents]
        if any(len(j) != 6 for j in joins):
            raise RuntimeError(f"the agent processes said {joins}")
        join_cpu = _cpu_s(controller.pid) - cpu0
        join_wall = time.monotonic() - t0
        joined = sum(int(j[1]) for j in joins)
        join_s = max(float(j[2]) for j in joins)
        provisioned = sum(int(j[3]) for j in joins)
        provision_s = max(float(j[4]) for j in joins)
        failed = sum(int(j[5]) for j in joins)
        if joined + provisioned < HOSTS:
            raise RuntimeError(f"only {joined + provisioned} of {HOSTS} hosts joined: {joins}")
        time.sleep(SETTLE_S)

        idle_start, cpu_a = time.time(), _cpu_s(controller.pid)
        time.sleep(IDLE_WINDOW_S)
        idle_end, cpu_b = time.time(), _cpu_s(controller.pid)
        idle_cpu = (cpu_b - cpu_a) / (idle_end - idle_start) * 100

        prefix = "fleet-"
        post_ms = _creates(base, admin, prefix)
        deadline = time.monotonic() + WAIT_ACTIVE_S
        servers = ServerRow.__table__
        while True:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(servers.c.status, servers.c.created_at, servers.c.updated_at).where(
                        servers.c.name.startswith(prefix)
                    )
                ).all()
            if sum(r.status in ("ACTIVE", "ERROR") for r in rows) == CREATES:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        create_end, cpu_c = time.time(), _cpu_s(controller.pid)
        create_cpu = (cpu_c - cpu_b) / (create_end - idle_end) * 100
        lines = finish(agents, timeout_s=120)
        agents = []
    finally:
        finish(agents, timeout_s=30)
        controller.terminate()
        try:
            controller.wait(60)
        except subprocess.TimeoutExpired:
            controller.kill()
            controller.wait(30)
        engine.dispose()

    records: list[list[Any]] = []
    for line in lines:
        if line.startswith("{"):
            records += json.loads(line)["records"]
    active = [
        (r.updated_at - r.created_at).total_seconds() * 1e3 for r in rows if r.status == "ACTIVE"
    ]
    errors = sum(r.status == "ERROR" for r in rows)
    log_text = log_path.read_text(errors="replace")
    keep = os.environ.get("WATTVISOR_BENCH_FLEET_KEEP_LOG")
    if keep:
        Path(keep).write_text(log_text)
    sched = [float(m) for m in re.findall(r"scheduled in ([0-9.]+) ms", log_text)]
    built = [float(m) for m in re.findall(r"built in ([0-9.]+) ms", log_text)]

    def mark(value: float, goal: float) -> str:
        return "met" if value <= goal else "MISSED"

    load = os.getloadavg()
    print(
        f"controller with {HOSTS} simulated hosts ({AGENT_PROCESSES} agent processes), "
        f"PostgreSQL 15 (private, fsync off); load average {load[0]:.1f} {load[1]:.1f} on "
        f"{os.cpu_count()} cores"
    )
    print(
        f"  joins over HTTP: {joined} hosts in {join_s:.1f} s ({joined / join_s:.1f}/s, "
        f"{failed} failed); {provisioned} more by the same service call in {provision_s:.1f} s; "
        f"controller CPU {join_cpu / join_wall * 100:.0f} % of a core over the {join_wall:.0f} s"
    )
    print(f"  {'figure':<38}{'measured':>12}{'goal':>12}{'measured/goal':>15}")
    rows_out = [
        ("controller CPU, idle fleet (% core)", idle_cpu, GOALS["cpu"]),
        ("controller CPU, with creates (% core)", create_cpu, GOALS["cpu"]),
        ("create→ACTIVE p99 (ms)", _pct(active, 0.99), GOALS["p99"]),
        ("scheduling median (ms)", statistics.median(sched) if sched else float("nan"),
         GOALS["sched"]),
    ]  # fmt: skip
    for label, value, goal in rows_out:
        print(f"  {label:<38}{value:>12.1f}{goal:>12.1f}{value / goal:>12.2f}  {mark(value, goal)}")
    print(
        f"  create→ACTIVE p50 {_pct(active, 0.5):.0f} ms over {len(active)} ACTIVE ({errors} "
        f"ERROR); build task p50 {_pct(built, 0.5):.0f} ms; scheduling p99 "
        f"{_pct(sched, 0.99):.1f} ms; POST /v1/servers p50 {_pct(post_ms, 0.5):.0f} ms "
        f"p99 {_pct(post_ms, 0.99):.0f} ms"
    )
    beats = [r for r in records if r[0] == "heartbeat" and idle_start <= r[1] < idle_end]
    offered = len(beats) / (idle_end - idle_start)
    wanted = HOSTS / 10.0
    print(
        f"  offered load in the idle window: {offered:.1f} heartbeats/s of the {wanted:.0f}/s "
        f"{HOSTS} hosts send ({offered / wanted:.2f})"
    )
    if offered < 0.9 * wanted:
        print(
            "  NOTE: the agent processes fell behind (see 'timer late'): the controller got "
            "less than the fleet's load, so these figures are not those of "
            f"{HOSTS} hosts; run on a machine with idle cores"
        )
    print("  agents' view over both windows:")
    for kind in ("heartbeat", "push", "host:domain_states", "host:spawn", "host:domain_exists"):
        print("    " + _summary(records, kind, idle_start, create_end))


if __name__ == "__main__":
    run()
