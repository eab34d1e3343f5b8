"""Server builds through one controller process against two, side by side, on PostgreSQL.

SERVERS servers are created (each a ``build`` task in the store) before the clock
starts; then 1 or 2 controller processes, started and connected beforehand, are told
"go", and the figure is builds settled per second until every server is ACTIVE. The
host is libvirt's ``test:///default`` driver, registered in the store by URI: every
controller process opens its own (its domains live in that process), so the figure
is the controller's own path — claim, schedule and claim in placement, domain name,
config drive, define, start, record — without QEMU. The database (a private
PostgreSQL 15, fsync off) runs on the same 2 shared cores: two controllers cannot
double the figure here; the point is that the second one adds instead of contending.
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.postgres_processes import (
    finish,
    migrated_database,
    private_postgres,
    ready_processes,
    tell,
)

SERVERS = 120
WORKERS = 4
WAIT_S = 600.0


def _controller(raw: str) -> None:
    """A controller process: connect, say ``ready``, run tasks from ``go`` to ``stop``."""
    from wattvisor.compute import Compute, LocalHostClient
    from wattvisor.config import load_settings
    from wattvisor.host.driver import HostDriver
    from wattvisor.placement import Placement
    from wattvisor.store import make_engine

    settings = load_settings(**json.loads(raw))
    engine = make_engine(settings.store_url)

    compute = Compute.build(engine, Placement(engine), settings)
    # A test-driver file URI is never reconnected from the store: each process opens it.
    uri = settings.host.libvirt_uri
    compute.hosts.add(
        LocalHostClient(HostDriver(settings.host, settings.data_dir, uri=uri)), name="bench-host"
    )
    compute.servers.tasks.counts()
    print("ready", flush=True)
    sys.stdin.readline()
    compute.start(0)
    sys.stdin.readline()  # "stop"
    compute.close()
    engine.dispose()


def _measure(url: str, controllers: int, data_dir: Path) -> float:
    from wattvisor.auth import Principal
    from wattvisor.compute import Compute, LocalHostClient
    from wattvisor.config import load_settings
    from wattvisor.host.driver import HostDriver
    from wattvisor.placement import Placement
    from wattvisor.store import make_engine

    # A test-driver host of its own with room for every server (each process opens it).
    node = data_dir / "node.xml"
    node.write_text(
        "<node><cpu><mode>fixed</mode><nodes>1</nodes><sockets>1</sockets>"
        "<cores>64</cores><threads>1</threads><active>64</active><mhz>2000</mhz>"
        "<model>x86_64</model></cpu><memory>67108864</memory></node>"
    )
    uri = f"test://{node}"
    raw: dict[str, Any] = {
        "data_dir": str(data_dir),
        "store": {"url": url},
        "host": {"libvirt_uri": uri, "virt_type": "qemu",
                 "instance_name_template": f"wvbench-{secrets.token_hex(4)}-%04x"},
        "compute": {"workers": WORKERS, "task_poll_s": 0.05, "default_flavors": False},
        "energy": {"source": "model"},
    }  # fmt: skip
    settings = load_settings(**raw)
    engine = make_engine(url)
    compute = Compute.build(engine, Placement(engine), settings)
    compute.servers.runs_tasks = False
    compute.hosts.add(
        LocalHostClient(HostDriver(settings.host, settings.data_dir, uri=uri)), name="bench-host"
    )
    compute.catalog.create_flavor("bench", 1, 64, 0)
    kernel = data_dir / "vmlinuz"
    kernel.write_bytes(b"\0" * 1024)
    compute.catalog.create_image("bench", kernel_path=str(kernel))
    owner = Principal("bench", "bench", "member")
    uuids = [compute.servers.create(owner, f"b{i}", "bench", "bench").uuid for i in range(SERVERS)]
    procs = ready_processes("bench.bench_controllers", ["controller", json.dumps(raw)], controllers)
    try:
        started = time.perf_counter()
        tell(procs, "go")
        deadline = time.monotonic() + WAIT_S
        while True:
            counts = compute.servers.tasks.counts()
            if counts["queued"] + counts["running"] == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{controllers} controllers: {counts} after {WAIT_S} s")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        statuses = {compute.servers.get(owner, u).status for u in uuids}
        if statuses != {"ACTIVE"}:
            raise RuntimeError(f"{controllers} controllers: servers ended {statuses}")
    finally:
        finish(procs)
        compute.close()
        engine.dispose()
    return SERVERS / elapsed


def run() -> None:
    with private_postgres() as server:
        if server is None:
            return
        figures = []
        for controllers in (1, 2):
            url = migrated_database(server)
            with tempfile.TemporaryDirectory(prefix="wvbench-") as tmp:
                figures.append(_measure(url, controllers, Path(tmp)))
        one, two = figures
        print(
            f"server builds on PostgreSQL 15 (private, fsync off), test-driver host, "
            f"{SERVERS} servers, {WORKERS} task threads per controller"
        )
        print(f"  {'':<22}{'1 controller':>16}{'2 controllers':>16}{'2 / 1':>8}")
        print(f"  {'builds settled':<22}{one:>12.1f} /s{two:>13.1f} /s{two / one:>8.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "controller":
        _controller(sys.argv[2])
    else:
        run()
