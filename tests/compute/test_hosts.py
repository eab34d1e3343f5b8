"""Hosts: registration, placement view, enable/disable steering new servers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from compute.conftest import add_test_driver_host
from compute.principals import ALICE
from wattvisor.compute import (
    Compute,
    Conflict,
    ImageRecord,
    LocalHostClient,
    NotFound,
)
from wattvisor.host.driver import HostDriver
from wattvisor.scheduler.prefilters import DISABLED_TRAIT


def test_local_host_is_listed_with_placement_view(compute: Compute) -> None:
    [host] = compute.hosts.list_all()
    assert host.name == "local-host" and host.local and host.enabled
    assert host.libvirt_uri == "test:///default" and host.state == "up"
    assert "COMPUTE_STORAGE_BUS_VIRTIO" in host.traits
    assert host.inventory["VCPU"] > 0 and host.usage.get("VCPU", 0) == 0
    assert host.energy_source == "none"  # no sampler on this client


def test_another_host_is_added_with_its_placement_view(compute: Compute, tmp_path: Path) -> None:
    host = add_test_driver_host(compute, tmp_path, "rack-2", cores=4)
    assert host.name == "rack-2" and not host.local and host.libvirt_uri.startswith("test://")
    assert host.inventory["VCPU"] == 4
    provider = compute.hosts.placement.get_provider(host.provider_uuid)
    assert provider.name == "rack-2"
    assert {h.name for h in compute.hosts.list_all()} == {"local-host", "rack-2"}


def _host_file(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.key"
    secret.write_text("PRIVATE-KEY-LINE\n")
    return secret


def test_name_of_another_host_is_refused(compute: Compute, tmp_path: Path) -> None:
    with pytest.raises(Conflict, match="host name 'local-host'"):
        add_test_driver_host(compute, tmp_path, "local-host")
    assert len(compute.hosts.list_all()) == 1
    with pytest.raises(NotFound):
        compute.hosts.get("00000000-0000-0000-0000-000000000000")


def test_a_host_that_cannot_be_reached_shows_the_code_not_the_text(
    compute: Compute, tmp_path: Path
) -> None:
    secret = _host_file(tmp_path)
    settings = compute.hosts.settings
    client = LocalHostClient(HostDriver(settings.host, settings.data_dir, uri=f"test://{secret}"))
    state = client.state()
    assert state.startswith("down: libvirt error ") and "VIR_FROM_TEST" in state
    assert "PRIVATE-KEY-LINE" not in state and str(secret) not in state


def test_disabled_host_gets_no_new_servers_until_enabled(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    [host] = compute.hosts.list_all()
    disabled = compute.hosts.set_enabled(host.provider_uuid, False, "maintenance")
    assert not disabled.enabled and disabled.disabled_reason == "maintenance"
    assert DISABLED_TRAIT in disabled.traits
    refused = compute.servers.create(ALICE, "no", "tiny", kernel_image.id)
    settle(refused.uuid)
    failed = compute.servers.get(ALICE, refused.uuid)
    assert failed.status == "ERROR" and DISABLED_TRAIT in (failed.fault or "")

    enabled = compute.hosts.set_enabled(host.provider_uuid, True)
    assert enabled.enabled and DISABLED_TRAIT not in enabled.traits
    accepted = compute.servers.create(ALICE, "yes", "tiny", kernel_image.id)
    settle(accepted.uuid)
    assert compute.servers.get(ALICE, accepted.uuid).status == "ACTIVE"


def test_new_servers_go_to_the_enabled_host(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None], tmp_path: Path
) -> None:
    other = add_test_driver_host(compute, tmp_path, "rack-2")
    [local] = [h for h in compute.hosts.list_all() if h.local]
    compute.hosts.set_enabled(local.provider_uuid, False)
    server = compute.servers.create(ALICE, "moved", "tiny", kernel_image.id)
    settle(server.uuid)
    placed = compute.servers.get(ALICE, server.uuid)
    assert placed.status == "ACTIVE", placed.fault
    assert placed.host_uuid == other.provider_uuid
    assert compute.hosts.get(other.provider_uuid).servers == 1


def test_disabled_state_survives_re_registration(compute: Compute) -> None:
    [host] = compute.hosts.list_all()
    compute.hosts.set_enabled(host.provider_uuid, False)
    client = compute.hosts.client(host.provider_uuid)
    compute.hosts.add(client, local=True)  # what a restart does
    again = compute.hosts.get(host.provider_uuid)
    assert not again.enabled and DISABLED_TRAIT in again.traits
