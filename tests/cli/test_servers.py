"""``wattvisor server ...`` and ``wattvisor power top`` against the real API served over HTTP."""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from biscuit_auth import KeyPair
from typer.testing import CliRunner, Result

from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token
from wattvisor.cli.context import state
from wattvisor.cli.main import app as cli
from wattvisor.config import load_settings

runner = CliRunner()


@dataclass
class Served:
    node: AllInOne
    env: dict[str, str]

    def run(self, *args: str, **env: str) -> Result:
        state._settings = None
        return runner.invoke(cli, list(args), env={**self.env, **env})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTVISOR_")}
    env.update({
        "WATTVISOR_DATA_DIR": str(tmp_path / "data"),
        "WATTVISOR_HOST__LIBVIRT_URI": "test:///default",
        "WATTVISOR_API__PORT": str(port),
        "COLUMNS": "250",
    })  # fmt: skip
    settings = load_settings(
        data_dir=tmp_path / "data",
        host={"libvirt_uri": "test:///default", "virt_type": "qemu",
              "instance_name_template": f"wvcli-{secrets.token_hex(4)}-%04x"},
        energy={"source": "model", "interval_s": 0.2},
        compute={"ready_image": False},
        api={"port": port},
    )  # fmt: skip
    node = AllInOne.build(settings)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    node.compute.catalog.create_image("kernel", kernel_path=str(kernel))
    node.start()
    server = uvicorn.Server(uvicorn.Config(node.app, host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield Served(node, env)
    finally:
        server.should_exit = True
        thread.join(30)
        node.stop()


def test_create_wait_list_show_top_delete(served: Served) -> None:
    created = served.run("server", "create", "web", "--flavor", "tiny", "--image", "kernel",
                         "--wait", "--json")  # fmt: skip
    assert created.exit_code == 0, created.output
    server = json.loads(created.stdout)
    assert server["status"] == "ACTIVE" and server["name"] == "web"

    listed = served.run("server", "list")
    assert listed.exit_code == 0, listed.output
    assert server["id"] in listed.stdout and "ACTIVE" in listed.stdout
    shown = served.run("server", "show", server["id"], "--json")
    assert json.loads(shown.stdout)["id"] == server["id"]
    top = served.run("power", "top", "--once")
    assert top.exit_code == 0, top.output
    assert server["id"] in top.stdout and "Watts" in top.stdout

    deleted = served.run("server", "delete", server["id"], "--wait")
    assert deleted.exit_code == 0, deleted.output
    assert "DELETED" in deleted.output
    assert server["id"] not in served.run("server", "list").stdout


def test_failed_build_exits_1_with_the_fault(served: Served) -> None:
    result = served.run("server", "create", "m", "--flavor", "tiny", "--image", "kernel",
                        "--power-metrics", "--wait")  # fmt: skip
    assert result.exit_code == 1
    assert "COMPUTE_SHARE_LOCAL_FS" in result.output


def test_api_errors_are_shown_as_the_api_words_them(served: Served) -> None:
    result = served.run("server", "create", "x", "--flavor", "huge", "--image", "kernel")
    assert result.exit_code == 1
    assert "flavor 'huge' does not exist" in result.output and "not_found" in result.output


def test_a_member_token_sees_its_own_project_only(served: Served) -> None:
    served.run("server", "create", "admins", "--flavor", "tiny", "--image", "kernel", "--wait")
    keys = KeyPair()
    served.node.compute.users.register("alice", "proj-a", "member", repr(keys.public_key))
    token = mint_token(keys.private_key, "alice", timedelta(minutes=10))
    mine = served.run("server", "create", "mine", "--flavor", "tiny", "--image", "kernel",
                      "--wait", "--json", WATTVISOR_TOKEN=token)  # fmt: skip
    assert mine.exit_code == 0, mine.output
    listed = served.run("server", "list", "--json", WATTVISOR_TOKEN=token)
    assert [s["name"] for s in json.loads(listed.stdout)] == ["mine"]


def test_unreachable_api_is_reported(served: Served) -> None:
    result = served.run("server", "list", "--url", f"http://127.0.0.1:{_free_port()}")
    assert result.exit_code == 1 and "cannot reach the API" in result.output


def test_servers_are_found_by_unique_name(served: Served) -> None:
    created = served.run("server", "create", "named", "--flavor", "tiny", "--image", "kernel",
                         "--wait", "--json")  # fmt: skip
    server_id = json.loads(created.stdout)["id"]
    shown = served.run("server", "show", "named", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["id"] == server_id
    missing = served.run("server", "show", "nobody")
    assert missing.exit_code == 1 and "no server named 'nobody'" in missing.output
    served.run("server", "create", "named", "--flavor", "tiny", "--image", "kernel", "--wait")
    ambiguous = served.run("server", "delete", "named")
    assert ambiguous.exit_code == 1 and "2 servers are named 'named'" in ambiguous.output
    deleted = served.run("server", "delete", server_id, "--wait")
    assert deleted.exit_code == 0, deleted.output
    by_name = served.run("server", "delete", "named", "--wait")
    assert by_name.exit_code == 0 and "DELETED" in by_name.output


def test_admin_registers_a_user_who_then_uses_their_own_key(
    served: Served, tmp_path: Path
) -> None:
    key = tmp_path / "bob.key"
    made = served.run("keys", "create", "--out", str(key))
    assert made.exit_code == 0, made.output
    public = next(p for p in tmp_path.iterdir() if p.name.startswith("bob.key") and p != key)
    created = served.run("user", "create", "bob", "--project", "proj-b",
                         "--public-key-file", str(public))  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "bob" in served.run("user", "list").stdout
    minted = served.run("token", "create", "--key", str(key), "--user", "bob")
    assert minted.exit_code == 0, minted.output
    token = minted.stdout.strip()
    assert served.run("server", "list", WATTVISOR_TOKEN=token).exit_code == 0
    # A member cannot register users.
    refused = served.run("user", "create", "eve", "--project", "proj-b",
                         "--public-key-file", str(public), WATTVISOR_TOKEN=token)  # fmt: skip
    assert refused.exit_code == 1 and "admin" in refused.output
    assert served.run("user", "delete", "bob").exit_code == 0
    gone = served.run("server", "list", WATTVISOR_TOKEN=token)
    assert gone.exit_code == 1 and "401" in gone.output


def test_user_create_needs_exactly_one_public_key_source(served: Served) -> None:
    result = served.run("user", "create", "x", "--project", "p")
    assert result.exit_code == 1 and "exactly one of --public-key" in result.output
