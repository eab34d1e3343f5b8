"""Server addresses and the config drive that carries them (SQLite).

Figures: one allocation (lowest free slot, insert) when the subnet is nearly
empty and when 4,000 of its 4,093 slots are held (the read of held slots grows
with the subnet); a release; and a config drive image with and without
``network_data.json`` filled in (both are patched into the cached template, so the
two should cost the same).
"""

from __future__ import annotations

import ipaddress
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, insert

from wattvisor.compute.addresses import AddressBook
from wattvisor.config import HostNetworkSettings
from wattvisor.host.configdrive import ConfigDriveMetadata, config_drive_image
from wattvisor.host.networks import NetworkSpec
from wattvisor.store import make_engine, migrate, write_transaction
from wattvisor.store.compute_tables import ServerAddressRow, ServerRow

SUBNET = "10.251.0.0/20"
FILLED = 4_000
SAMPLES = 60


def _servers(engine: Engine, count: int) -> list[str]:
    uuids = [str(uuid.uuid4()) for _ in range(count)]
    now = datetime.now(UTC)
    rows = [
        dict(uuid=u, name=u[:8], project="p", user_name="u", flavor_id="f", image_id="i",
             status="BUILD", task=None, power_metrics=False, shares=[], created_at=now,
             updated_at=now)
        for u in uuids
    ]  # fmt: skip
    with write_transaction(engine) as conn:
        conn.execute(insert(ServerRow.__table__), rows)
    return uuids


def _hold(engine: Engine, servers: list[str], first_slot: int) -> None:
    """Fill slots in one statement (what thousands of builds would have left)."""
    now = datetime.now(UTC)
    rows = [
        dict(network="bench", slot=first_slot + n, server_uuid=s, ipv6=None, created_at=now,
             mac=f"fa:16:3f:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}",
             ipv4=str(ipaddress.IPv4Network(SUBNET)[first_slot + n]))
        for n, s in enumerate(servers)
    ]  # fmt: skip
    with write_transaction(engine) as conn:
        conn.execute(insert(ServerAddressRow.__table__), rows)


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return f"median {statistics.median(samples) * 1e3:6.2f} ms  p95 {p95 * 1e3:6.2f} ms"


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="wv-bench-net-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate(engine)
        spec = NetworkSpec.from_settings(
            HostNetworkSettings(mode="isolated", name="bench", ipv4_subnet=SUBNET)
        )
        book = AddressBook(engine, spec)
        servers = _servers(engine, FILLED + 2 * SAMPLES)
        empty = [_timed(lambda s=s: book.allocate(s)) for s in servers[:SAMPLES]]
        _hold(engine, servers[SAMPLES:FILLED], first_slot=SAMPLES + 2)
        full = [_timed(lambda s=s: book.allocate(s)) for s in servers[FILLED : FILLED + SAMPLES]]
        release = [_timed(lambda s=s: book.release(s)) for s in servers[:SAMPLES]]
        print(f"   allocate, subnet nearly empty        {_ms(empty)}")
        print(f"   allocate, {FILLED} of {book.capacity} slots held  {_ms(full)}")
        print(f"   release                              {_ms(release)}")
        network = book.allocate(servers[-1])
        engine.dispose()

    meta = {"uuid": str(uuid.uuid4()), "name": "bench", "project_id": "p"}
    config_drive_image(ConfigDriveMetadata(**meta))  # builds the cached template
    plain = [
        _timed(lambda: config_drive_image(ConfigDriveMetadata(**meta))) for _ in range(SAMPLES)
    ]
    with_net = [
        _timed(lambda: config_drive_image(ConfigDriveMetadata(**meta, network=network)))
        for _ in range(SAMPLES)
    ]
    print(f"   config drive, no network_data         {_ms(plain)}")
    print(f"   config drive, with network_data       {_ms(with_net)}")
