"""End to end: Prometheus discovers a tiny guest's exporter, scrapes it, and answers PromQL.

A flavor sets ``prometheus_exporter_port=9100``; the server boots on an isolated
libvirt network this test names and removes (no ``<forward>``: no traffic leaves the
machine) and serves ``wv_guest_up 1`` on port 9100. The controller's file_sd writer
lists it; a real Prometheus (Debian package) on loopback reads that file, scrapes the
guest across the network's bridge, and answers a query for the guest's series with
the server's labels. Stopping the server takes it out of the file and of Prometheus'
targets. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from compute.principals import ADMIN, ALICE
from support.guest_domains import destroy_and_undefine, wait_for_marker
from support.guest_networks import (
    random_ipv4_subnet,
    random_ipv6_subnet,
    remove_network,
    unique_network_name,
)
from support.prometheus_server import active_targets, log_tail, query_until, running_prometheus
from wattvisor.compute import Compute, LocalHostClient
from wattvisor.compute.prometheus_targets import write_file_sd_once
from wattvisor.config import load_settings
from wattvisor.host.driver import HostDriver
from wattvisor.images import GuestImage
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]
WAIT_S = 180.0


@pytest.fixture
def network_name(libvirt_system: libvirt.virConnect) -> Iterator[str]:
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
    compute.catalog.create_flavor(
        "exported", 1, 128, extra_specs={"prometheus_exporter_port": "9100"}
    )
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


def test_prometheus_discovers_scrapes_and_queries_a_guests_exporter(
    net_compute: Compute, world_readable_tmp: Path, tmp_path: Path
) -> None:
    server = net_compute.servers.create(ALICE, "exporter", "exported", "idle")
    net_compute.servers.wait(server.uuid, WAIT_S)
    active = net_compute.servers.get(ALICE, server.uuid)
    assert active.status == "ACTIVE", active.fault
    console = world_readable_tmp / "data" / "instances" / server.uuid / "console.log"
    wait_for_marker(console, "WV-HTTP port=9100", WAIT_S)

    engine = net_compute.servers.engine
    file_sd = tmp_path / "sd" / "vms.json"
    assert write_file_sd_once(engine, None, file_sd) is True
    ipv4 = next(a.address for a in active.addresses if a.version == 4)
    assert json.loads(file_sd.read_text())[0]["targets"] == [f"{ipv4}:9100"]

    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{
                "job_name": "vm-exporters",
                "file_sd_configs": [{"files": [str(file_sd)], "refresh_interval": "1s"}],
            }],
        })
    )  # fmt: skip
    with running_prometheus(config, tmp_path) as url:
        found = query_until(url, f'wv_guest_up{{instance="{server.uuid}"}}', WAIT_S)
        assert found, log_tail(tmp_path)
        labels = found[0]["metric"]
        assert (labels["name"], labels["project"], labels["flavor"], labels["host"]) == (
            "exporter", "proj-a", "exported", "qemu-host",
        )  # fmt: skip
        assert found[0]["value"][1] == "1"
        up = query_until(url, 'sum(up{job="vm-exporters"})', WAIT_S)
        assert up and up[0]["value"][1] == "1"

        net_compute.servers.stop(ALICE, server.uuid)
        net_compute.servers.wait(server.uuid, WAIT_S)
        assert write_file_sd_once(engine, None, file_sd) is True
        assert json.loads(file_sd.read_text()) == []
        assert active_targets(url, "vm-exporters", 0, WAIT_S) == []
