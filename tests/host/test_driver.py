"""Host driver lifecycle, detach by alias and start-up upgrade on libvirt's test driver.

``test:///default`` has no ``virDomainDetachDeviceAlias`` and no domain
capabilities, so these tests also prove the fallbacks; the real QEMU driver is
exercised in tests/host/test_driver_qemu.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import libvirt
import pytest

from wattvisor.config import HostSettings
from wattvisor.guest import (
    Disk,
    Domain,
    FlavorMeta,
    GuestXMLError,
    InstanceMetadata,
    Interface,
    OwnerMeta,
    RootMeta,
    make_alias,
)
from wattvisor.host.driver import DeviceNotFound, DomainNotFound, HostDriver, HostError

TEST_URI = "test:///default"


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[HostDriver]:
    host = HostDriver(HostSettings(virt_type="qemu"), tmp_path, uri=TEST_URI)
    yield host
    for state in host.list_domains():
        if state.name.startswith("wvdrv-"):
            host.undefine(state.uuid)
    host.close()


def _guest(name: str | None = None, *, ours: bool = True) -> Domain:
    """A domain for the test driver; ``ours`` gives it wattvisor's instance metadata."""
    name = name or f"wvdrv-{uuid.uuid4().hex[:8]}"
    meta = InstanceMetadata(package_version="0.1.0", display_name=name,
                            creation_time=datetime(2026, 11, 21, tzinfo=UTC))  # fmt: skip
    domain = Domain(name=name, memory_mib=64, vcpus=1, virt_type="qemu",
                    instance_metadata=meta if ours else None)  # fmt: skip
    domain.virt_type = "test"  # the test driver only runs domains of type 'test'
    return domain


def test_define_start_stop_undefine_round_trip(driver: HostDriver) -> None:
    guest = _guest()
    state = driver.define(guest)
    assert state.persistent and not state.active and state.state == "shutoff"
    assert driver.start(state.uuid).state == "running"
    assert any(s.uuid == state.uuid and s.active for s in driver.list_domains())
    assert driver.destroy(state.uuid).state == "shutoff"
    driver.undefine(state.uuid)
    with pytest.raises(DomainNotFound, match=state.uuid):
        driver.domain_state(state.uuid)


def test_define_rejects_schema_invalid_xml_and_defines_nothing(driver: HostDriver) -> None:
    guest = _guest()
    guest.vcpus = 0  # domain.rng requires a positive count
    before = {s.name for s in driver.list_domains()}
    with pytest.raises(GuestXMLError):
        driver.define(guest)
    assert {s.name for s in driver.list_domains()} == before


def test_define_rejects_malformed_xml(driver: HostDriver) -> None:
    with pytest.raises(GuestXMLError, match="line"):
        driver.define("<domain type='test'><name>x</name>")


def test_detach_by_alias_falls_back_to_device_xml(driver: HostDriver) -> None:
    guest = _guest()
    volume = str(uuid.uuid4())
    guest.add_device(
        Disk(
            source_file="/var/lib/wv/disk.img",
            target_dev="vdb",
            serial=volume,
            alias=make_alias(volume),
        )
    )
    state = driver.define(guest)
    result = driver.detach_device(state.uuid, make_alias(volume))
    # test:///default has neither virDomainDetachDeviceAlias nor virDomainDetachDeviceFlags.
    assert result.method == "redefine"
    assert result.config and not result.live
    assert driver.domain(state.uuid, inactive=True).find_device(serial=volume) is None


def test_detach_of_legacy_disk_finds_it_by_serial(driver: HostDriver) -> None:
    guest = _guest()
    volume = str(uuid.uuid4())
    guest.add_device(Disk(source_file="/var/lib/wv/old.img", target_dev="vdc", serial=volume))
    state = driver.define(guest)
    driver.detach_device(state.uuid, make_alias(volume), serial=volume)
    assert driver.domain(state.uuid, inactive=True).find_device(target_dev="vdc") is None


def test_detach_of_unknown_alias_names_it_and_changes_nothing(driver: HostDriver) -> None:
    guest = _guest()
    guest.add_device(Disk(source_file="/var/lib/wv/a.img", target_dev="vdb", alias="ua-keep"))
    state = driver.define(guest)
    before = driver.domain_xml(state.uuid, inactive=True)
    with pytest.raises(DeviceNotFound, match=r"ua-missing.*ua-keep"):
        driver.detach_device(state.uuid, "ua-missing")
    assert driver.domain_xml(state.uuid, inactive=True) == before


