"""Migrating a power-metrics server: what is refused before anything moves, and how the
target host takes the guest's share with its counter continuing (SQLite and PostgreSQL
for the store; libvirt's test driver and a real libvirtd for the hosts; real mounts)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import libvirt
import pytest
from sqlalchemy import select, update

from compute.conftest import add_test_driver_host
from compute.principals import ADMIN, ALICE
from support.availability import require_root
from support.guest_domains import destroy_and_undefine, unique_domain_name, wait_for_marker
from support.synthetic_host import InMemoryVMInventory
from wattvisor.compute import Compute, ImageRecord, LocalHostClient
from wattvisor.compute.errors import Conflict
from wattvisor.compute.hostclient import IncomingShares, SpawnFlavor, SpawnImage, SpawnRequest
from wattvisor.config import HostSettings
from wattvisor.energy import EnergySampler
from wattvisor.energy.sources import UtilisationModelSource
from wattvisor.host.driver import HostDriver, HostError
from wattvisor.host.live_migration import MigrationOrder, virtiofs_migrates_natively
from wattvisor.host.shares import mount_table, unmount_all
from wattvisor.images import GuestImage
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import ServerRow
from wattvisor.store.migration_tables import MigrationRow

TAG = "scaphandre"


def test_a_target_without_a_power_metrics_share_is_refused_before_anything_moves(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None], tmp_path: Path
) -> None:
    other = add_test_driver_host(compute, tmp_path, "rack-2")
    server = compute.servers.create(ALICE, "metered", "tiny", kernel_image.id)
    settle(server.uuid)
    table = ServerRow.__table__
    # The server reads a power-metrics share on its host (as a metered build leaves it).
    with write_transaction(compute.servers.engine) as conn:
        conn.execute(
            update(table)
            .where(table.c.uuid == server.uuid)  # type: ignore[attr-defined]
            .values(power_metrics=True, shares=[TAG])
        )
    before = compute.servers.get(ADMIN, server.uuid)
    with pytest.raises(Conflict, match="COMPUTE_SHARE_LOCAL_FS") as refused:
        compute.migrations.request(ADMIN, server.uuid, "rack-2", True)
    assert "rack-2" in str(refused.value) or other.provider_uuid in str(refused.value)
    after = compute.servers.get(ADMIN, server.uuid)
    assert (after.task, after.fault, after.host_uuid) == (None, None, before.host_uuid)
    with read_transaction(compute.servers.engine) as conn:
        rows = conn.execute(
            select(MigrationRow.__table__).where(
                MigrationRow.__table__.c.server_uuid == server.uuid  # type: ignore[attr-defined]
            )
        ).all()
    assert rows == []


@pytest.fixture
def scratch(world_readable_tmp: Path) -> Iterator[Path]:
    require_root("mounting share views")
    yield world_readable_tmp
    for entry in reversed(mount_table()):
        if entry.mount_point.is_relative_to(os.path.realpath(world_readable_tmp)):
            unmount_all(entry.mount_point)


def _incoming(domain: str, tags: tuple[str, ...] = (TAG,), joules: float = 0.0) -> IncomingShares:
    return IncomingShares(
        server_uuid=str(uuid.uuid4()), domain_name=domain, project="proj-m", tags=tags,
        energy_joules=joules,
    )  # fmt: skip


def test_a_host_without_the_share_refuses_the_guest_naming_what_is_missing(
    scratch: Path,
) -> None:
    bare = LocalHostClient(HostDriver(HostSettings(virt_type="qemu"), scratch / "a",
                                      uri="test:///default"))  # fmt: skip
    other_tag = LocalHostClient(HostDriver(
        HostSettings(virt_type="qemu", share_local_fs={str(scratch / "pm"): "othertag"}),
        scratch / "b", uri="test:///default",
    ))  # fmt: skip
    try:
        with pytest.raises(HostError, match="no power-metrics share"):
            bare.prepare_incoming_shares(_incoming("wvpm-a"))
        with pytest.raises(HostError, match=f"no share with mount tag\\(s\\) {TAG}.*othertag"):
            other_tag.prepare_incoming_shares(_incoming("wvpm-b"))
        assert not (scratch / "pm" / "wvpm-b").exists()
    finally:
        bare.close()
        other_tag.close()


@pytest.mark.libvirtd
def test_the_target_share_starts_at_the_sources_total_read_only(
    scratch: Path, libvirt_system: libvirt.virConnect
) -> None:
    share_dir = scratch / "power-metrics"
    driver = HostDriver(
        HostSettings(virt_type="qemu", share_local_fs={str(share_dir): TAG}), scratch / "data",
        uri="qemu:///system",
    )  # fmt: skip
    inventory = InMemoryVMInventory()
    sampler = EnergySampler(
        UtilisationModelSource(idle_watts=40.0, max_watts=140.0), inventory=inventory,
        state_file=scratch / "energy.json",
    )  # fmt: skip
    client = LocalHostClient(driver, sampler)
    domain = f"wvpm-{uuid.uuid4().hex[:8]}"
    try:
        incoming = _incoming(domain)
        client.prepare_incoming_shares(incoming)
        counter = share_dir / domain / "intel-rapl:0" / "energy_uj"
        assert counter.read_text() == "0\n"
        # The guest's share source is a read-only view of that directory.
        [view] = [e for e in mount_table() if e.mount_point.name == domain and e.readonly]
        with pytest.raises(OSError):
            (view.mount_point / "x").touch()
        arrived = IncomingShares(
            incoming.server_uuid, domain, "proj-m", (TAG,), energy_joules=987.654321
        )
        assert client.plug_incoming_shares(arrived) == [TAG]
        assert counter.read_text() == "987654321\n"
        assert (view.mount_point / "intel-rapl:0" / "energy_uj").read_text() == "987654321\n"
        assert sampler.vm_total(incoming.server_uuid) == pytest.approx(987.654321)
        # A guest that did not arrive: its share goes again.
        client.release_incoming_shares(domain)
        assert not (share_dir / domain).exists()
    finally:
        client.close()


@pytest.mark.libvirtd
def test_this_hosts_qemu_is_asked_whether_it_migrates_virtiofs(
    libvirt_system: libvirt.virConnect,
) -> None:
    caps = libvirt_system.getDomainCapabilities(None, "x86_64", None, "qemu")
    emulator = caps.split("<path>", 1)[1].split("</path>", 1)[0]
    # QEMU 7.2's vhost-user-fs has no "migration" property; from 8.2 on it has.
    qemu = str(Path(emulator).parent / "qemu-system-x86_64")
    assert qemu == emulator, caps  # the emulator the host's required programs name
    help_text = subprocess.run(
        [qemu, "-device", "vhost-user-fs-pci,help"], capture_output=True, text=True,
        timeout=60, check=True,
    ).stdout  # fmt: skip
    assert virtiofs_migrates_natively(emulator) == ("  migration=" in help_text)


@pytest.fixture
def metered_guest(
    scratch: Path, libvirt_system: libvirt.virConnect, guest_image: GuestImage
) -> Iterator[tuple[LocalHostClient, str, Path]]:
    """A running tiny guest reading its power-metrics share (``metrics`` scenario) on the
    real libvirtd: the client of its host, its domain name and its console file."""
    share_dir = scratch / "power-metrics"
    driver = HostDriver(
        HostSettings(virt_type="qemu", share_local_fs={str(share_dir): TAG}), scratch / "data",
        uri="qemu:///system",
    )  # fmt: skip
    sampler = EnergySampler(
        UtilisationModelSource(idle_watts=40.0, max_watts=140.0), inventory=InMemoryVMInventory(),
        state_file=scratch / "energy.json",
    )  # fmt: skip
    client = LocalHostClient(driver, sampler, data_dir=scratch / "data")
    name = unique_domain_name("wvpmmig")
    request = SpawnRequest(
        server_uuid=str(uuid.uuid4()), display_name="metered", domain_name=name,
        project="proj-m", user="u",
        flavor=SpawnFlavor(id="f", name="tiny", vcpus=1, ram_mb=128, disk_gb=0, swap_mb=0,
                           ephemeral_gb=0),
        image=SpawnImage(id="i", name="metrics", kernel_path=str(guest_image.kernel),
                         initrd_path=str(guest_image.initrd),
                         cmdline=guest_image.cmdline("metrics", interval=1)),
        power_metrics=True, created_at=datetime.now(UTC), user_uuid=str(uuid.uuid4()),
        project_uuid=str(uuid.uuid4()),
    )  # fmt: skip
    try:
        client.spawn(request)
        console = scratch / "data" / "instances" / request.server_uuid / "console.log"
        wait_for_marker(console, "WV-ENERGY n=2")
        yield client, name, console
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            destroy_and_undefine(libvirt_system.lookupByName(name))
        with contextlib.suppress(HostError):
            driver.release_shares(name)
        client.close()


def _order(name: str, timeout_s: float = 60.0) -> MigrationOrder:
    # Nothing listens on port 1 of loopback: a migration there fails.
    return MigrationOrder(
        migration_id=str(uuid.uuid4()), domain_name=name,
        target_libvirt_uri="qemu+tcp://127.0.0.1:1/system", migrate_uri="tcp://127.0.0.1:1",
        max_bandwidth_mib_s=0, timeout_s=60.0, unplug_shares=True, unplug_timeout_s=timeout_s,
    )  # fmt: skip


def _share_aliases(conn: libvirt.virConnect, name: str, flags: int) -> list[str]:
    xml = conn.lookupByName(name).XMLDesc(flags)
    return [a.get("name", "") for fs in ElementTree.fromstring(xml).iter("filesystem")
            for a in fs.iter("alias")]  # fmt: skip


@pytest.mark.libvirtd
@pytest.mark.guest
def test_an_unplug_the_guest_does_not_acknowledge_fails_and_the_share_stays(
    metered_guest: tuple[LocalHostClient, str, Path], libvirt_system: libvirt.virConnect
) -> None:
    client, name, _console = metered_guest
    live = _share_aliases(libvirt_system, name, 0)
    assert len(live) == 1 and live[0].startswith("ua-")
    dom = libvirt_system.lookupByName(name)
    dom.suspend()  # a paused guest never acknowledges the unplug
    try:
        with pytest.raises(HostError, match=r"could not be unplugged.*plugged back"):
            client.migrate_out(_order(name, timeout_s=2.0), 60.0)
        # Still in the guest, and back in its definition (the detach had removed it).
        assert _share_aliases(libvirt_system, name, 0) == live
        assert _share_aliases(libvirt_system, name, libvirt.VIR_DOMAIN_XML_INACTIVE) == live
    finally:
        dom.resume()
    assert dom.isActive()


@pytest.mark.libvirtd
@pytest.mark.guest
def test_a_migration_failing_after_the_unplug_plugs_the_share_back_on_the_source(
    metered_guest: tuple[LocalHostClient, str, Path], libvirt_system: libvirt.virConnect
) -> None:
    client, name, console = metered_guest
    live = _share_aliases(libvirt_system, name, 0)
    with pytest.raises(HostError, match="plugged back into the guest on its source"):
        client.migrate_out(_order(name), 60.0)
    assert _share_aliases(libvirt_system, name, 0) == live
    assert _share_aliases(libvirt_system, name, libvirt.VIR_DOMAIN_XML_INACTIVE) == live
    # The guest lost its mount with the device and mounts the share again.
    wait_for_marker(console, "WV-REMOUNTED")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = console.read_text(errors="replace")
        if "WV-ENERGY n=" in text[text.rindex("WV-REMOUNTED") :]:
            break
        time.sleep(0.25)
    else:
        raise AssertionError(f"no counter read after the re-mount: {text[-600:]}")
