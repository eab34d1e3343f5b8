"""The host protocol over HTTP: every method's dataclasses cross unchanged, host errors
come back as themselves, and only the cluster's controllers may call an agent."""

from __future__ import annotations

import inspect
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from biscuit_auth import KeyPair

from api.served_app import free_port, serving
from support.recording_host import RecordingHost
from wattvisor.agent.app import create_agent_app
from wattvisor.agent.credentials import AgentCredentials, make_controller_dependency
from wattvisor.auth import mint_token
from wattvisor.auth.service_tokens import mint_controller_token, mint_host_token
from wattvisor.compute.hostclient import (
    HostClient,
    HostFacts,
    HostOutcomeUnknown,
    IncomingShares,
    InterfaceAttachment,
    MetadataUpdate,
    MigrationEndpoint,
    SpawnFlavor,
    SpawnImage,
    SpawnRequest,
    SpawnResult,
    VolumeAttachment,
)
from wattvisor.compute.hostclient_http import HttpHostClient
from wattvisor.compute.hostclient_wire import LOCAL_ONLY, WIRE_METHODS, WIRE_TABLE, WireError
from wattvisor.energy.attribution import IntervalEnergy
from wattvisor.energy.snapshot import (
    EnergySnapshot,
    HostEnergy,
    PowerPoint,
    ProcessPower,
    ProjectEnergy,
    VMEnergy,
)
from wattvisor.host.console_log import ConsoleLog, CursorError
from wattvisor.host.driver import DetachTimeout, DomainNotFound, HostError, Inventory
from wattvisor.host.live_migration import MigrationOrder, MigrationProgress, MigrationResult
from wattvisor.host.networks import GuestAddress, GuestNetwork, NetworkSpec
from wattvisor.host.tunnels import TunnelSpec, TunnelState

CLUSTER = str(uuid.uuid4())
HOST = str(uuid.uuid4())

REQUEST = SpawnRequest(
    server_uuid=str(uuid.uuid4()), display_name="web ☃", domain_name="wv-0001",
    project="p1", user="alice",
    flavor=SpawnFlavor("f1", "tiny", 1, 64, 1, 0, 0, {"hw:cpu_policy": "shared"}),
    image=SpawnImage("i1", "busybox", {"os_type": "linux"}, kernel_path="/k", cmdline="c"),
    power_metrics=True, created_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    user_uuid=str(uuid.uuid4()), project_uuid=str(uuid.uuid4()),
    root_volume=VolumeAttachment("v0", "/pool/v0.qcow2", "qcow2"),
    network=GuestNetwork(
        NetworkSpec("nat", "wattvisor", None, "192.168.150.0/24", "192.168.150.1",
                    "fd00:1::/64", "fd00:1::1"),
        "52:54:00:00:00:02",
        (GuestAddress(4, "192.168.150.7", 24, "192.168.150.1"),
         GuestAddress(6, "fd00:1::7", 64, None)),
    ),
)  # fmt: skip
SNAPSHOT = EnergySnapshot(
    taken_at=1.5, interval_s=2.0, source="estimate", busy_fraction=0.25,
    host=HostEnergy(10.0, 5.0, 1.0, 3.0, 2.0, 0.5),
    vms={"u1": VMEnergy("u1", "wv-1", "p1", 4.0, 1.0, True, "libvirt")},
    projects={"p1": ProjectEnergy("p1", 4.0, 1.0, 1)},
    top_processes=(ProcessPower(42, "qemu", 0.75),),
    interval=IntervalEnergy(6.0, 4.0, {"u1": 1.5}, {42: 0.5}, 0.0),
)  # fmt: skip
POINTS = [PowerPoint(1.0, 2.0, 3.0), PowerPoint(4.0, 5.0, 6.0)]

TUNNEL = TunnelSpec("01234567-89ab-4def-8123-456789abcdef", 7, "198.18.0.2", "198.18.0.3",
                    "100.100.0.1/30", "100.100.0.2")  # fmt: skip