def test_startup_upgrade_gives_legacy_domains_aliases_once(driver: HostDriver) -> None:
    guest = _guest()
    guest.add_device(
        Disk(source_file="/var/lib/wv/b.img", target_dev="vdb", serial="legacy-serial")
    )
    guest.add_device(Interface(source_network="default", mac="52:54:00:12:34:56"))
    state = driver.define(guest)
    reports = [r for r in driver.upgrade_existing_domains() if r.uuid == state.uuid]
    assert len(reports) == 1 and len(reports[0].added_aliases) == 2
    upgraded = driver.domain(state.uuid, inactive=True)
    disk = upgraded.find_device(target_dev="vdb")
    nic = upgraded.find_device(mac="52:54:00:12:34:56")
    assert disk is not None and disk.alias and disk.alias.startswith("ua-")
    assert nic is not None and nic.alias and nic.alias.startswith("ua-")
    assert {disk.alias, nic.alias} == set(reports[0].added_aliases)
    # Idempotent: a second start-up changes nothing.
    assert not [r for r in driver.upgrade_existing_domains() if r.uuid == state.uuid]


def test_startup_leaves_domains_wattvisor_did_not_make_untouched(driver: HostDriver) -> None:
    foreign = _guest(ours=False)
    foreign.add_device(Disk(source_file="/var/lib/other/d.img", target_dev="vdb", serial="x"))
    state = driver.define(foreign)
    before = driver.domain_xml(state.uuid, inactive=True)
    report = driver.startup()
    assert not [r for r in report.upgraded if r.uuid == state.uuid]
    assert not [r for r in driver.upgrade_existing_domains() if r.uuid == state.uuid]
    assert driver.domain_xml(state.uuid, inactive=True) == before


def test_startup_upgrade_keeps_a_running_domain_running(driver: HostDriver) -> None:
    guest = _guest()
    guest.add_device(Disk(source_file="/var/lib/wv/c.img", target_dev="vdb", serial="s-1"))
    state = driver.define(guest)
    driver.start(state.uuid)
    report = driver.startup()
    assert any(r.uuid == state.uuid for r in report.upgraded)
    assert driver.domain_state(state.uuid).active
    assert report.uri == TEST_URI


def test_instance_metadata_is_updated_on_a_running_domain(driver: HostDriver) -> None:
    state = driver.define(_guest())
    driver.start(state.uuid)
    meta = InstanceMetadata(
        package_version="0.1.0",
        display_name="web-1",
        creation_time=datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC),
        flavor=FlavorMeta(name="tiny", id="f1", memory_mib=64, disk_gib=1, vcpus=1),
        owner=OwnerMeta(
            user_uuid=str(uuid.uuid4()),
            user_name="alice",
            project_uuid=str(uuid.uuid4()),
            project_name="demo",
        ),
        root=RootMeta(type="image", uuid=str(uuid.uuid4())),
    )
    driver.set_instance_metadata(state.uuid, meta)
    assert driver.instance_metadata(state.uuid) == meta


def test_instance_metadata_absent_is_none(driver: HostDriver) -> None:
    state = driver.define(_guest(ours=False))
    assert driver.instance_metadata(state.uuid) is None


def test_attach_failure_names_the_domain(driver: HostDriver) -> None:
    state = driver.define(_guest())
    with pytest.raises(HostError, match=state.name):
        driver.attach_device(state.uuid, "<disk type='file' device='disk'><target/></disk>")


def test_inventory_reports_positive_standard_resources(driver: HostDriver) -> None:
    conn = libvirt.open(TEST_URI)
    info = conn.getInfo()
    conn.close()
    inventory = driver.inventory()
    assert inventory.vcpu == info[2]
    assert inventory.memory_mb > 0 and inventory.disk_gb > 0


def test_instance_name_follows_template(tmp_path: Path) -> None:
    host = HostDriver(HostSettings(instance_name_template="vm-%05d"), tmp_path, uri=TEST_URI)
    assert host.instance_name(42) == "vm-00042"
    assert HostDriver(HostSettings(), tmp_path, uri=TEST_URI).instance_name(0x34) == (
        "instance-00000034"
    )
