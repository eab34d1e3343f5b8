"""`wattvisor power` over a fleet: the all-in-one controller stores its own samples, a
joined host pushes its own over HTTP, and project power and history sum both."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from biscuit_auth import KeyPair
from sqlalchemy import insert

from cli.served_api import Served
from wattvisor.agent.energy_push import EnergyPusher, http_sender
from wattvisor.auth import mint_token_from_file
from wattvisor.auth.service_tokens import mint_host_token
from wattvisor.energy.fleet_samples import HostSample, ServerSample
from wattvisor.store import write_transaction
from wattvisor.store.compute_tables import ServerRow


def _join(served: Served, client: httpx.Client) -> tuple[str, KeyPair]:
    admin = mint_token_from_file(served.node.settings.admin_key_path, "admin", timedelta(hours=1))
    headers = {"Authorization": f"Bearer {admin}"}
    issued = client.post("/v1/hosts/join-tokens", json={"ttl": "1h"}, headers=headers)
    assert issued.status_code == 201, issued.text
    keys = KeyPair()
    host = str(uuid.uuid4())
    body: dict[str, Any] = {
        "id": host, "name": "remote-1", "libvirt_uri": "qemu:///system", "traits": [],
        "inventory": {"VCPU": 4, "MEMORY_MB": 4096, "DISK_GB": 40}, "energy_source": "rapl",
        "addresses": ["http://127.0.0.1:9"], "public_key": repr(keys.public_key),
    }  # fmt: skip
    joined = client.post(
        "/v1/hosts/join", json=body, headers={"Authorization": f"Bearer {issued.json()['token']}"}
    )
    assert joined.status_code == 201, joined.text
    return host, keys


def test_project_power_and_history_sum_the_local_host_and_a_pushing_host(served: Served) -> None:
    served.json(
        "server", "create", "hot", "--flavor", "tiny", "--image", "kernel", "--wait", "--json"
    )
    history = served.node.history
    assert history is not None
    deadline = time.monotonic() + 30
    while served.node.provider_uuid not in history.hosts_with_samples():
        assert time.monotonic() < deadline, "the local host's samples never reached the store"
        time.sleep(0.1)
    port = served.node.settings.api.port
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        host, keys = _join(served, client)
        remote = str(uuid.uuid4())
        now = datetime.now(UTC)
        with write_transaction(served.node.compute.servers.engine) as conn:
            conn.execute(
                insert(ServerRow),
                [{
                    "uuid": remote, "name": "far", "project": "admin", "user_name": "admin",
                    "flavor_id": "f", "image_id": "i", "status": "ACTIVE", "host_uuid": host,
                    "domain_name": "far", "power_metrics": False, "shares": [],
                    "created_at": now, "updated_at": now,
                }],
            )  # fmt: skip
        send = http_sender(
            client, f"http://127.0.0.1:{port}", host,
            lambda: mint_host_token(keys.private_key, host),
        )  # fmt: skip
        pusher = EnergyPusher(lambda: None, send)
        start = time.time() - 10
        for i in range(10):
            pusher.offer(
                HostSample(
                    start + i, 1.0, "rapl", True, 40.0, 40.0, 400.0 + 40 * i,
                    (ServerSample(remote, 7.0, 7.0, 7.0 * (i + 1)),),
                )
            )  # fmt: skip
        assert pusher.flush() is True
    power = served.json("power", "project", "admin", "--json")
    assert power["servers"] == 2
    assert power["watts"] >= 7.0 and power["joules"] >= 70.0
    assert "rapl" in power["source"].split("+")
    far = served.json("power", "server", "far", "--json")
    assert far["watts"] == 7.0 and far["joules"] == 70.0 and far["measured"] is True
    long = served.json("power", "server", "far", "--since", "1h", "--json")
    assert long["history"] and long["history"][-1]["joules"] == 70.0
    assert sum(p["joules"] for p in long["history"][1:]) <= 70.0
    bad = served.run("power", "project", "admin", "--since", "forever")
    assert bad.exit_code == 1 and "'forever'" in bad.output
