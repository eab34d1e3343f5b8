"""Energy pushed over the real API by joined hosts: only a host's own token, only for its
own servers; project power sums both hosts; the pusher's backlog survives the
controller being down; the agents' discovery list passes promtool."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import insert

from api.test_v1_host_join import bearer, facts, join_token
from api.v1_world import V1World
from cli.served_api import free_port
from wattvisor.agent.energy_push import EnergyPusher, http_sender
from wattvisor.auth.service_tokens import mint_host_token
from wattvisor.compute.prometheus_targets import write_file_sd
from wattvisor.energy.fleet_samples import HostSample, ServerSample
from wattvisor.store import write_transaction
from wattvisor.store.compute_tables import ServerRow


def joined(world: V1World, name: str) -> tuple[str, Any]:
    body, keys = facts(name)
    body["addresses"] = [f"http://127.0.0.1:{9000 + len(name)}"]
    response = world.client.post(
        "/v1/hosts/join", json=body, headers=bearer(join_token(world)["token"])
    )
    assert response.status_code == 201, response.text
    return body["id"], keys


def add_server(world: V1World, host: str, project: str) -> str:
    server = str(uuid.uuid4())
    now = datetime.now(UTC)
    with write_transaction(world.node.compute.servers.engine) as conn:
        conn.execute(
            insert(ServerRow),
            [{
                "uuid": server, "name": f"s-{server[:8]}", "project": project,
                "user_name": "alice", "flavor_id": "f", "image_id": "i", "status": "ACTIVE",
                "host_uuid": host, "domain_name": f"d-{server[:8]}", "power_metrics": False,
                "shares": [], "created_at": now, "updated_at": now,
            }],
        )  # fmt: skip
    return server


def samples(servers: list[str], count: int, watts: float, start: float | None = None) -> list[Any]:
    start = time.time() - count if start is None else start
    return [
        HostSample(
            start + i,
            1.0,
            "rapl",
            True,
            50.0,
            50.0,
            1000.0 + 50 * i,
            tuple(ServerSample(s, watts, watts, watts * (i + 1)) for s in servers),
        ).to_json()
        for i in range(count)
    ]


def push(world: V1World, host: str, keys: Any, body: list[Any], as_host: str | None = None) -> Any:
    token = mint_host_token(keys.private_key, as_host or host)
    return world.client.post(
        f"/v1/hosts/{host}/energy", json={"samples": body}, headers=bearer(token)
    )


@pytest.fixture
def two_hosts(world: V1World) -> Iterator[tuple[V1World, dict[str, Any]]]:
    east, east_keys = joined(world, "east")
    west, west_keys = joined(world, "west")
    yield (
        world,
        {
            "east": (east, east_keys, add_server(world, east, "proj-a")),
            "west": (west, west_keys, add_server(world, west, "proj-a")),
        },
    )


def test_project_power_sums_both_hosts(two_hosts: tuple[V1World, dict[str, Any]]) -> None:
    world, hosts = two_hosts
    for name, watts in (("east", 10.0), ("west", 5.0)):
        host, keys, server = hosts[name]
        response = push(world, host, keys, samples([server], 5, watts))
        assert response.status_code == 200, response.text
        assert response.json()["stored"] == 5
    power = world.client.get("/v1/projects/proj-a/power", headers=world.admin).json()
    assert power["watts"] == pytest.approx(15.0)
    assert power["joules"] == pytest.approx(50.0 + 25.0)
    assert power["servers"] == 2 and power["sampled"] is True
    assert len(power["history"]) >= 1
    west_server = hosts["west"][2]
    one = world.client.get(f"/v1/servers/{west_server}/power", headers=world.admin).json()
    assert one["watts"] == pytest.approx(5.0) and one["joules"] == pytest.approx(25.0)


def test_a_repeated_batch_changes_nothing(two_hosts: tuple[V1World, dict[str, Any]]) -> None:
    world, hosts = two_hosts
    host, keys, server = hosts["east"]
    body = samples([server], 4, 8.0)
    assert push(world, host, keys, body).json()["stored"] == 4
    again = push(world, host, keys, body).json()
    assert (again["stored"], again["duplicates"]) == (0, 4)
    power = world.client.get("/v1/projects/proj-a/power", headers=world.admin).json()
    assert power["joules"] == pytest.approx(32.0)


def test_a_host_cannot_push_for_another_host_or_its_servers(
    two_hosts: tuple[V1World, dict[str, Any]],
) -> None:
    world, hosts = two_hosts
    east, east_keys, _ = hosts["east"]
    west, _west_keys, west_server = hosts["west"]
    # east's token on west's endpoint
    token = mint_host_token(east_keys.private_key, east)
    response = world.client.post(
        f"/v1/hosts/{west}/energy", json={"samples": samples([], 1, 1.0)}, headers=bearer(token)
    )
    assert response.status_code == 403, response.text
    # east's endpoint, naming west's server
    response = push(world, east, east_keys, samples([west_server], 2, 3.0))
    assert response.status_code == 403
    assert west_server in response.json()["error"]["message"]
    # users, admins included, may not push
    response = world.client.post(
        f"/v1/hosts/{east}/energy", json={"samples": samples([], 1, 1.0)}, headers=world.admin
    )
    assert response.status_code == 403
    power = world.client.get("/v1/projects/proj-a/power", headers=world.admin).json()
    assert power["sampled"] is False


def test_a_bad_batch_is_refused_naming_the_value(
    two_hosts: tuple[V1World, dict[str, Any]],
) -> None:
    world, hosts = two_hosts
    host, keys, server = hosts["east"]
    body = samples([server], 3, 4.0)
    body[1]["servers"][0]["power_watts"] = -3.5
    response = push(world, host, keys, body)
    assert response.status_code == 400
    assert "samples[1].servers[0].power_watts -3.5" in response.json()["error"]["message"]
    assert push(world, host, keys, body[:1]).json()["stored"] == 1  # nothing of it was kept


def test_the_pusher_keeps_a_bounded_backlog_and_delivers_it_in_order_when_the_controller_returns(
    two_hosts: tuple[V1World, dict[str, Any]],
) -> None:
    world, hosts = two_hosts
    host, keys, server = hosts["east"]
    port = free_port()
    with httpx.Client(timeout=5) as client:
        sender = http_sender(
            client,
            f"http://127.0.0.1:{port}",
            host,
            lambda: mint_host_token(keys.private_key, host),
        )
        pusher = EnergyPusher(lambda: None, sender, batch_samples=7, backlog_samples=20)
        start = time.time() - 60
        all_samples = [
            HostSample(
                start + i, 1.0, "rapl", True, 50.0, 50.0, 1000.0 + 50 * i,
                (ServerSample(server, 2.0, 2.0, 2.0 * (i + 1)),),
            )
            for i in range(30)
        ]  # fmt: skip
        for sample in all_samples:
            pusher.offer(sample)
        assert pusher.flush() is False  # nothing listens yet
        stats = pusher.stats()
        assert (stats.queued, stats.dropped_backlog) == (20, 10)
        server_ = uvicorn.Server(
            uvicorn.Config(world.node.app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server_.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not server_.started:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.05)
            assert pusher.flush() is True
        finally:
            server_.should_exit = True
            thread.join(30)
    assert pusher.stats().delivered == 20
    points = world.node.compute.power.history
    assert points is not None
    stored = points.history(server_uuid=server, since=start - 1, until=start + 31, step_s=1)
    assert [round(p.taken_at - start) for p in stored] == list(range(11, 31))


def test_the_agents_file_sd_list_passes_promtool(
    two_hosts: tuple[V1World, dict[str, Any]], tmp_path: Path
) -> None:
    world, hosts = two_hosts
    target = tmp_path / "sd" / "agents.json"
    engine = world.node.compute.servers.engine
    assert write_file_sd(engine, target) is True
    assert write_file_sd(engine, target) is False  # unchanged: not rewritten
    groups = json.loads(target.read_text())
    assert {g["labels"]["host_name"] for g in groups} == {"east", "west"}
    assert {g["labels"]["host_uuid"] for g in groups} == {hosts["east"][0], hosts["west"][0]}
    served = world.client.get("/v1/prometheus/agents", headers=world.admin).json()
    assert served == groups
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "scrape_configs:\n"
        "  - job_name: wattvisor-agents\n"
        "    file_sd_configs:\n"
        f"      - files: ['{target}']\n"
    )
    checked = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr
    member = world.member("alice", "proj-a")
    assert world.client.get("/v1/prometheus/agents", headers=member).status_code == 403


class _Exporter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"wattvisor_agent_test_up 1\n" if self.path == "/metrics" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_a_real_prometheus_scrapes_an_agent_found_through_the_file(
    world: V1World, tmp_path: Path
) -> None:
    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    body, _keys = facts("scraped")
    body["addresses"] = [f"http://127.0.0.1:{exporter.server_address[1]}"]
    response = world.client.post(
        "/v1/hosts/join", json=body, headers=bearer(join_token(world)["token"])
    )
    assert response.status_code == 201, response.text
    target = tmp_path / "agents.json"
    write_file_sd(world.node.compute.servers.engine, target)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: wattvisor-agents\n"
        "    file_sd_configs:\n"
        f"      - files: ['{target}']\n"
        "        refresh_interval: 1s\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            "/usr/bin/prometheus", f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        found: list[Any] = []
        while not found and time.monotonic() < deadline:
            try:
                reply = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query",
                    params={"query": "wattvisor_agent_test_up"}, timeout=5,
                )  # fmt: skip
                if reply.status_code == 200:
                    found = reply.json()["data"]["result"]
            except httpx.TransportError:
                pass
            if not found:
                time.sleep(0.5)
        assert found, (tmp_path / "prometheus.log").read_text()[-2000:]
        labels = found[0]["metric"]
        assert (labels["host_name"], labels["host_uuid"]) == ("scraped", body["id"])
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
        exporter.shutdown()
        exporter.server_close()


def test_members_see_the_history_of_their_own_project_only(
    two_hosts: tuple[V1World, dict[str, Any]],
) -> None:
    world, hosts = two_hosts
    host, keys, server = hosts["east"]
    assert push(world, host, keys, samples([server], 5, 6.0)).status_code == 200
    mine = world.member("alice", "proj-a")
    other = world.member("bob", "proj-b")
    own = world.client.get("/v1/projects/proj-a/power/history?since=3600", headers=mine)
    assert own.status_code == 200 and own.json()[-1]["joules"] == pytest.approx(30.0)
    assert world.client.get(f"/v1/servers/{server}/power/history", headers=mine).status_code == 200
    hidden = world.client.get("/v1/projects/proj-a/power/history", headers=other)
    assert hidden.status_code == 404
    assert world.client.get(f"/v1/servers/{server}/power/history", headers=other).status_code == 404
    empty = world.client.get("/v1/projects/proj-a/power/history?since=0", headers=mine)
    assert empty.status_code == 422 and "since" in empty.text


def test_the_servers_by_watts_list_includes_servers_of_pushing_hosts(
    two_hosts: tuple[V1World, dict[str, Any]],
) -> None:
    world, hosts = two_hosts
    for name, watts in (("east", 3.0), ("west", 9.0)):
        host, keys, server = hosts[name]
        assert push(world, host, keys, samples([server], 3, watts)).status_code == 200
    listing = world.client.get("/v1/power/servers?project=proj-a", headers=world.admin).json()
    assert [(row["id"], row["watts"]) for row in listing] == [
        (hosts["west"][2], 9.0),
        (hosts["east"][2], 3.0),
    ]
    assert all(row["measured"] for row in listing)
