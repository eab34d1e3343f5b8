"""End to end through HTTP only: a member boots the busybox image with power metrics.

The real app (AllInOne.build) drives the real libvirtd (qemu:///system, TCG) with
``share_local_fs`` in a scratch directory and the model energy source. The guest
learns its share's mount tag from its config drive, mounts it read-only with
virtiofs and prints its growing ``energy_uj``; the API reports the same server's
energy; another project cannot see the server; members never see host paths or
host names, admins do.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import libvirt
import pytest
from biscuit_auth import KeyPair
from fastapi.testclient import TestClient

from support.guest_domains import destroy_and_undefine, marker_fields, read_console, wait_for_marker
from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token, mint_token_from_file
from wattvisor.config import load_settings
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

TAG = "wvpower"
BOOT_TIMEOUT_S = 180.0
Headers = dict[str, str]


@dataclass
class Cloud:
    node: AllInOne
    client: TestClient
    admin: Headers
    scratch: Path

    def member(self, name: str, project: str) -> Headers:
        keys = KeyPair()
        response = self.client.post(
            "/v1/users",
            json={"name": name, "project": project, "public_key": repr(keys.public_key)},
            headers=self.admin,
        )
        assert response.status_code == 201, response.text
        token = mint_token(keys.private_key, name, timedelta(hours=1))
        return {"Authorization": f"Bearer {token}"}

    def wait_server(self, server_id: str, headers: Headers) -> dict[str, Any]:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            body: dict[str, Any] = self.client.get(
                f"/v1/servers/{server_id}", headers=headers
            ).json()
            if body["status"] != "BUILD" and body["task"] is None:
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.2)


@pytest.fixture
def cloud(
    libvirt_system: libvirt.virConnect, guest_image: GuestImage, world_readable_tmp: Path
) -> Iterator[Cloud]:
    share_dir = world_readable_tmp / "scaphandre"
    share_dir.mkdir()
    settings = load_settings(
        data_dir=world_readable_tmp / "data",
        host={
            "libvirt_uri": "qemu:///system",
            "virt_type": "qemu",
            "share_local_fs": {str(share_dir): TAG},
            "instance_name_template": f"wvtest-{secrets.token_hex(5)}-%04x",
        },
        energy={"source": "model", "interval_s": 0.5},
    )
    node = AllInOne.build(settings)
    message = node.ensure_ready_image()
    assert "busybox" in message and "not offered" not in message, message
    node.start()
    token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
    client = TestClient(node.app, raise_server_exceptions=False)
    try:
        yield Cloud(node, client, {"Authorization": f"Bearer {token}"}, world_readable_tmp)
    finally:
        admin = {"Authorization": f"Bearer {token}"}
        leftovers = client.get("/v1/servers", headers=admin).json()
        for server in leftovers:
            client.delete(f"/v1/servers/{server['id']}", headers=admin)
        for server in leftovers:
            node.compute.servers.wait(server["id"], 60)
            name = server.get("domain_name")
            if name:  # last resort when the API could not remove it
                with contextlib.suppress(libvirt.libvirtError):
                    destroy_and_undefine(libvirt_system.lookupByName(name))
        client.close()
        node.stop()


def _energy_readings(console: Path) -> list[int]:
    values = []
    for line in read_console(console).splitlines():
        if line.startswith("WV-ENERGY "):
            values.append(int(marker_fields(line)["energy_uj"]))
    return values


def test_guest_reads_its_energy_and_the_api_reports_it(cloud: Cloud) -> None:
    client = cloud.client
    flavor = client.post(
        "/v1/flavors",
        json={"name": "metered", "vcpus": 1, "ram_mb": 256, "disk_gb": 1,
              "extra_specs": {"hw:power_metrics": "true"}},
        headers=cloud.admin,
    )  # fmt: skip
    assert flavor.status_code == 201, flavor.text
    alice = cloud.member("alice", "proj-a")
    bob = cloud.member("bob", "proj-b")

    created = client.post(
        "/v1/servers", json={"name": "meter-me", "flavor": "metered", "image": "busybox"},
        headers=alice,
    )  # fmt: skip
    assert created.status_code == 202, created.text
    server_id = created.json()["id"]
    server = cloud.wait_server(server_id, alice)
    assert server["status"] == "ACTIVE", server
    assert server["power_metrics"] is True and server["mount_tags"] == [TAG]

    # The guest found the tag on its config drive, mounted the share and reads a growing counter.
    console = cloud.node.settings.data_dir / "instances" / server_id / "console.log"
    metadata_line = wait_for_marker(console, "WV-METADATA", BOOT_TIMEOUT_S)
    assert marker_fields(metadata_line) == {"uuid": server_id, "tag": TAG}, metadata_line
    mounted = wait_for_marker(console, "WV-MOUNTED", BOOT_TIMEOUT_S)
    assert f"tag={TAG}" in mounted
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    readings = _energy_readings(console)
    while (len(readings) < 2 or readings[-1] <= readings[0]) and time.monotonic() < deadline:
        time.sleep(1)
        readings = _energy_readings(console)
    assert len(readings) >= 2 and readings[-1] > readings[0] >= 0, read_console(console)

    power = client.get(f"/v1/servers/{server_id}/power", headers=alice)
    assert power.status_code == 200, power.text
    assert power.json()["sampled"] is True and power.json()["joules"] > 0
    assert power.json()["source"] == "estimate" and power.json()["measured"] is False
    project = client.get("/v1/projects/proj-a/power", headers=alice).json()
    assert project["joules"] > 0 and project["servers"] == 1

    # Another project: the server does not exist for it.
    for path in (f"/v1/servers/{server_id}", f"/v1/servers/{server_id}/power",
                 f"/v1/servers/{server_id}/metadata"):  # fmt: skip
        denied = client.get(path, headers=bob)
        assert denied.status_code == 404 and denied.json()["error"]["code"] == "not_found"

    # Members see mount tags, never host paths or host names; admins see the host.
    member_json = json.dumps([
        client.get(f"/v1/servers/{server_id}", headers=alice).json(),
        client.get("/v1/servers", headers=alice).json(),
        client.get(f"/v1/servers/{server_id}/metadata", headers=alice).json(),
        client.get(f"/v1/servers/{server_id}/power", headers=alice).json(),
        client.get("/v1/images", headers=alice).json(),
    ])  # fmt: skip
    assert TAG in member_json
    assert str(cloud.scratch) not in member_json
    assert f'"{socket.gethostname()}"' not in member_json
    admin_server = client.get(f"/v1/servers/{server_id}", headers=cloud.admin).json()
    assert admin_server["host"] == socket.gethostname()
    host = client.get(f"/v1/hosts/{admin_server['host_id']}", headers=cloud.admin).json()
    assert host["libvirt_uri"] == "qemu:///system" and host["state"] == "up"
    assert "COMPUTE_SHARE_LOCAL_FS" in host["traits"] and host["usage"]["VCPU"] == 1
    host_power = client.get(f"/v1/hosts/{host['id']}/power", headers=cloud.admin).json()
    assert host_power["joules"] > 0

    deleted = client.delete(f"/v1/servers/{server_id}", headers=alice)
    assert deleted.status_code == 202
    assert cloud.wait_server(server_id, alice)["status"] == "DELETED"
    assert not console.parent.exists()
    assert not (cloud.scratch / "scaphandre" / admin_server["domain_name"]).exists()