INCOMING = IncomingShares("u1", "wv-0001", "p1", ("scaphandre",))
CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "facts": ({}, HostFacts(HOST, "h1", "qemu:///system", frozenset({"HW_CPU_X86_AVX2"}),
                            Inventory(4, 8192, 100))),
    "state": ({}, "up"),
    "domain_exists": ({"domain_name": "wv-0001"}, True),
    "domain_states": ({}, {"u1": "running", "u2": "shutoff"}),
    "spawn": ({"request": REQUEST}, SpawnResult("wv-0001", ("wattvisor-power",), "running")),
    "stop": ({"domain_name": "wv-0001", "timeout_s": 2.5}, None),
    "start": ({"domain_name": "wv-0001"}, None),
    "update_metadata": ({"domain_name": "wv-0001",
                         "update": MetadataUpdate(display_name="renamed", flavor=REQUEST.flavor)},
                        None),
    "resize": ({"domain_name": "wv-0001", "flavor": REQUEST.flavor, "stop_timeout_s": 5.0},
               "running"),
    "console_log": ({"server_uuid": REQUEST.server_uuid, "lines": 20, "cursor": None,
                     "max_bytes": 65536},
                    ConsoleLog("boot\nready ☃\n", "abcd.12", truncated=True)),
    "delete": ({"server_uuid": "u1", "domain_name": "wv-0001"}, None),
    "create_volume": ({"volume_id": "v1", "size_gb": 3, "fmt": "qcow2"}, "/pool/v1.qcow2"),
    "delete_volume": ({"path": "/pool/v1.qcow2"}, None),
    "attach_volume": ({"domain_name": "wv-0001",
                       "volume": VolumeAttachment("v1", "/pool/v1.qcow2", "qcow2")}, None),
    "attach_interface": ({"domain_name": "wv-0001",
                          "interface": InterfaceAttachment("p1", "52:54:00:00:00:01",
                                                           "network", "default", "virtio")},
                         None),
    "detach_by_alias": ({"domain_name": "wv-0001", "alias": "ua-v1"}, None),
    "energy_source": ({}, "rapl"),
    "energy_snapshot": ({}, SNAPSHOT),
    "vm_history": ({"server_uuid": "u1"}, POINTS),
    "project_history": ({"project": "p1"}, POINTS),
    "host_history": ({}, []),
    "migration_endpoint": ({}, MigrationEndpoint("198.18.0.2", "qemu+tcp://198.18.0.2/system")),
    "prepare_incoming": (
        {"network": NetworkSpec("isolated", "wv-net", None, "10.9.0.0/24", "10.9.0.1")}, None
    ),
    "prepare_incoming_shares": ({"shares": INCOMING}, None),
    "plug_incoming_shares": (
        {"shares": IncomingShares("u1", "wv-0001", "p1", ("scaphandre",), 12.5, True)},
        ["scaphandre"],
    ),
    "release_incoming_shares": ({"domain_name": "wv-0001"}, None),
    "tunnel_up": (
        {"spec": TUNNEL}, TunnelState("wvx-0123456789a", 7, 1450, "100.100.0.1/30", 0, 0)
    ),
    "tunnel_down": ({"migration_id": TUNNEL.migration_id},
                    TunnelState("wvx-0123456789a", 7, 1450, "100.100.0.1/30", 10, 20)),
    "tunnels": ({}, []),
    "migrate_out": ({"order": MigrationOrder(TUNNEL.migration_id, "wv-0001",
                                             "qemu+tcp://198.18.0.3/system",
                                             "tcp://100.100.0.2", 0, 60.0),
                     "timeout_s": 60.0},
                    MigrationResult(2.5, 40, 2400, 10**8)),
    "migration_progress": ({"domain_name": "wv-0001"},
                           MigrationProgress(True, 42, 100, 42, 58, 1200)),
    "abort_migration": ({"domain_name": "wv-0001"}, True),
}  # fmt: skip


