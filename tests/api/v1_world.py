"""The real all-in-one app (AllInOne.build) on libvirt's test driver, driven over HTTP.

Tokens are minted with wattvisor.auth exactly as clients do: the admin from the admin
key file, members from key pairs whose public half an admin registered.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from biscuit_auth import KeyPair
from fastapi.testclient import TestClient

from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token, mint_token_from_file
from wattvisor.config import load_settings

Headers = dict[str, str]


@dataclass
class V1World:
    node: AllInOne
    client: TestClient
    admin: Headers
    kernel: Path
    members: dict[str, Headers] = field(default_factory=dict)

    def member(self, name: str, project: str) -> Headers:
        """Register ``name`` in ``project`` (as the admin) and return its auth headers."""
        keys = KeyPair()
        response = self.client.post(
            "/v1/users",
            json={"name": name, "project": project, "role": "member",
                  "public_key": repr(keys.public_key)},
            headers=self.admin,
        )  # fmt: skip
        assert response.status_code == 201, response.text
        token = mint_token(keys.private_key, name, timedelta(hours=1))
        headers = {"Authorization": f"Bearer {token}"}
        self.members[name] = headers
        return headers

    def wait_server(
        self, server_id: str, headers: Headers, timeout_s: float = 30
    ) -> dict[str, Any]:
        """Poll until the server has no task in progress and is not BUILD."""
        deadline = time.monotonic() + timeout_s
        while True:
            body: dict[str, Any] = self.client.get(
                f"/v1/servers/{server_id}", headers=headers
            ).json()
            if body.get("status") != "BUILD" and body.get("task") is None:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"server {server_id} still busy: {body}")
            time.sleep(0.05)

    def boot(self, headers: Headers, name: str = "web", flavor: str = "tiny") -> dict[str, Any]:
        response = self.client.post(
            "/v1/servers", json={"name": name, "flavor": flavor, "image": "kernel"},
            headers=headers,
        )  # fmt: skip
        assert response.status_code == 202, response.text
        return self.wait_server(response.json()["id"], headers)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[V1World]:
    settings = load_settings(
        data_dir=tmp_path / "data",
        host={"libvirt_uri": "test:///default", "virt_type": "qemu",
              "instance_name_template": f"wvapi-{secrets.token_hex(4)}-%04x"},
        energy={"source": "model", "interval_s": 0.1},
        compute={"ready_image": False, "workers": 2},
    )  # fmt: skip
    node = AllInOne.build(settings)
    admin_token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
    admin = {"Authorization": f"Bearer {admin_token}"}
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    client = TestClient(node.app, raise_server_exceptions=False)
    made = client.post(
        "/v1/images", json={"name": "kernel", "kernel_path": str(kernel), "cmdline": "quiet"},
        headers=admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    try:
        yield V1World(node, client, admin, kernel)
    finally:
        client.close()
        node.stop()
