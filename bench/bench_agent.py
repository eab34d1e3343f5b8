"""Cost of the host seam over HTTP (µs per call), side by side with the same call in
process: ``domain_states`` (the power sync's call, cheap on the host) and ``facts``,
on libvirt's test driver so that the host's own work is small and the seam shows.

The agent app is served by uvicorn on loopback in this process (one pooled keep-alive
connection, a controller token reused as ClusterSigner does); a real agent is another
process on another machine, where the network adds its round trip. Also: encoding and
checking one SpawnRequest on the wire, both ends.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from biscuit_auth import KeyPair

from wattvisor.agent.app import create_agent_app
from wattvisor.agent.credentials import AgentCredentials, make_controller_dependency
from wattvisor.auth.service_tokens import mint_controller_token
from wattvisor.compute.hostclient import SpawnFlavor, SpawnImage, SpawnRequest
from wattvisor.compute.hostclient_http import HttpHostClient
from wattvisor.compute.hostclient_wire import WIRE_TABLE
from wattvisor.compute.local_host import LocalHostClient
from wattvisor.config.settings import HostSettings
from wattvisor.host.driver import HostDriver

CALLS = 300


def _per_call_us(call: Callable[[], object], calls: int = CALLS) -> tuple[float, float]:
    """(median, p95) in µs of ``calls`` calls after 20 warm-up calls."""
    for _ in range(20):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def run() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        local = LocalHostClient(HostDriver(HostSettings(virt_type="qemu"), root,
                                           uri="test:///default"))  # fmt: skip
        cluster_key, cluster = KeyPair(), str(uuid.uuid4())
        credentials = AgentCredentials(root / "agent")
        credentials.ensure_host_key()
        credentials.learn(
            {"host_id": str(uuid.uuid4()), "cluster_id": cluster,
             "cluster_keys": [{"public_key": repr(cluster_key.public_key), "valid_until": None}]},
            "http://controller.invalid",
        )  # fmt: skip
        app = create_agent_app(local, make_controller_dependency(credentials))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        token = mint_controller_token(cluster_key.private_key, cluster, timedelta(minutes=10))
        remote = HttpHostClient(f"http://127.0.0.1:{port}", lambda: token)
        try:
            assert remote.domain_states() == local.domain_states()
            print(f"   {'call':<28}{'in process':>22}{'over HTTP':>22}   (median / p95 µs)")
            for name, here, there in (
                ("domain_states", local.domain_states, remote.domain_states),
                ("facts", local.facts, remote.facts),
            ):
                a, b = _per_call_us(here), _per_call_us(there)
                print(f"   {name:<28}{a[0]:>10.0f} /{a[1]:>9.0f}{b[0]:>12.0f} /{b[1]:>9.0f}"
                      f"   ({b[0] / max(a[0], 1e-9):.0f}x)")  # fmt: skip
        finally:
            remote.close()
            server.should_exit = True
            thread.join(30)
            local.close()

    request = SpawnRequest(
        server_uuid=str(uuid.uuid4()), display_name="web", domain_name="wv-0001",
        project="p", user="u", flavor=SpawnFlavor("f", "tiny", 1, 256, 1, 0, 0, {"a": "b"}),
        image=SpawnImage("i", "busybox", {"os_type": "linux"}, kernel_path="/k", cmdline="c"),
        power_metrics=True, created_at=datetime.now(UTC),
        user_uuid=str(uuid.uuid4()), project_uuid=str(uuid.uuid4()),
    )  # fmt: skip
    wire = WIRE_TABLE["spawn"]
    body = wire.encode_arguments({"request": request})
    encode = _per_call_us(lambda: wire.encode_arguments({"request": request}), 2000)
    decode = _per_call_us(lambda: wire.decode_arguments(body), 2000)
    print(f"   SpawnRequest on the wire ({len(body)} bytes): encode {encode[0]:.0f} µs, "
          f"strict decode {decode[0]:.0f} µs (median)")  # fmt: skip