@dataclass
class Served:
    host: RecordingHost
    client: HttpHostClient
    url: str
    cluster_key: KeyPair
    credentials: AgentCredentials


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    cluster_key = KeyPair()
    credentials = AgentCredentials(tmp_path / "agent")
    credentials.ensure_host_key()
    credentials.learn(
        {
            "host_id": HOST,
            "cluster_id": CLUSTER,
            "cluster_keys": [{"public_key": repr(cluster_key.public_key), "valid_until": None}],
        },
        "http://controller.invalid",
    )
    host = RecordingHost()
    app = create_agent_app(cast(HostClient, host), make_controller_dependency(credentials))
    with serving(app) as port:
        url = f"http://127.0.0.1:{port}"
        token = mint_controller_token(cluster_key.private_key, CLUSTER, timedelta(minutes=5))
        client = HttpHostClient(url, lambda: token, timeout_s=30.0)
        try:
            yield Served(host, client, url, cluster_key, credentials)
        finally:
            client.close()


def test_every_protocol_method_is_on_the_wire_and_has_a_case() -> None:
    members = {name for name, _ in inspect.getmembers(HostClient) if not name.startswith("_")}
    assert members - LOCAL_ONLY == set(WIRE_METHODS)
    assert set(CASES) == set(WIRE_METHODS)


@pytest.mark.parametrize("method", WIRE_METHODS)
def test_each_method_round_trips_its_arguments_and_result(served: Served, method: str) -> None:
    kwargs, result = CASES[method]
    served.host.answers[method] = result
    answer = getattr(served.client, method)(**kwargs)
    assert served.host.calls == [(method, kwargs)]
    assert answer == result
    assert type(answer) is type(result)


@pytest.mark.parametrize("error", [HostError, DomainNotFound, DetachTimeout])
def test_host_errors_are_raised_again_with_their_type_and_message(
    served: Served, error: type[HostError]
) -> None:
    served.host.answers["start"] = error("domain 'wv-0001' is gone")
    with pytest.raises(error, match="domain 'wv-0001' is gone") as caught:
        served.client.start("wv-0001")
    assert type(caught.value) is error


def test_a_cursor_error_of_the_host_is_raised_again_as_itself(served: Served) -> None:
    served.host.answers["console_log"] = CursorError("cursor 'x.1' was given by no answer")
    with pytest.raises(CursorError, match="was given by no answer"):
        served.client.console_log(REQUEST.server_uuid, lines=None, cursor="x.1", max_bytes=10)


def test_an_unexpected_failure_on_the_host_is_a_host_error(served: Served) -> None:
    served.host.answers["domain_states"] = OSError("disk full")
    with pytest.raises(HostError, match="OSError: disk full"):
        served.client.domain_states()


