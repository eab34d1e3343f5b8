"""``/v1/prometheus/targets`` and ``/v1/prometheus/metrics`` over HTTP: who sees which
targets and labels, refused exporter ports, and the service metrics (the all-in-one
app on libvirt's test driver, with an isolated network giving servers addresses)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.v1_world import V1World
from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token_from_file
from wattvisor.config import load_settings


@pytest.fixture
def world(tmp_path: Path) -> Iterator[V1World]:
    settings = load_settings(
        data_dir=tmp_path / "data",
        host={
            "libvirt_uri": "test:///default", "virt_type": "qemu",
            "instance_name_template": f"wvprom-{secrets.token_hex(4)}-%04x",
            "network": {
                "mode": "isolated", "name": f"wvtest-net-{secrets.token_hex(4)}",
                "ipv4_subnet": "10.251.11.0/28", "ipv6_subnet": "fd57:7476:6973:b::/64",
            },
        },
        energy={"source": "model", "interval_s": 0.1},
        compute={"ready_image": False, "workers": 2},
        history={"prometheus_vm_address": "ipv6"},
    )  # fmt: skip
    node = AllInOne.build(settings)
    token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
    admin = {"Authorization": f"Bearer {token}"}
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    client = TestClient(node.app, raise_server_exceptions=False)
    for made in (
        client.post("/v1/images", json={"name": "kernel", "kernel_path": str(kernel)},
                    headers=admin),
        client.post("/v1/flavors", json={"name": "exported", "vcpus": 1, "ram_mb": 64,
                                         "extra_specs": {"prometheus_exporter_port": "9100"}},
                    headers=admin),
    ):  # fmt: skip
        assert made.status_code == 201, made.text
    try:
        yield V1World(node, client, admin, kernel)
    finally:
        client.close()
        node.stop()


def _targets(world: V1World, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = world.client.get("/v1/prometheus/targets", headers=headers)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def test_members_see_their_own_projects_targets_without_the_host_and_admins_all_with_it(
    world: V1World,
) -> None:
    alice = world.member("alice", "proj-a")
    bob = world.member("bob", "proj-b")
    mine = world.boot(alice, "web", "exported")
    theirs = world.boot(bob, "db", "exported")
    world.boot(alice, "plain")  # tiny: no exporter port
    assert mine["status"] == theirs["status"] == "ACTIVE"

    (own,) = _targets(world, alice)
    assert own["labels"] == {
        "instance": mine["id"], "name": "web", "project": "proj-a", "flavor": "exported"
    }  # fmt: skip
    ipv6 = next(
        a["addr"] for addrs in mine["addresses"].values() for a in addrs if a["version"] == 6
    )
    assert own["targets"] == [f"[{ipv6}]:9100"]
    assert [t["labels"]["instance"] for t in _targets(world, bob)] == [theirs["id"]]

    every = {t["labels"]["instance"]: t["labels"] for t in _targets(world, world.admin)}
    assert set(every) == {mine["id"], theirs["id"]}
    host = world.client.get(f"/v1/servers/{mine['id']}", headers=world.admin).json()["host"]
    assert every[mine["id"]]["host"] == host
    assert world.client.get("/v1/prometheus/targets").status_code == 401


def test_a_server_leaves_the_targets_when_stopped_and_when_deleted(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    web = world.boot(alice, "web", "exported")["id"]
    assert [t["labels"]["instance"] for t in _targets(world, alice)] == [web]
    assert world.client.post(f"/v1/servers/{web}/stop", headers=alice).status_code == 202
    assert world.wait_server(web, alice)["status"] == "SHUTOFF"
    assert _targets(world, alice) == []
    assert world.client.post(f"/v1/servers/{web}/start", headers=alice).status_code == 202
    assert world.wait_server(web, alice)["status"] == "ACTIVE"
    assert len(_targets(world, alice)) == 1
    assert world.client.delete(f"/v1/servers/{web}", headers=alice).status_code in (202, 204)
    world.wait_server(web, alice)
    assert _targets(world, alice) == []


def test_a_bad_exporter_port_is_refused_naming_it_and_nothing_is_saved(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    servers_before = world.client.get("/v1/servers", headers=world.admin).json()
    refused = world.client.post(
        "/v1/servers",
        json={"name": "web", "flavor": "tiny", "image": "kernel",
              "metadata": {"prometheus_exporter_port": "70000"}},
        headers=alice,
    )  # fmt: skip
    assert refused.status_code == 400, refused.text
    assert "prometheus_exporter_port='70000'" in refused.text
    assert "an integer from 1 to 65535" in refused.text
    assert world.client.get("/v1/servers", headers=world.admin).json() == servers_before

    flavor = world.client.post(
        "/v1/flavors",
        json={"name": "bad", "vcpus": 1, "ram_mb": 64,
              "extra_specs": {"prometheus_exporter_port": "metrics"}},
        headers=world.admin,
    )  # fmt: skip
    assert flavor.status_code == 400 and "prometheus_exporter_port='metrics'" in flavor.text
    image = world.client.post(
        "/v1/images",
        json={"name": "bad", "kernel_path": str(world.kernel),
              "properties": {"prometheus_exporter_port": "0"}},
        headers=world.admin,
    )  # fmt: skip
    assert image.status_code == 400 and "prometheus_exporter_port='0'" in image.text
    names = {f["name"] for f in world.client.get("/v1/flavors", headers=world.admin).json()}
    assert "bad" not in names
    images = {i["name"] for i in world.client.get("/v1/images", headers=world.admin).json()}
    assert "bad" not in images


def test_server_metadata_is_kept_and_shown_and_its_port_wins(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    created = world.client.post(
        "/v1/servers",
        json={"name": "web", "flavor": "exported", "image": "kernel",
              "metadata": {"prometheus_exporter_port": "8080", "role": "frontend"}},
        headers=alice,
    )  # fmt: skip
    assert created.status_code == 202, created.text
    shown = world.wait_server(created.json()["id"], alice)
    assert shown["metadata"] == {"prometheus_exporter_port": "8080", "role": "frontend"}
    (target,) = _targets(world, alice)
    assert target["targets"][0].endswith("]:8080")


def test_the_service_metrics_are_for_admins_and_carry_the_service_template(
    world: V1World,
) -> None:
    alice = world.member("alice", "proj-a")
    web = world.client.post(
        "/v1/servers",
        json={"name": "web", "flavor": "tiny", "image": "kernel",
              "metadata": {"service_template": "31"}},
        headers=alice,
    ).json()["id"]  # fmt: skip
    plain = world.boot(alice, "plain")["id"]
    world.wait_server(web, alice)
    assert world.client.get("/v1/prometheus/metrics", headers=alice).status_code == 403
    response = world.client.get("/v1/prometheus/metrics", headers=world.admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert f'wattvisor_server_service_template{{instance="{web}"}} 31.0' in text
    assert f'wattvisor_server_service_template{{instance="{plain}"}} -1.0' in text
    assert f'instance="{web}",name="web",project="proj-a"}} 1.0' in text
