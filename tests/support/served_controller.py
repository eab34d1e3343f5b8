"""A real controller (AllInOne on libvirt's test driver) served over HTTP on loopback,
behind an ASGI layer that counts what it serves and can damage an answer in transit.

For the image transfer tests: the server side counts every request and the body
bytes it sent (so "downloaded once" and "resumed, not restarted" are measured where
the bytes leave), and can cut an answer after N body bytes (an interrupted download)
or flip one byte (corruption in transit), each once.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from wattvisor.agent.credentials import AgentCredentials, join_cluster
from wattvisor.allinone import AllInOne
from wattvisor.auth import mint_token_from_file
from wattvisor.config import load_settings

Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Any, Any], Awaitable[None]]


class TransferCut(RuntimeError):
    """Raised inside the server to drop a connection mid-answer, as a network would."""


@dataclass
class Served:
    """One request the controller answered: what was asked and how many body bytes left."""

    method: str
    path: str
    query: str
    range: str | None
    status: int = 0
    body_bytes: int = 0


@dataclass
class TransferLog:
    """The app behind a record of every request and its body bytes, with one-shot faults."""

    app: Asgi
    served: list[Served] = field(default_factory=list)
    cut_after: int | None = None
    """Drop the next image file answer's connection after this many body bytes."""
    flip_at: int | None = None
    """Flip the byte at this offset of the next image file answer's body."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def image_requests(self, image_id: str) -> list[Served]:
        with self._lock:
            return [s for s in self.served if s.path == f"/v1/images/{image_id}/file"]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        record = Served(
            scope["method"], scope["path"], scope.get("query_string", b"").decode(),
            headers.get("range"),
        )  # fmt: skip
        with self._lock:
            self.served.append(record)
        is_file = scope["path"].endswith("/file")
        with self._lock:
            cut, flip = (self.cut_after, self.flip_at) if is_file else (None, None)
            if is_file:
                self.cut_after = self.flip_at = None

        async def counting_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            elif message["type"] == "http.response.body":
                body = bytes(message.get("body", b""))
                start = record.body_bytes
                if flip is not None and start <= flip < start + len(body):
                    damaged = bytearray(body)
                    damaged[flip - start] ^= 0x01
                    body = bytes(damaged)
                if cut is not None and start + len(body) > cut:
                    body = body[: max(0, cut - start)]
                    record.body_bytes += len(body)
                    await send({**message, "body": body, "more_body": True})
                    raise TransferCut(f"connection dropped after {cut} body bytes")
                record.body_bytes += len(body)
                message = {**message, "body": body}
            await send(message)

        await self.app(scope, receive, counting_send)


@dataclass
class Controller:
    node: AllInOne
    url: str
    log: TransferLog
    admin: dict[str, str]
    tmp: Path

    def join_agent(self, name: str = "edge-1") -> AgentCredentials:
        """A host joined over the real join flow; its credentials mint host tokens."""
        with httpx.Client(timeout=30) as client:
            issued = client.post(
                f"{self.url}/v1/hosts/join-tokens", json={"ttl": "1h"}, headers=self.admin
            )
            assert issued.status_code == 201, issued.text
            credentials = AgentCredentials(self.tmp / f"agent-{name}")
            join_cluster(
                credentials, client, self.url, issued.json()["token"],
                {"id": str(uuid.uuid4()), "name": name, "libvirt_uri": "qemu:///system",
                 "traits": [], "inventory": {"VCPU": 4, "MEMORY_MB": 4096, "DISK_GB": 20},
                 "energy_source": "none", "addresses": ["https://127.0.0.1:8775"]},
            )  # fmt: skip
        return credentials


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served_controller(tmp: Path, *, workers: int = 2) -> Iterator[Controller]:
    """The all-in-one controller served by uvicorn in a thread on a free loopback port."""
    port = _free_port()
    settings = load_settings(
        data_dir=tmp / "controller",
        host={"libvirt_uri": "test:///default", "virt_type": "qemu",
              "instance_name_template": f"wvimg-{secrets.token_hex(4)}-%04x"},
        energy={"source": "model", "interval_s": 0.2},
        compute={"ready_image": False, "workers": workers},
        api={"port": port},
    )  # fmt: skip
    node = AllInOne.build(settings)
    node.start()
    token = mint_token_from_file(settings.admin_key_path, "admin", timedelta(hours=1))
    log = TransferLog(node.app)
    server = uvicorn.Server(uvicorn.Config(log, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield Controller(
            node, f"http://127.0.0.1:{port}", log, {"Authorization": f"Bearer {token}"}, tmp
        )
    finally:
        server.should_exit = True
        thread.join(30)
        node.stop()
