"""End to end: a server built by the compute service is reachable at the address the API shows.

The host's network is an isolated libvirt network this test names and removes (no
``<forward>``: no traffic leaves the machine); the host reaches guests on it because
the gateway address sits on the network's bridge. The tiny guest configures its
interface from its config drive's ``network_data.json`` and serves ``/metrics`` on
port 9100 with busybox httpd.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from compute.principals import ADMIN, ALICE
from support.guest_domains import destroy_and_undefine, marker_fields, wait_for_marker
from support.guest_networks import (
    random_ipv4_subnet,
    random_ipv6_subnet,
    remove_network,
    unique_network_name,
)
from wattvisor.api.v1_schemas import Server
from wattvisor.compute import Compute, LocalHostClient, ServerRecord
from wattvisor.compute.guest_network import SERVER_NIC_ALIAS
from wattvisor.config import load_settings
from wattvisor.guest import Interface
from wattvisor.host.driver import HostDriver
from wattvisor.images import GuestImage
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]
WAIT_S = 120.0
HTTP_TRIES = 60


@pytest.fixture
def network_name(libvirt_system: libvirt.virConnect) -> Iterator[str]:
    """A network name of this test only; the network is removed afterwards, pass or fail."""
    name = unique_network_name()
    try:
        yield name
    finally:
        remove_network(libvirt_system, name)


@pytest.fixture
def net_compute(
    libvirt_system: libvirt.virConnect,
    guest_image: GuestImage,
    world_readable_tmp: Path,
    network_name: str,
) -> Iterator[Compute]:
    settings = load_settings(
        data_dir=world_readable_tmp / "data",
        host={
            "libvirt_uri": "qemu:///system", "virt_type": "qemu",
            "instance_name_template": f"wvtest-{secrets.token_hex(5)}-%04x",
            "network": {
                "mode": "isolated", "name": network_name,
                "ipv4_subnet": random_ipv4_subnet(), "ipv6_subnet": random_ipv6_subnet(),
            },
        },
        compute={"stop_timeout_s": 1},
    )  # fmt: skip
    engine = make_engine(settings.store_url)
    migrate(engine)
    compute = Compute.build(engine, Placement(engine), settings)
    driver = HostDriver(settings.host, settings.data_dir, uri="qemu:///system")
    compute.hosts.add(LocalHostClient(driver), name="qemu-host", local=True)
    compute.ensure_default_flavors()
    compute.catalog.create_image(
        "idle", kernel_path=str(guest_image.kernel), initrd_path=str(guest_image.initrd),
        cmdline=guest_image.cmdline("idle"),
    )  # fmt: skip
    try:
        yield compute
    finally:
        for server in compute.servers.list_all(ADMIN):
            compute.servers.delete(ADMIN, server.uuid)
            compute.servers.wait(server.uuid, WAIT_S)
            if server.domain_name:
                with contextlib.suppress(libvirt.libvirtError):
                    destroy_and_undefine(libvirt_system.lookupByName(server.domain_name))
        compute.close()
        engine.dispose()


def _boot(compute: Compute, name: str) -> ServerRecord:
    server = compute.servers.create(ALICE, name, "tiny", "idle")
    compute.servers.wait(server.uuid, WAIT_S)
    active = compute.servers.get(ALICE, server.uuid)
    assert active.status == "ACTIVE", active.fault
    return active


def _get(url: str) -> str:
    """GET ``url``, retried (bounded) while the guest is still coming up."""
    last: Exception | None = None
    for _ in range(HTTP_TRIES):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(response.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            time.sleep(1)
    raise AssertionError(f"{url} did not answer after {HTTP_TRIES} tries: {last}")


def test_host_reaches_the_guest_at_the_address_the_api_shows(
    net_compute: Compute, network_name: str, world_readable_tmp: Path
) -> None:
    server = _boot(net_compute, "web")
    shown = Server.of(server, None, None).model_dump(by_alias=True)["addresses"]
    assert list(shown) == [network_name]
    by_version = {a["version"]: a for a in shown[network_name]}
    assert set(by_version) == {4, 6}
    ipv4 = by_version[4]["addr"]
    mac = by_version[4]["OS-EXT-IPS-MAC:mac_addr"]

    console = world_readable_tmp / "data" / "instances" / server.uuid / "console.log"
    net = marker_fields(wait_for_marker(console, "WV-NET ", WAIT_S))
    assert net["mac"] == mac
    assert net["ipv4"].split("/")[0] == ipv4
    assert net["ipv6"].split("/")[0] == by_version[6]["addr"]
    wait_for_marker(console, "WV-HTTP port=9100", WAIT_S)

    assert "wv_guest_up 1" in _get(f"http://{ipv4}:9100/metrics")
    assert server.uuid in _get(f"http://{ipv4}:9100/").lower()

    client = net_compute.hosts.client(server.host_uuid or "")
    assert isinstance(client, LocalHostClient)
    nic = client.driver.domain(server.domain_name or "").find_device(alias=SERVER_NIC_ALIAS)
    assert isinstance(nic, Interface)
    assert (nic.type, nic.source_network, nic.mac, nic.model) == (
        "network", network_name, mac, "virtio",
    )  # fmt: skip


def test_two_servers_get_different_addresses_and_a_deleted_ones_address_is_reused(
    net_compute: Compute,
) -> None:
    first = _boot(net_compute, "one")
    second = _boot(net_compute, "two")
    first_v4 = {a.address for a in first.addresses}
    assert first_v4 and not first_v4 & {a.address for a in second.addresses}
    assert first.addresses[0].mac != second.addresses[0].mac

    net_compute.servers.delete(ALICE, first.uuid)
    net_compute.servers.wait(first.uuid, WAIT_S)
    assert net_compute.servers.get(ALICE, first.uuid).addresses == ()
    third = _boot(net_compute, "three")
    assert [a.address for a in third.addresses] == [a.address for a in first.addresses]