def test_arguments_of_the_wrong_type_are_refused_naming_the_field(served: Served) -> None:
    token = mint_controller_token(served.cluster_key.private_key, CLUSTER, timedelta(minutes=5))
    response = httpx.post(
        f"{served.url}/v1/host/create_volume",
        json={"volume_id": "v1", "size_gb": "3", "fmt": "qcow2"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 422
    assert "size_gb" in response.json()["error"]["message"]
    response = httpx.post(
        f"{served.url}/v1/host/delete_volume",
        json={"path": "/x", "force": True},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 422 and "force" in response.json()["error"]["message"]
    response = httpx.post(
        f"{served.url}/v1/host/reboot_everything",
        json={},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 404 and "domain_states" in response.json()["error"]["message"]
    assert served.host.calls == []


def test_an_answer_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(WireError, match="domain_exists"):
        WIRE_TABLE["domain_exists"].decode_result(b'{"result": "yes"}')


def test_only_the_clusters_controllers_may_call_the_agent(served: Served) -> None:
    other_cluster = mint_controller_token(
        served.cluster_key.private_key, str(uuid.uuid4()), timedelta(minutes=5)
    )
    host_token = mint_host_token(served.cluster_key.private_key, HOST, timedelta(minutes=5))
    forged = mint_controller_token(KeyPair().private_key, CLUSTER, timedelta(minutes=5))
    admin_user = mint_token(served.cluster_key.private_key, "admin", timedelta(minutes=5))
    for token in (other_cluster, host_token, forged, admin_user, "not-a-token"):
        client = HttpHostClient(served.url, lambda token=token: token)
        try:
            with pytest.raises(HostError, match="HTTP 401"):
                client.domain_states()
        finally:
            client.close()
    assert served.host.calls == []


def test_an_agent_that_does_not_answer_is_a_host_error_and_state_down() -> None:
    client = HttpHostClient("http://127.0.0.1:9", lambda: "t", timeout_s=2.0)
    try:
        with pytest.raises(HostError, match="did not answer domain_states"):
            client.domain_states()
        assert client.state().startswith("down")
    finally:
        client.close()


def test_a_refused_connection_says_the_host_did_nothing() -> None:
    client = HttpHostClient("http://127.0.0.1:9", lambda: "t", timeout_s=2.0)
    try:
        with pytest.raises(HostError) as caught:
            client.spawn(REQUEST)
        assert not isinstance(caught.value, HostOutcomeUnknown)
    finally:
        client.close()


def test_an_agent_that_drops_the_call_leaves_its_outcome_unknown() -> None:
    """The request reached the agent, which died before answering (a real socket that
    reads the request and closes): the host may have done it, so the caller must ask."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def drop_one() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5.0)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk

    thread = threading.Thread(target=drop_one, daemon=True)
    thread.start()
    client = HttpHostClient(f"http://127.0.0.1:{port}", lambda: "t", timeout_s=10.0)
    try:
        with pytest.raises(HostOutcomeUnknown, match="gave no answer to spawn"):
            client.spawn(REQUEST)
    finally:
        client.close()
        thread.join(10.0)
        listener.close()


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_an_agent_serving_tls_is_checked_against_the_configured_ca(tmp_path: Path) -> None:
    cluster_key = KeyPair()
    credentials = AgentCredentials(tmp_path / "agent")
    credentials.ensure_host_key()
    credentials.learn(
        {
            "host_id": HOST,
            "cluster_id": CLUSTER,
            "cluster_keys": [{"public_key": repr(cluster_key.public_key), "valid_until": None}],
        },
        "http://controller.invalid",
    )
    host = RecordingHost(answers={"state": "up"})
    cert, key = _self_signed(tmp_path, "agent")
    other, _ = _self_signed(tmp_path, "impostor")
    app = create_agent_app(cast(HostClient, host), make_controller_dependency(credentials))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                       ssl_certfile=str(cert), ssl_keyfile=str(key))
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    token = mint_controller_token(cluster_key.private_key, CLUSTER, timedelta(minutes=5))
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        url = f"https://127.0.0.1:{port}"
        trusted = HttpHostClient(url, lambda: token, ca_file=cert)
        untrusted = HttpHostClient(url, lambda: token, ca_file=other)
        system_cas = HttpHostClient(url, lambda: token)
        try:
            assert trusted.state() == "up"
            for client in (untrusted, system_cas):
                with pytest.raises(HostError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                    client.domain_states()
        finally:
            for client in (trusted, untrusted, system_cas):
                client.close()
        assert [name for name, _ in host.calls] == ["state"]
    finally:
        server.should_exit = True
        thread.join(30)


def test_agent_clients_share_one_tls_context_per_ca_file(tmp_path: Path) -> None:
    import ssl

    from wattvisor.compute.hostclient_http import tls_context

    default = tls_context(None)
    assert tls_context(None) is default  # not a CA bundle load per host
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(OSError):
        tls_context(missing)
