"""Costs of the trust between controllers and agents (µs per call, ms per join).

Figures side by side: a user token check (the reference every API request pays) and
a host token check with the store-backed key lookup (every heartbeat or energy push);
a controller token check on the agent (every call a controller makes); minting a
controller token fresh against reusing one (ClusterSigner); one whole join on SQLite
(token claim, host row, credential, placement provider).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from biscuit_auth import KeyPair

from bench.bench_auth import ITERATIONS, WARMUP, _per_call_us
from wattvisor.auth import Principal, TokenVerifier, mint_token
from wattvisor.auth.cluster_keys import ClusterSigner, ensure_cluster_key
from wattvisor.auth.service_tokens import (
    ServiceTokenVerifier,
    TrustedKey,
    mint_controller_token,
    mint_host_token,
)
from wattvisor.compute.host_trust import ClusterKeys, HostTrust, JoinRequest
from wattvisor.compute.users import UserStore
from wattvisor.config import load_settings
from wattvisor.host.driver import Inventory
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

JOINS = 30


def run() -> None:
    admin = Principal(user="admin", project="admin", role="admin")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        engine = make_engine(f"sqlite:///{root}/bench.db")
        migrate(engine)
        settings = load_settings(data_dir=root / "data")
        files = ensure_cluster_key(settings.cluster_key_path)
        cluster = ClusterKeys(engine)
        cluster.ensure(files.public_key)
        signer = ClusterSigner(
            settings.cluster_key_path,
            lambda: cluster.require().current.public_key,
            lambda: cluster.require().cluster_id,
        )
        trust = HostTrust(engine, Placement(engine), settings, cluster, signer)
        verifier = trust.join_verifier()

        join_ms = []
        host_keys: dict[str, KeyPair] = {}
        for i in range(JOINS):
            pair = KeyPair()
            request = JoinRequest(
                host_id=str(uuid.uuid4()), name=f"bench-{i}", libvirt_uri="qemu:///system",
                traits=frozenset({"HW_CPU_X86_AVX2"}),
                inventory=Inventory(vcpu=16, memory_mb=65536, disk_gb=500),
                energy_source="rapl", addresses=("https://198.18.0.9:8775",),
                public_key=repr(pair.public_key),
            )  # fmt: skip
            token = trust.create_join_token(admin, timedelta(hours=1)).token
            started = time.perf_counter()
            trust.join(verifier.verify(token), request)
            join_ms.append((time.perf_counter() - started) * 1e3)
            host_keys[request.host_id] = pair
        host_id, pair = next(iter(host_keys.items()))

        users = UserStore(engine)
        user_pair = KeyPair()
        users.register("alice", "proj", "member", repr(user_pair.public_key))
        user_verifier = TokenVerifier(users.lookup)
        user_token = mint_token(user_pair.private_key, "alice", timedelta(minutes=5))
        host_verifier = ServiceTokenVerifier("host", trust.host_keys)
        host_token = mint_host_token(pair.private_key, host_id)
        # Before agents reused their token, every call carried a freshly minted one: the
        # controller's signature cache never hit and each call paid parse + Ed25519.
        fresh_verifier = ServiceTokenVerifier("host", trust.host_keys)
        fresh_tokens = iter(
            [mint_host_token(pair.private_key, host_id) for _ in range(WARMUP + ITERATIONS)]
        )

        cluster_pair = KeyPair()
        cluster_id = str(uuid.uuid4())
        agent_keys = [TrustedKey(repr(cluster_pair.public_key))]
        agent_verifier = ServiceTokenVerifier("controller", lambda _c: agent_keys)
        controller_token = mint_controller_token(cluster_pair.private_key, cluster_id)
        now = datetime.now(UTC)

        rows = [
            ("user token check, store lookup (reference)",
             lambda: user_verifier.verify(user_token, operation="read")),
            ("host token check, a fresh token per call",
             lambda: fresh_verifier.verify(next(fresh_tokens))),
            ("host token check, reused token (agents now)",
             lambda: host_verifier.verify(host_token)),
            ("controller token check on the agent",
             lambda: agent_verifier.verify(controller_token)),
            ("controller token, minted fresh",
             lambda: mint_controller_token(cluster_pair.private_key, cluster_id, now=now)),
            ("controller token, reused (ClusterSigner)", signer.controller_token),
        ]  # fmt: skip
        print(f"   machine load (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for label, fn in rows:
            median, p95 = _per_call_us(fn)
            print(f"   {label:<44} median {median:8.1f} µs   p95 {p95:8.1f} µs")
        print(
            f"   one join on SQLite ({JOINS} hosts): median {statistics.median(join_ms):.1f} ms, "
            f"max {max(join_ms):.1f} ms"
        )
        engine.dispose()


if __name__ == "__main__":
    run()
