"""What a ``wattvisor controller`` serves its joined hosts' agents besides joining and
heartbeats: the energy pushes that make the fleet's history, and image files for their
builds; the agents' routes are matched before the rest of the API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from biscuit_auth import KeyPair
from starlette.testclient import TestClient

from wattvisor.auth import Principal
from wattvisor.auth.service_tokens import mint_host_token
from wattvisor.compute.host_trust import JoinRequest
from wattvisor.config import load_settings
from wattvisor.controller import Controller
from wattvisor.energy.fleet_samples import HostSample
from wattvisor.host.driver import Inventory

ADMIN = Principal("admin", "admin", "admin")


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    settings = load_settings(
        data_dir=tmp_path / "data",
        store={"url": f"sqlite:///{tmp_path / 'store.db'}"},
        compute={"ready_image": False},
    )
    node = Controller.build(settings, require_shared_store=False)
    try:
        yield node
    finally:
        node.stop()


def _joined(node: Controller) -> tuple[str, KeyPair]:
    trust = node.app.state.host_trust
    pair = KeyPair()
    request = JoinRequest(
        host_id=str(uuid.uuid4()), name="edge-1", libvirt_uri="qemu:///system",
        traits=frozenset(), inventory=Inventory(vcpu=8, memory_mb=8192, disk_gb=100),
        energy_source="rapl", addresses=("http://127.0.0.1:9",),
        public_key=repr(pair.public_key),
    )  # fmt: skip
    token = trust.create_join_token(ADMIN, timedelta(hours=1)).token
    trust.join(trust.join_verifier().verify(token), request)
    return request.host_id, pair


def test_a_joined_host_pushes_its_energy_samples_to_a_controller(controller: Controller) -> None:
    import time

    host_id, pair = _joined(controller)
    now = time.time()
    samples = [
        HostSample(now - 10 + 2 * k, 2.0, "rapl", True, 100.0, 200.0, 200.0 * (k + 1)).to_json()
        for k in range(5)
    ]
    with TestClient(controller.app) as client:
        response = client.post(
            f"/v1/hosts/{host_id}/energy",
            json={"samples": samples},
            headers={"Authorization": f"Bearer {mint_host_token(pair.private_key, host_id)}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["stored"] == 5
        again = client.post(
            f"/v1/hosts/{host_id}/energy",
            json={"samples": samples},
            headers={"Authorization": f"Bearer {mint_host_token(pair.private_key, host_id)}"},
        )
        assert again.json()["duplicates"] == 5


def test_a_joined_host_fetches_image_files_from_a_controller(
    controller: Controller, tmp_path: Path
) -> None:
    host_id, pair = _joined(controller)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel bytes")
    image = controller.compute.catalog.create_image("tiny", kernel_path=str(kernel))
    with TestClient(controller.app) as client:
        response = client.get(
            f"/v1/images/{image.id}/file",
            params={"part": "kernel"},
            headers={"Authorization": f"Bearer {mint_host_token(pair.private_key, host_id)}"},
        )
    assert response.status_code == 200, response.text
    assert response.content == b"kernel bytes"


def test_the_agents_routes_come_before_the_rest_of_the_api_and_placement(
    controller: Controller,
) -> None:
    from starlette.routing import Match

    def first_full_match(path: str, method: str) -> int:
        scope = {"type": "http", "path": path, "method": method, "root_path": "",
                 "headers": [], "query_string": b""}  # fmt: skip
        for n, route in enumerate(controller.app.router.routes):
            if route.matches(scope)[0] is Match.FULL:
                return n
        raise AssertionError(f"nothing answers {method} {path}")

    host = str(uuid.uuid4())
    beat = first_full_match(f"/v1/hosts/{host}/heartbeat", "POST")
    push = first_full_match(f"/v1/hosts/{host}/energy", "POST")
    servers = first_full_match("/v1/servers", "GET")
    placement = first_full_match("/placement/resource_providers", "GET")
    assert beat <= push < servers < placement
