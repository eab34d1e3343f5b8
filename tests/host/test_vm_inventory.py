"""The energy layer's inventory of guests, read from libvirt domain metadata."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wattvisor.config import HostSettings
from wattvisor.guest import Domain, InstanceMetadata, OwnerMeta, ShareMeta
from wattvisor.host.driver import HostDriver
from wattvisor.host.vm_inventory import LibvirtVMInventory


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[HostDriver]:
    host = HostDriver(
        HostSettings(share_local_fs={"/var/lib/wv-power": "scaphandre"}),
        tmp_path,
        uri="test:///default",
    )
    yield host
    for state in host.list_domains():
        if state.name.startswith("wvinv-"):
            host.destroy(state.uuid)
            host.connection.get().lookupByUUIDString(state.uuid).undefine()
    host.close()


def _define(driver: HostDriver, meta: InstanceMetadata | None) -> str:
    domain = Domain(name=f"wvinv-{uuid.uuid4().hex[:8]}", memory_mib=64, instance_metadata=meta)
    domain.virt_type = "test"
    return driver.define(domain).uuid


def test_power_metrics_guest_is_listed_with_project_and_share_dir(driver: HostDriver) -> None:
    project = str(uuid.uuid4())
    meta = InstanceMetadata(
        package_version="0.1.0",
        display_name="p",
        creation_time=datetime.now(UTC),
        owner=OwnerMeta(
            user_uuid=str(uuid.uuid4()), user_name="u", project_uuid=project, project_name="demo"
        ),
        shares=(ShareMeta(tag="scaphandre", purpose="power_metrics"),),
    )
    ident = _define(driver, meta)
    records = {r.uuid: r for r in LibvirtVMInventory(driver).vms()}
    record = records[ident]
    assert record.project == "demo" and record.managed  # by name, as power views show it
    assert record.power_metrics
    assert record.share_dirs == (Path("/var/lib/wv-power"),)


def test_guest_without_metadata_is_listed_as_not_wattvisors(driver: HostDriver) -> None:
    ident = _define(driver, None)
    record = {r.uuid: r for r in LibvirtVMInventory(driver).vms()}[ident]
    assert not record.managed
    assert not record.power_metrics and record.project == "" and record.share_dirs == ()


def test_share_with_unconfigured_tag_is_not_a_power_share(driver: HostDriver) -> None:
    meta = InstanceMetadata(
        package_version="0.1.0",
        display_name="p",
        creation_time=datetime.now(UTC),
        shares=(ShareMeta(tag="elsewhere", purpose="power_metrics"),),
    )
    ident = _define(driver, meta)
    record = {r.uuid: r for r in LibvirtVMInventory(driver).vms()}[ident]
    assert not record.power_metrics


def test_undefined_guest_leaves_the_inventory(driver: HostDriver) -> None:
    inventory = LibvirtVMInventory(driver)
    ident = _define(driver, None)
    assert ident in {r.uuid for r in inventory.vms()}
    driver.connection.get().lookupByUUIDString(ident).undefine()
    assert ident not in {r.uuid for r in inventory.vms()}
