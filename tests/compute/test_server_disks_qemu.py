"""Server disks seen by a booted guest on a real libvirtd (QEMU, TCG): the root overlay
reads through to its cached base, the flavor's ephemeral and swap disks are there and
formatted, and a server boots from a volume as its root disk."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from compute.principals import ALICE
from support.guest_domains import wait_for_marker
from wattvisor.compute import Compute, LocalHostClient, ServerRecord
from wattvisor.compute.hostclient import SpawnFlavor, SpawnImage, SpawnRequest
from wattvisor.guest import Disk
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]
WAIT_S = 120.0
MARKER = "wattvisor-root-marker"


def _console(compute: Compute, server: ServerRecord) -> Path:
    return compute.servers.settings.data_dir / "instances" / server.uuid / "console.log"


def _active(compute: Compute, server: ServerRecord) -> ServerRecord:
    compute.servers.wait(server.uuid, WAIT_S)
    active = compute.servers.get(ALICE, server.uuid)
    assert active.status == "ACTIVE", active.fault
    return active


def _disks_line(console: Path) -> dict[str, tuple[str, int]]:
    """``WV-DISKS [vda:sectors:serial|...]`` as {serial: (guest name, bytes)}.

    By serial: the guest names virtio disks in the order it finds them, whatever
    target the XML gives (a server without a root disk has its ephemeral disk as vda).
    """
    line = wait_for_marker(console, "WV-DISKS", WAIT_S)
    inner = line.split("[", 1)[1].rsplit("]", 1)[0]
    found = {}
    for entry in filter(None, inner.split("|")):
        name, sectors, serial = entry.split(":", 2)
        found[serial] = (name, int(sectors) * 512)
    return found


def test_guest_sees_the_flavors_ephemeral_and_swap_disks_formatted(
    qemu_compute: Compute,
) -> None:
    compute = qemu_compute
    compute.catalog.create_flavor("eph-swap", 1, 256, 1, ephemeral_gb=1, swap_mb=64)
    server = _active(compute, compute.servers.create(ALICE, "scratch", "eph-swap", "disks"))
    disks = _disks_line(_console(compute, server))
    assert disks["ephemeral0"][1] == 1024**3 and disks["swap"][1] == 64 * 1024**2
    console = _console(compute, server)
    labels = wait_for_marker(console, "WV-LABELS", WAIT_S)
    eph_dev, swap_dev = disks["ephemeral0"][0], disks["swap"][0]
    assert f"ephemeral0=[/dev/{eph_dev}]" in labels and f"swap=[/dev/{swap_dev}]" in labels
    swapon = wait_for_marker(console, "WV-SWAPON", WAIT_S)
    assert "rc=0" in swapon and f"/dev/{swap_dev}" in swapon.split("swaps=")[1]


def test_root_overlay_reads_through_to_its_cached_base_and_libvirt_follows_the_chain(
    qemu_compute: Compute, guest_image: GuestImage, world_readable_tmp: Path
) -> None:
    compute = qemu_compute
    base = world_readable_tmp / "root.raw"
    with base.open("wb") as handle:
        handle.write(MARKER.encode())
        handle.truncate(8 * 1024**2)
    client = compute.hosts.client(compute.hosts.default_host())
    assert isinstance(client, LocalHostClient)
    uuid = "6f1c2a9e-0b7d-4c1e-9a55-" + secrets.token_hex(6)
    # A kernel image with a disk: the catalog offers one or the other, the host takes both.
    request = SpawnRequest(
        server_uuid=uuid, display_name="overlay", domain_name=f"wvdisk-{secrets.token_hex(5)}",
        project="proj-a", user="alice",
        flavor=SpawnFlavor(id="f", name="f", vcpus=1, ram_mb=256, disk_gb=1, swap_mb=0,
                           ephemeral_gb=0),
        image=SpawnImage(id="rootimg", name="rootimg", kernel_path=str(guest_image.kernel),
                         initrd_path=str(guest_image.initrd),
                         cmdline=guest_image.cmdline("disks", file="vda"),
                         disk_path=str(base), disk_format="raw"),
        power_metrics=False, created_at=datetime.now(UTC),
        user_uuid="8d0c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
        project_uuid="9e1d2c3b-4f5a-4b6c-9d7e-8f9a0b1c2d3e",
    )  # fmt: skip
    client.spawn(request)
    try:
        console = compute.servers.settings.data_dir / "instances" / uuid / "console.log"
        head = wait_for_marker(console, "WV-DISK-HEAD", WAIT_S)
        assert f"value=[{MARKER}" in head
        assert _disks_line(console)[""] == ("vda", 1024**3)  # the flavor's size, not the base's
        live = client.driver.connection.call(lambda c: c.lookupByUUIDString(uuid).XMLDesc(0))
        [root] = [d for d in etree.fromstring(live).iter("disk") if d.get("device") == "disk"]
        chain = root.find("./backingStore")
        assert chain is not None, "libvirt did not follow the overlay's backing chain"
        assert chain.xpath("string(./format/@type)") == "raw"
        backing_file = str(chain.xpath("string(./source/@file)"))
        assert backing_file.startswith(
            str(compute.servers.settings.data_dir / "images" / "rootimg-")
        )
    finally:
        client.delete(uuid, request.domain_name)


def test_server_boots_from_a_volume_as_root_disk_and_deleting_it_frees_the_volume(
    qemu_compute: Compute,
) -> None:
    compute = qemu_compute
    volume = compute.devices.create_volume(ALICE, "bootvol", 1, "raw")
    with open(volume.path, "r+b") as handle:  # what the guest must find at the start of vda
        handle.write(MARKER.encode())
    server = _active(
        compute, compute.servers.create(ALICE, "from-volume", "tiny", "disks",
                                        boot_volume="bootvol")
    )  # fmt: skip
    assert server.boot_volume_id == volume.id
    head = wait_for_marker(_console(compute, server), "WV-DISK-HEAD", WAIT_S)
    assert f"value=[{MARKER}" in head
    assert _disks_line(_console(compute, server))[volume.id[:20]] == ("vda", 1024**3)

    client = compute.hosts.client(server.host_uuid or "")
    assert isinstance(client, LocalHostClient)
    domain = client.driver.domain(server.domain_name or "")
    root = domain.find_device(alias=volume.alias)
    assert isinstance(root, Disk) and root.target_dev == "vda" and root.source_file == volume.path
    meta = domain.instance_metadata
    assert meta is not None and meta.root is not None
    assert (meta.root.type, meta.root.uuid) == ("volume", volume.id)
    assert compute.devices.volume(ALICE, volume.id).status == "in-use"

    compute.servers.delete(ALICE, server.uuid)
    compute.servers.wait(server.uuid, WAIT_S)
    freed = compute.devices.volume(ALICE, volume.id)
    assert freed.status == "available" and freed.server_uuid is None
    assert Path(volume.path).read_bytes().startswith(MARKER.encode())  # the data stays
