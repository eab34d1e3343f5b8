"""Server disks through the compute service (real store, libvirt's test driver, real
qemu-img): the flavor's disk against the image, ephemeral and swap devices in the XML,
and booting from a volume with every refusal changing nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from compute.principals import ADMIN, ALICE, BOB
from wattvisor.compute import (
    Compute,
    Conflict,
    ImageRecord,
    InvalidRequest,
    LocalHostClient,
    NotFound,
)
from wattvisor.guest import Disk, Domain
from wattvisor.host.image_cache import GIB, qcow2_backing_file


def _domain(compute: Compute, server_id: str) -> Domain:
    record = compute.servers.get(ADMIN, server_id)
    assert record.host_uuid is not None and record.domain_name is not None
    client = compute.hosts.client(record.host_uuid)
    return client.driver.domain(record.domain_name)  # type: ignore[attr-defined,no-any-return]


def _qcow2_image(compute: Compute, tmp_path: Path, size: str) -> ImageRecord:
    disk = tmp_path / f"image-{size}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), size], check=True)
    return compute.catalog.create_image(f"img-{size}", disk_path=str(disk), disk_format="qcow2")


def _instances(compute: Compute) -> list[Path]:
    root = compute.servers.settings.data_dir / "instances"
    return sorted(root.iterdir()) if root.is_dir() else []


def test_flavor_disk_smaller_than_the_image_is_refused_and_nothing_is_created(
    compute: Compute, tmp_path: Path
) -> None:
    image = _qcow2_image(compute, tmp_path, "3G")
    compute.catalog.create_flavor("two-gig", 1, 256, 2)
    with pytest.raises(InvalidRequest) as refused:
        compute.servers.create(ALICE, "too-big", "two-gig", image.name)
    message = refused.value.message
    assert "flavor 'two-gig'" in message and "flavor disk 2 GiB" in message
    assert "'img-3G'" in message and ">= 3 GiB" in message and str(tmp_path) not in message
    assert compute.servers.list_all(ADMIN) == []
    assert _instances(compute) == []


def test_flavor_disk_sets_the_root_size_and_the_servers_share_the_base(
    compute: Compute, tmp_path: Path, settle: Callable[[str], None]
) -> None:
    image = _qcow2_image(compute, tmp_path, "512M")
    compute.catalog.create_flavor("four-gig", 1, 256, 4)
    compute.catalog.create_flavor("as-image", 1, 256, 0)
    sizes = {}
    backings = set()
    for flavor in ("four-gig", "as-image"):
        server = compute.servers.create(ALICE, flavor, flavor, image.name)
        settle(server.uuid)
        assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"
        [root] = [d for d in _domain(compute, server.uuid).devices.of_type(Disk)
                  if d.target_dev == "vda"]  # fmt: skip
        argv = ["qemu-img", "info", "--output=json", root.source_file or ""]
        info = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        sizes[flavor] = int(info.split('"virtual-size":')[1].split(",")[0])
        backings.add(qcow2_backing_file(Path(root.source_file or "")))
    assert sizes == {"four-gig": 4 * GIB, "as-image": 512 * 1024**2}
    assert len(backings) == 1 and None not in backings


def test_ephemeral_and_swap_disks_follow_the_root_with_aliases_and_serials(
    compute: Compute, tmp_path: Path, settle: Callable[[str], None]
) -> None:
    image = _qcow2_image(compute, tmp_path, "64M")
    compute.catalog.create_flavor("scratch", 1, 256, 1, ephemeral_gb=2, swap_mb=256)
    server = compute.servers.create(ALICE, "scratch", "scratch", image.name)
    settle(server.uuid)
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"
    disks = {d.alias: d for d in _domain(compute, server.uuid).devices.of_type(Disk)}
    eph, swap = disks["ua-ephemeral0"], disks["ua-swap"]
    assert (eph.target_dev, eph.bus, eph.serial, eph.driver_type) == (
        "vdb", "virtio", "ephemeral0", "qcow2")  # fmt: skip
    assert (swap.target_dev, swap.bus, swap.serial) == ("vdc", "virtio", "swap")
    assert disks["ua-root-disk"].target_dev == "vda"
    instance = compute.servers.settings.data_dir / "instances" / server.uuid
    assert Path(eph.source_file or "").parent == instance


def test_boot_volume_becomes_the_root_disk_and_is_held_until_the_server_is_deleted(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    volume = compute.devices.create_volume(ALICE, "root", 1, "qcow2")
    server = compute.servers.create(ALICE, "vol", "tiny", kernel_image.name, boot_volume="root")
    assert server.boot_volume_id == volume.id
    assert compute.devices.volume(ALICE, volume.id).server_uuid == server.uuid
    settle(server.uuid)
    assert compute.servers.get(ALICE, server.uuid).status == "ACTIVE"
    domain = _domain(compute, server.uuid)
    root = domain.find_device(alias=volume.alias)
    assert isinstance(root, Disk) and root.target_dev == "vda" and root.serial == volume.id
    assert domain.find_device(alias="ua-root-disk") is None
    assert domain.instance_metadata is not None and domain.instance_metadata.root is not None
    assert domain.instance_metadata.root.type == "volume"
    assert domain.instance_metadata.root.uuid == volume.id

    other = compute.servers.create(ALICE, "other", "tiny", kernel_image.name)
    settle(other.uuid)
    with pytest.raises(Conflict, match="in use by server"):
        compute.devices.attach_volume(ALICE, other.uuid, volume.id)
    with pytest.raises(Conflict, match="attached to server"):
        compute.devices.delete_volume(ALICE, volume.id)
    with pytest.raises(Conflict, match="is the root disk of server"):
        compute.devices.detach(ALICE, server.uuid, volume.alias)
    with pytest.raises(Conflict, match="in use by server"):
        compute.servers.create(ALICE, "again", "tiny", kernel_image.name, boot_volume=volume.id)

    compute.servers.delete(ALICE, server.uuid)
    settle(server.uuid)
    freed = compute.devices.volume(ALICE, volume.id)
    assert freed.status == "available" and freed.server_uuid is None
    compute.devices.delete_volume(ALICE, volume.id)


def test_bad_boot_volumes_are_refused_and_change_nothing(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    bobs = compute.devices.create_volume(BOB, "bobs", 1, "qcow2")
    with pytest.raises(NotFound, match="volume 'no-such-volume' does not exist"):
        compute.servers.create(ALICE, "x", "tiny", kernel_image.name, boot_volume="no-such-volume")
    with pytest.raises(NotFound, match="does not exist"):
        compute.servers.create(ALICE, "x", "tiny", kernel_image.name, boot_volume=bobs.id)
    used = compute.devices.create_volume(ALICE, "used", 1, "qcow2")
    holder = compute.servers.create(ALICE, "holder", "tiny", kernel_image.name, boot_volume="used")
    with pytest.raises(Conflict, match=f"volume '{used.id}' is in use by server {holder.uuid}"):
        compute.servers.create(ALICE, "x", "tiny", kernel_image.name, boot_volume="used")
    assert [s.name for s in compute.servers.list_all(ADMIN)] == ["holder"]
    assert compute.devices.volume(BOB, bobs.id).status == "available"


def test_a_volume_backed_root_claims_no_local_disk(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    compute.catalog.create_flavor("big-root", 1, 256, 5)
    volume = compute.devices.create_volume(ALICE, "root", 1, "qcow2")
    backed = compute.servers.create(ALICE, "v", "big-root", kernel_image.name,
                                    boot_volume=volume.id)  # fmt: skip
    local = compute.servers.create(ALICE, "l", "big-root", kernel_image.name)
    settle(backed.uuid)
    settle(local.uuid)
    placement = compute.scheduler.placement
    by_server = {s: placement.get_allocations(s).allocations for s in (backed.uuid, local.uuid)}
    [backed_alloc] = by_server[backed.uuid]
    [local_alloc] = by_server[local.uuid]
    assert "DISK_GB" not in backed_alloc.resources and local_alloc.resources["DISK_GB"] == 5


def test_a_base_stays_while_a_server_uses_it_and_goes_when_pruned_after_the_last(
    compute: Compute, tmp_path: Path, settle: Callable[[str], None]
) -> None:
    image = _qcow2_image(compute, tmp_path, "64M")
    first = compute.servers.create(ALICE, "a", "tiny", image.name)
    second = compute.servers.create(ALICE, "b", "tiny", image.name)
    settle(first.uuid)
    settle(second.uuid)
    client = compute.hosts.client(compute.hosts.default_host())
    assert isinstance(client, LocalHostClient)
    [base] = client.image_cache.bases()
    compute.servers.delete(ALICE, first.uuid)
    settle(first.uuid)
    assert client.prune_images(min_age_s=0) == [] and base.exists()  # the second uses it
    compute.servers.delete(ALICE, second.uuid)
    settle(second.uuid)
    assert base.exists()  # a delete prunes only bases unused for a day
    assert client.prune_images(min_age_s=0) == [base] and not base.exists()


def test_servers_racing_for_one_boot_volume_get_it_once(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    volume = compute.devices.create_volume(ALICE, "contested", 1, "qcow2")

    def boot(n: int) -> str:
        try:
            return compute.servers.create(
                ALICE, f"racer-{n}", "tiny", kernel_image.name, boot_volume=volume.id
            ).uuid
        except Conflict:
            return "refused"

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(boot, range(6)))
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1, outcomes
    assert [s.uuid for s in compute.servers.list_all(ADMIN)] == winners
    assert compute.devices.volume(ALICE, volume.id).server_uuid == winners[0]
    settle(winners[0])
