"""Ingest rate of pushed energy samples: over HTTP (the agent's path: JSON, host token,
the whole API stack) against the service call ``wattvisor up`` makes for its own host,
side by side, on SQLite. Each sample lists 20 servers; batches hold 60 samples (the
agent's default ``energy.push_batch_samples``)."""

from __future__ import annotations

import secrets
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from biscuit_auth import KeyPair
from sqlalchemy import insert

from wattvisor.agent.energy_push import http_sender
from wattvisor.allinone import AllInOne
from wattvisor.auth import Principal
from wattvisor.auth.service_tokens import mint_host_token
from wattvisor.compute.host_trust import JoinRequest
from wattvisor.config import load_settings
from wattvisor.energy.fleet_samples import HostSample, ServerSample
from wattvisor.host.driver import Inventory
from wattvisor.store import write_transaction
from wattvisor.store.compute_tables import ServerRow

SERVERS = 20
BATCH = 60
BATCHES = 20


def _batches(servers: list[str], start: float) -> list[list[HostSample]]:
    out = []
    for b in range(BATCHES):
        batch = []
        for i in range(BATCH):
            n = b * BATCH + i
            batch.append(
                HostSample(
                    start + n * 0.01, 2.0, "rapl", True, 100.0, 200.0, 1000.0 + 200 * n,
                    tuple(ServerSample(s, 5.0, 10.0, 10.0 * (n + 1)) for s in servers),
                )
            )  # fmt: skip
        out.append(batch)
    return out


def _rate(send: object, batches: list[list[HostSample]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        send(batch)  # type: ignore[operator]
    return BATCHES * BATCH / (time.perf_counter() - started)


def run() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        port = 0
        with __import__("socket").socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = load_settings(
            data_dir=root / "data",
            host={"libvirt_uri": "test:///default", "virt_type": "qemu",
                  "instance_name_template": f"wvbench-{secrets.token_hex(4)}-%04x"},
            energy={"source": "model"}, compute={"ready_image": False},
            history={"downsample_interval_s": 0},
        )  # fmt: skip
        node = AllInOne.build(settings)
        trust = node.app.state.host_trust
        pairs = {}
        for name in ("bench-http", "bench-call"):
            pair = KeyPair()
            request = JoinRequest(
                host_id=str(uuid.uuid4()), name=name, libvirt_uri="qemu:///system",
                traits=frozenset(), inventory=Inventory(vcpu=16, memory_mb=65536, disk_gb=500),
                energy_source="rapl", addresses=("http://127.0.0.1:9",),
                public_key=repr(pair.public_key),
            )  # fmt: skip
            admin = Principal(user="admin", project="admin", role="admin")
            token = trust.create_join_token(admin, timedelta(hours=1)).token
            trust.join(trust.join_verifier().verify(token), request)
            pairs[name] = (request.host_id, pair)
        servers: dict[str, list[str]] = {}
        now = datetime.now(UTC)
        with write_transaction(node.compute.servers.engine) as conn:
            for name, (host, _pair) in pairs.items():
                servers[name] = [str(uuid.uuid4()) for _ in range(SERVERS)]
                conn.execute(
                    insert(ServerRow),
                    [{
                        "uuid": s, "name": f"b-{s[:8]}", "project": "bench", "user_name": "b",
                        "flavor_id": "f", "image_id": "i", "status": "ACTIVE", "host_uuid": host,
                        "domain_name": f"d-{s[:8]}", "power_metrics": False, "shares": [],
                        "created_at": now, "updated_at": now,
                    } for s in servers[name]],
                )  # fmt: skip
        history = node.compute.power.history
        assert history is not None
        start = time.time() - 3600
        call_host = pairs["bench-call"][0]
        call_rate = _rate(
            lambda batch: history.ingest(call_host, batch), _batches(servers["bench-call"], start)
        )
        server = uvicorn.Server(
            uvicorn.Config(node.app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        host, pair = pairs["bench-http"]
        try:
            with httpx.Client(timeout=30) as client:
                send = http_sender(
                    client, f"http://127.0.0.1:{port}", host,
                    lambda: mint_host_token(pair.private_key, host),
                )  # fmt: skip
                http_rate = _rate(send, _batches(servers["bench-http"], start))
        finally:
            server.should_exit = True
            thread.join(30)
            node.stop()
        print(f"push ingest, {BATCH}-sample batches x {SERVERS} servers (SQLite):")
        for label, rate in (("service call", call_rate), ("over HTTP", http_rate)):
            print(f"  {label:13}: {rate:8.0f} samples/s ({rate * SERVERS:8.0f} server samples/s)")
        print(f"  HTTP / call  : {http_rate / call_rate:8.2f}")
