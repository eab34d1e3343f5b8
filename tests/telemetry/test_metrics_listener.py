"""The /metrics listener over real HTTP: its own address, the bearer token, managed VMs only."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import libvirt
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from support.guest_domains import GuestDomainSpec, unique_domain_name
from telemetry.conftest import BUSY_VM
from wattvisor.allinone import AllInOne
from wattvisor.auth import Principal
from wattvisor.config import HostSettings, load_settings
from wattvisor.energy import EnergySampler, LibvirtDomainCpuStats
from wattvisor.energy.sources import UtilisationModelSource
from wattvisor.host.driver import HostDriver
from wattvisor.host.vm_inventory import LibvirtVMInventory
from wattvisor.images import GuestImage
from wattvisor.telemetry import MetricsListener, MetricsListenerError, serve_metrics

TOKEN = "s3cret-metrics-token"
TEST_DRIVER_DOMAIN = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # "test", built into test:///default


def _token_file(tmp_path: Path, token: str = TOKEN) -> Path:
    path = tmp_path / "metrics.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def listener(sampler: EnergySampler) -> Iterator[MetricsListener]:
    served = serve_metrics(sampler, host="127.0.0.1", port=0)
    yield served
    served.stop()


@pytest.fixture
def guarded(sampler: EnergySampler, tmp_path: Path) -> Iterator[MetricsListener]:
    served = serve_metrics(sampler, host="127.0.0.1", port=0,
                           bearer_token_file=_token_file(tmp_path))  # fmt: skip
    yield served
    served.stop()


def _series_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_scrape_over_http_without_a_token_setting(listener: MetricsListener) -> None:
    reply = httpx.get(listener.url)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    assert "wattvisor_vm_power_watts" in _series_names(reply.text)
    assert listener.url == f"http://127.0.0.1:{listener.port}/metrics"


def test_only_get_metrics_is_served(listener: MetricsListener) -> None:
    base = f"http://127.0.0.1:{listener.port}"
    for path in ("/", "/v1/servers", "/metrics/", "/openapi.json"):
        assert httpx.get(base + path).status_code == 404, path
    refused = httpx.post(listener.url)
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


def test_scrape_without_the_token_gets_401(guarded: MetricsListener) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ):
        reply = httpx.get(guarded.url, headers=headers)
        assert reply.status_code == 401, headers
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert "wattvisor_" not in reply.text and TOKEN not in reply.text


def test_scrape_with_the_token_gets_the_figures(guarded: MetricsListener) -> None:
    reply = httpx.get(guarded.url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200
    assert "wattvisor_host_power_watts" in _series_names(reply.text)
    lower = httpx.get(guarded.url, headers={"authorization": f"bearer {TOKEN}"})
    assert lower.status_code == 200  # the scheme is case-insensitive (RFC 7235)


def test_replacing_the_token_file_rotates_the_token(
    guarded: MetricsListener, tmp_path: Path
) -> None:
    _token_file(tmp_path, "rotated-token")
    assert httpx.get(guarded.url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    rotated = httpx.get(guarded.url, headers={"Authorization": "Bearer rotated-token"})
    assert rotated.status_code == 200
    (tmp_path / "metrics.token").unlink()
    gone = httpx.get(guarded.url, headers={"Authorization": "Bearer rotated-token"})
    assert gone.status_code == 503 and "wattvisor_" not in gone.text


@pytest.mark.parametrize(("content", "message"), [(None, "cannot be read"), ("  \n", "is empty")])
def test_unusable_token_file_is_refused_at_start(
    sampler: EnergySampler, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(MetricsListenerError, match=f"metrics.bearer_token_file '{path}' {message}"):
        serve_metrics(sampler, host="127.0.0.1", port=0, bearer_token_file=path)


def test_ipv6_loopback_is_served(sampler: EnergySampler) -> None:
    served = serve_metrics(sampler, host="::1", port=0)
    try:
        assert served.url == f"http://[::1]:{served.port}/metrics"
        assert httpx.get(served.url).status_code == 200
    finally:
        served.stop()


def test_busy_address_is_named(sampler: EnergySampler) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(MetricsListenerError, match=f"127.0.0.1:{port}/metrics is already in"):
            serve_metrics(sampler, host="127.0.0.1", port=port)


def test_stopped_listener_releases_its_port(sampler: EnergySampler) -> None:
    served = serve_metrics(sampler, host="127.0.0.1", port=0)
    served.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(served.url)
    again = serve_metrics(sampler, host="127.0.0.1", port=served.port)
    again.stop()


def test_vm_series_of_the_synthetic_host_are_served(guarded: MetricsListener) -> None:
    text = httpx.get(guarded.url, headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert f'instance="{BUSY_VM}"' in text


# -- the all-in-one node ---------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[AllInOne]:
    settings = load_settings(
        data_dir=tmp_path / "data",
        host={"libvirt_uri": "test:///default", "virt_type": "qemu",
              "instance_name_template": "wvmetrics-%04x"},
        energy={"source": "model"},
        compute={"ready_image": False, "default_flavors": True},
        metrics={"listen": "127.0.0.1:0",
                 "bearer_token_file": str(_token_file(tmp_path))},
    )  # fmt: skip
    built = AllInOne.build(settings)
    yield built
    built.stop()


def test_api_no_longer_serves_metrics(node: AllInOne) -> None:
    reply = TestClient(node.app).get("/metrics")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"


def test_node_serves_managed_domains_only(node: AllInOne, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    image = node.compute.catalog.create_image("kernel", kernel_path=str(kernel))
    alice = Principal("alice", "proj-a", "member")
    server = node.compute.servers.create(alice, "metered", "tiny", image.id)
    node.compute.servers.wait(server.uuid, 30)
    assert node.compute.servers.get(alice, server.uuid).status == "ACTIVE"
    listener = node.start_metrics_listener()
    node.sampler.sample()
    node.sampler.sample()
    text = httpx.get(listener.url, headers={"Authorization": f"Bearer {TOKEN}"}).text
    vm_lines = [line for line in text.splitlines() if line.startswith("wattvisor_vm_")]
    assert any(f'instance="{server.uuid}"' in line for line in vm_lines), text
    # test:///default's own domain "test" is not wattvisor's: never named, never counted.
    assert TEST_DRIVER_DOMAIN not in text and 'domain="test"' not in text
    assert 'project=""' not in text and 'project="proj-a"' in text
    assert httpx.get(listener.url).status_code == 401


# -- a real QEMU guest that is not wattvisor's ------------------------------------------


@pytest.mark.libvirtd
@pytest.mark.guest
def test_unmanaged_qemu_guest_is_only_host_energy(
    start_domain: Callable[[str], libvirt.virDomain],
    guest_image: GuestImage,
    world_readable_tmp: Path,
    tmp_path: Path,
) -> None:
    name = unique_domain_name("wvforeign")
    spec = GuestDomainSpec(
        name=name,
        image=guest_image,
        cmdline="console=ttyS0 quiet",
        serial_log=world_readable_tmp / f"{name}.log",
        memory_mib=128,
    )
    domain = start_domain(spec.xml())
    uuid = domain.UUIDString().lower()
    qemu_pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
    driver = HostDriver(HostSettings(virt_type="qemu"), tmp_path, uri="qemu:///system")
    sampler = EnergySampler(
        UtilisationModelSource(50.0, 150.0),
        inventory=LibvirtVMInventory(driver),
        state_file=tmp_path / "energy.json",
        domain_stats=LibvirtDomainCpuStats(driver.connection.get()),
    )
    served = serve_metrics(sampler, host="127.0.0.1", port=0)
    try:
        sampler.sample()
        for _ in range(200):  # QEMU always uses some CPU; bounded, not timed
            snap = sampler.sample()
            if snap is not None and qemu_pid in snap.interval.process_joules:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the guest's QEMU never showed as a host process")
        assert uuid not in snap.vms
        text = httpx.get(served.url).text
    finally:
        served.stop()
        driver.close()
    assert uuid not in text.lower() and name not in text
