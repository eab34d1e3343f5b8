"""The dashboard with 500 servers and a day of history (one sample a minute), on SQLite:
the history API for a day of one project (goal <= 50 ms), and the page's interactive
time in Debian's Chromium, from a member's sign-in click to every figure, chart and server row drawn
(goal < 1 s). Prints the figures and the machine's load."""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from biscuit_auth import KeyPair
from playwright.sync_api import sync_playwright
from sqlalchemy import insert

from wattvisor.allinone import AllInOne
from wattvisor.auth import Principal
from wattvisor.auth.keys import mint_token_from_file
from wattvisor.auth.tokens import mint_token
from wattvisor.compute.host_trust import JoinRequest
from wattvisor.config import load_settings
from wattvisor.energy.fleet_samples import HostSample, ServerSample
from wattvisor.host.driver import Inventory
from wattvisor.store import write_transaction
from wattvisor.store.compute_tables import ServerRow

SERVERS = 500
STEP_S = 60
DAY_S = 86_400
BATCH = 60
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} / {five:.2f} (1 / 5 min) on {os.cpu_count()} CPUs"


def _populate(node: AllInOne) -> str:
    trust = node.app.state.host_trust
    pair = KeyPair()
    request = JoinRequest(
        host_id=str(uuid.uuid4()), name="bench-dash", libvirt_uri="qemu:///system",
        traits=frozenset(), inventory=Inventory(vcpu=256, memory_mb=1 << 20, disk_gb=10_000),
        energy_source="rapl", addresses=("http://127.0.0.1:9",), public_key=repr(pair.public_key),
    )  # fmt: skip
    admin = Principal(user="admin", project="admin", role="admin")
    token = trust.create_join_token(admin, timedelta(hours=1)).token
    trust.join(trust.join_verifier().verify(token), request)
    host = request.host_id
    servers = [str(uuid.uuid4()) for _ in range(SERVERS)]
    now = datetime.now(UTC)
    with write_transaction(node.compute.servers.engine) as conn:
        conn.execute(
            insert(ServerRow),
            [{
                "uuid": s, "name": f"b-{s[:8]}", "project": "bench", "user_name": "b",
                "flavor_id": "f", "image_id": "i", "status": "ACTIVE", "host_uuid": host,
                "domain_name": f"d-{s[:8]}", "power_metrics": False, "shares": [],
                "created_at": now, "updated_at": now,
            } for s in servers],
        )  # fmt: skip
    history = node.compute.power.history
    assert history is not None
    start = time.time() - DAY_S + 120  # inside the raw retention
    count = DAY_S // STEP_S
    batch: list[HostSample] = []
    for n in range(count):
        batch.append(
            HostSample(
                start + n * STEP_S, float(STEP_S), "rapl", True, 500.0, 500.0 * STEP_S,
                500.0 * STEP_S * (n + 1),
                tuple(ServerSample(s, 1.0, float(STEP_S), STEP_S * (n + 1.0)) for s in servers),
            )
        )  # fmt: skip
        if len(batch) == BATCH or n == count - 1:
            history.ingest(host, batch)
            batch = []
    return host


def run() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        settings = load_settings(
            data_dir=root / "data",
            host={"libvirt_uri": "test:///default", "virt_type": "qemu",
                  "instance_name_template": f"wvbench-{secrets.token_hex(4)}-%04x"},
            energy={"source": "model"}, compute={"ready_image": False},
            history={"downsample_interval_s": 0, "max_server_rows": 10_000_000},
        )  # fmt: skip
        node = AllInOne.build(settings)
        started = time.perf_counter()
        _populate(node)
        filled = time.perf_counter() - started
        admin_token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
        member = KeyPair()
        node.compute.users.register("bench-user", "bench", "member", repr(member.public_key))
        token = mint_token(member.private_key, "bench-user", timedelta(hours=1))
        with __import__("socket").socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(node.app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        try:
            api_ms = []
            auth = {"Authorization": f"Bearer {admin_token}"}
            with httpx.Client(timeout=60, headers=auth) as c:
                for _ in range(11):
                    t = time.perf_counter()
                    response = c.get(f"{url}/v1/projects/bench/power/history?since={DAY_S}")
                    api_ms.append((time.perf_counter() - t) * 1e3)
                    assert response.status_code == 200, response.text
                points = len(response.json())
            page_ms = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=ARGS
                )
                try:
                    for _ in range(3):
                        page = browser.new_page(viewport={"width": 1200, "height": 1400})
                        page.goto(url + "/")
                        page.fill("#token", token)
                        t = time.perf_counter()
                        page.click("#signin-button")
                        page.wait_for_selector("body[data-state=ready]", timeout=120_000)
                        page_ms.append((time.perf_counter() - t) * 1e3)
                        rows = page.locator("#servers tbody tr").count()
                        page.close()
                finally:
                    browser.close()
            # What the member's page asks for, one call at a time: where its time goes
            # (after the page runs, so these calls never count against its own).
            calls: dict[str, list[float]] = {}
            with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
                one = c.get(f"{url}/v1/servers").json()[0]["id"]
                paths = {
                    "me": "/v1/me",
                    "project power": "/v1/projects/bench/power",
                    "project hour": "/v1/projects/bench/power/history?since=3600",
                    "project today": f"/v1/projects/bench/power/history?since={DAY_S}&step=60",
                    "servers": "/v1/servers",
                    "servers' power": "/v1/power/servers?project=bench",
                    "flavors": "/v1/flavors",
                    "images": "/v1/images",
                    "server hour": f"/v1/servers/{one}/power/history?since=3600",
                }
                for _ in range(5):
                    for label, path in paths.items():
                        t = time.perf_counter()
                        answered = c.get(url + path)
                        calls.setdefault(label, []).append((time.perf_counter() - t) * 1e3)
                        assert answered.status_code == 200, (path, answered.text)
        finally:
            server.should_exit = True
            thread.join(30)
            node.stop()
        print(f"dashboard, {SERVERS} servers, a day at one sample per {STEP_S} s (SQLite):")
        print(f"  history filled in        : {filled:8.1f} s")
        print(
            f"  project day history API  : {statistics.median(api_ms):8.1f} ms median, "
            f"{min(api_ms):.1f} best of {len(api_ms)} ({points} points; goal <= 50 ms)"
        )
        print(
            f"  page interactive         : {statistics.median(page_ms):8.0f} ms median, "
            f"{min(page_ms):.0f} best of {len(page_ms)} ({rows} server rows; goal < 1000 ms)"
        )
        print("  the page's calls, as the member (median of 5):")
        for label, took in calls.items():
            print(f"    {label:<22}: {statistics.median(took):8.1f} ms")
        print(f"  {_load()}")
