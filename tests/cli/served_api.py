"""The real all-in-one app served over HTTP on libvirt's test driver, for CLI tests."""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from biscuit_auth import KeyPair
from typer.testing import CliRunner, Result

from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token
from wattvisor.cli.context import state
from wattvisor.cli.main import app as cli
from wattvisor.compute import LocalHostClient
from wattvisor.config import load_settings
from wattvisor.host.driver import HostDriver

runner = CliRunner()
Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Any, Any], Awaitable[None]]


class RequestLog:
    """The app behind a list of the ``METHOD path?query`` of every HTTP request it got."""

    def __init__(self, app: Asgi) -> None:
        self.app = app
        self.requests: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").decode()
            line = f"{scope['method']} {scope['path']}"
            self.requests.append(f"{line}?{query}" if query else line)
        await self.app(scope, receive, send)


@dataclass
class Served:
    node: AllInOne
    env: dict[str, str]
    api: uvicorn.Server
    log: RequestLog = field(repr=False)

    def stop_api(self) -> None:
        """Stop serving HTTP (the service itself keeps running), as if the API died."""
        self.api.should_exit = True

    def run(self, *args: str, **env: str) -> Result:
        state._settings = None
        return runner.invoke(cli, list(args), env={**self.env, **env})

    def member_token(self, user: str = "alice", project: str = "proj-a") -> str:
        """Register ``user`` as a member of ``project`` and mint a token of theirs."""
        keys = KeyPair()
        self.node.compute.users.register(user, project, "member", repr(keys.public_key))
        return mint_token(keys.private_key, user, timedelta(minutes=10))

    def json(self, *args: str, **env: str) -> Any:
        """The JSON a command printed; the test fails with its output if it did not succeed."""
        result = self.run(*args, **env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


def add_test_driver_host(served: Served, directory: Path, name: str) -> str:
    """Another host on libvirt's test driver (a node file of its own); returns its id.

    Added in process, as the controller adds a host it drives itself: an admin may not
    register a URI that makes libvirt read a file.
    """
    node = directory / f"node-{secrets.token_hex(4)}.xml"
    node.write_text(
        "<node><cpu><mode>fixed</mode><nodes>1</nodes><sockets>1</sockets>"
        "<cores>4</cores><threads>1</threads><active>4</active><mhz>2000</mhz>"
        "<model>x86_64</model></cpu><memory>8388608</memory></node>"
    )
    settings = served.node.settings
    remote = settings.host.model_copy(update={"share_local_fs": {}})
    driver = HostDriver(remote, settings.data_dir, uri=f"test://{node}")
    return served.node.compute.hosts.add(LocalHostClient(driver), name=name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
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
    log = RequestLog(node.app)
    server = uvicorn.Server(uvicorn.Config(log, host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield Served(node, env, server, log)
    finally:
        server.should_exit = True
        thread.join(30)
        node.stop()
