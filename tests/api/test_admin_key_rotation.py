"""``wattvisor keys rotate-admin``: the admin key is replaced, and a running API refuses the
old key's tokens from the next request on, though another process made the change."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from biscuit_auth import KeyPair

from api.served_app import serving
from api.v1_world import V1World
from wattvisor.auth import mint_token_from_file


@pytest.fixture
def api(world: V1World) -> Iterator[httpx.Client]:
    with (
        serving(world.node.app) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _rotate_in_another_process(world: V1World) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTVISOR_")}
    env["WATTVISOR_DATA_DIR"] = str(world.node.settings.data_dir)
    src = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "wattvisor.cli", "keys", "rotate-admin"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_old_admin_tokens_are_refused_right_after_rotation(
    world: V1World, api: httpx.Client
) -> None:
    key_path = world.node.settings.admin_key_path
    old = mint_token_from_file(key_path, "admin", timedelta(hours=1))
    # Used once, so that the running API has the user and the signature cached.
    assert api.get("/v1/me", headers=_bearer(old)).json()["role"] == "admin"
    traits_version = {"OpenStack-API-Version": "placement 1.6"}  # traits came in 1.6
    assert (
        api.get("/placement/traits", headers={**_bearer(old), **traits_version}).status_code == 200
    )

    # An admin the old key's holder may have made for themselves is pointed out.
    made = api.post(
        "/v1/users", headers=_bearer(old),
        json={"name": "backdoor", "project": "x", "role": "admin",
              "public_key": repr(KeyPair().public_key)},
    )  # fmt: skip
    assert made.status_code == 201, made.text

    rotated = _rotate_in_another_process(world)
    assert rotated.returncode == 0, rotated.stderr
    new_public = rotated.stdout.strip()
    assert new_public.startswith("ed25519/") and "ed25519-private" not in rotated.stderr
    assert "other users with role admin: backdoor" in " ".join(rotated.stderr.split())

    for path in ("/v1/me", "/v1/hosts", "/placement/traits"):
        refused = api.get(path, headers={**_bearer(old), **traits_version})
        assert refused.status_code == 401, (path, refused.text)
    assert api.get("/v1/me", headers=_bearer(old)).json()["error"]["code"] == (
        "token_signature_invalid"
    )

    new = mint_token_from_file(key_path, "admin", timedelta(hours=1))
    assert api.get("/v1/me", headers=_bearer(new)).json()["role"] == "admin"
    shown = api.get("/v1/users/admin", headers=_bearer(new)).json()
    assert shown["public_key"] == new_public
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.with_name(key_path.name + ".pub").read_text().strip() == new_public
    assert sorted(p.name for p in key_path.parent.glob(".admin.key*")) == []
