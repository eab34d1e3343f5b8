"""The tiny guest image: cached, deterministic, complete, and it boots."""

from __future__ import annotations

import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from support.guest_domains import (
    GuestDomainSpec,
    GuestShare,
    marker_fields,
    read_console,
    unique_domain_name,
    wait_for_marker,
)
from support.iso9660 import iso9660_image
from wattvisor.images import GuestImage, default_cache_dir, ensure_guest_image
from wattvisor.images.debian_kernel import module_dependencies
from wattvisor.images.guest_init import INIT_VERSION

BOOT_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def unpacked_initrd(guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("initrd")
    with guest_image.initrd.open("rb") as compressed:
        gunzip = subprocess.run(["gzip", "-dc"], stdin=compressed, capture_output=True, check=True)
    # --no-absolute-filenames and no device nodes: extract as plain files only.
    subprocess.run(
        ["cpio", "-i", "-d", "--quiet", "--no-absolute-filenames", "--nonmatching", "dev/*"],
        input=gunzip.stdout,
        cwd=root,
        check=True,
    )
    listing = subprocess.run(
        ["cpio", "-t", "-v", "--quiet"], input=gunzip.stdout, capture_output=True, check=True
    ).stdout.decode()
    (root / "LISTING").write_text(listing)
    return root


def test_default_cache_is_the_git_ignored_folder_of_the_checkout(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    reachable = all(p.stat().st_mode & stat.S_IXOTH for p in [repo, *repo.parents])
    if reachable:
        assert default_cache_dir() == repo / ".cache" / "guest-image"
        assert ".cache/" in (repo / ".gitignore").read_text().split()
    else:  # QEMU's user could not open files inside this checkout
        assert default_cache_dir(tmp_path) == tmp_path / "images"


def test_second_call_serves_the_cache_without_rebuilding(guest_image: GuestImage) -> None:
    before = guest_image.initrd.stat().st_mtime_ns
    again = ensure_guest_image(guest_image.directory.parent)
    assert again.built is False
    assert (again.kernel, again.initrd) == (guest_image.kernel, guest_image.initrd)
    assert again.initrd.stat().st_mtime_ns == before


def test_rebuild_from_the_same_inputs_is_byte_identical(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    # Reuse the fetched kernel so the test does not download it again.
    shutil.copytree(guest_image.directory.parent / "kernels", tmp_path / "kernels")
    rebuilt = ensure_guest_image(tmp_path)
    assert rebuilt.built is True
    assert rebuilt.directory.name == guest_image.directory.name
    assert rebuilt.initrd.read_bytes() == guest_image.initrd.read_bytes()
    assert rebuilt.kernel.read_bytes() == guest_image.kernel.read_bytes()


def test_image_files_are_reachable_by_the_unprivileged_qemu_user(
    guest_image: GuestImage,
) -> None:
    for path in (guest_image.kernel, guest_image.initrd):
        assert path.stat().st_mode & stat.S_IROTH, path
        for parent in path.parents:
            assert parent.stat().st_mode & stat.S_IXOTH, parent


def test_kernel_is_debians_cloud_kernel(guest_image: GuestImage) -> None:
    assert guest_image.kernel_version.endswith("-cloud-amd64")
    assert guest_image.kernel_package.startswith(f"linux-image-{guest_image.kernel_version} ")
    assert guest_image.kernel.read_bytes()[0x202:0x206] == b"HdrS"  # x86 boot protocol header


def test_initramfs_has_init_busybox_and_a_console_node(
    unpacked_initrd: Path,
) -> None:
    init = (unpacked_initrd / "init").read_text()
    assert init.startswith("#!/bin/busybox sh\n")
    assert f"version {INIT_VERSION}" in init
    assert (unpacked_initrd / "init").stat().st_mode & stat.S_IXUSR
    assert (unpacked_initrd / "bin" / "busybox").read_bytes()[:4] == b"\x7fELF"
    console = next(
        line
        for line in (unpacked_initrd / "LISTING").read_text().splitlines()
        if line.endswith(" dev/console")
    )
    assert console.startswith("c")


def test_modules_load_after_their_dependencies(
    guest_image: GuestImage, unpacked_initrd: Path
) -> None:
    moddir = unpacked_initrd / "lib" / "modules" / guest_image.kernel_version
    order = (moddir / "load-order").read_text().split()
    for needed in ("virtio_pci", "fuse", "virtiofs", "isofs", "sr_mod", "ata_piix"):
        assert needed in order
    for position, name in enumerate(order):
        ko = moddir / f"{name}.ko"
        assert ko.read_bytes()[:4] == b"\x7fELF", f"{name}.ko is not a plain ELF module"
        for dep in module_dependencies(ko):
            assert dep in order[:position], f"{name} needs {dep} loaded first"


def test_cmdline_selects_a_scenario_and_refuses_white_space(guest_image: GuestImage) -> None:
    line = guest_image.cmdline("share", tag="wvshare", pause=2)
    assert line.startswith("console=ttyS0 ")
    assert line.endswith(" wv.scenario=share wv.tag=wvshare wv.pause=2")
    with pytest.raises(ValueError, match="white space"):
        guest_image.cmdline("share", tag="two words")


def _boot(
    start: Callable[[str], libvirt.virDomain],
    image: GuestImage,
    cmdline: str,
    console: Path,
) -> libvirt.virDomain:
    return start(
        GuestDomainSpec(
            name=unique_domain_name(), image=image, cmdline=cmdline, serial_log=console
        ).xml()
    )


@pytest.mark.guest
def test_guest_boots_loads_every_module_and_idles(
    start_domain: Callable[[str], libvirt.virDomain],
    guest_image: GuestImage,
    world_readable_tmp: Path,
) -> None:
    console = world_readable_tmp / "console.log"
    domain = _boot(start_domain, guest_image, guest_image.cmdline("idle"), console)
    wait_for_marker(console, "WV-IDLE", BOOT_TIMEOUT_S)
    text = read_console(console)
    boot = marker_fields(wait_for_marker(console, "WV-BOOT", 1))
    assert boot == {"kernel": guest_image.kernel_version, "init": str(INIT_VERSION)}
    assert "WV-MODULES-LOADED" in text, text
    assert domain.isActive()


@pytest.mark.guest
def test_busy_guest_spins_its_cpu(
    start_domain: Callable[[str], libvirt.virDomain],
    guest_image: GuestImage,
    world_readable_tmp: Path,
) -> None:
    console = world_readable_tmp / "console.log"
    domain = _boot(start_domain, guest_image, guest_image.cmdline("busy"), console)
    wait_for_marker(console, "WV-BUSY", BOOT_TIMEOUT_S)
    cpu_ns = domain.info()[4]
    for _ in range(100):
        if domain.info()[4] > cpu_ns:
            break
        time.sleep(0.1)
    assert domain.info()[4] > cpu_ns


@pytest.mark.guest
def test_unknown_scenario_is_reported_and_the_guest_powers_off(
    start_domain: Callable[[str], libvirt.virDomain],
    guest_image: GuestImage,
    world_readable_tmp: Path,
) -> None:
    console = world_readable_tmp / "console.log"
    _boot(start_domain, guest_image, guest_image.cmdline("dance"), console)
    error = wait_for_marker(console, "WV-ERROR", BOOT_TIMEOUT_S)
    assert "[dance]" in error and "share busy idle cdrom" in error
    wait_for_marker(console, "WV-DONE", BOOT_TIMEOUT_S)


@pytest.mark.guest
@pytest.mark.parametrize("bus", ["ide", "scsi"])
def test_guest_reads_a_file_from_an_iso9660_cdrom(
    start_domain: Callable[[str], libvirt.virDomain],
    guest_image: GuestImage,
    world_readable_tmp: Path,
    bus: str,
) -> None:
    """What a config drive needs: the cloud kernel has no AHCI, so IDE or virtio-scsi."""
    iso = world_readable_tmp / "config.iso"
    iso.write_bytes(
        iso9660_image(
            {"openstack/latest/meta_data.json": b'{"uuid": "wv-1"}\n', "README": b"hello\n"},
            volume_id="config-2",
        )
    )
    iso.chmod(0o644)
    console = world_readable_tmp / "console.log"
    start_domain(
        GuestDomainSpec(
            name=unique_domain_name(),
            image=guest_image,
            cmdline=guest_image.cmdline("cdrom", file="openstack/latest/meta_data.json"),
            serial_log=console,
            cdrom=iso,
            cdrom_bus=bus,
        ).xml()
    )
    wait_for_marker(console, "WV-DONE", BOOT_TIMEOUT_S)
    text = read_console(console)
    assert "WV-CDROM-MOUNTED" in text, text
    content = marker_fields(wait_for_marker(console, "WV-CDROM-FILE ", 1))
    assert content == {"file": "openstack/latest/meta_data.json", "value": '{"uuid": "wv-1"}'}


@pytest.mark.guest
def test_busy_guest_keeps_printing_its_shared_counter(
    start_domain: Callable[[str], libvirt.virDomain],
    guest_image: GuestImage,
    world_readable_tmp: Path,
) -> None:
    """The energy tests' guest: it spins and shows what it reads from its share."""
    share = world_readable_tmp / "share"
    share.mkdir()
    (share / "energy_uj").write_text("41\n")
    console = world_readable_tmp / "console.log"
    start_domain(
        GuestDomainSpec(
            name=unique_domain_name(),
            image=guest_image,
            cmdline=guest_image.cmdline("busy", tag="power", file="energy_uj", interval=1),
            serial_log=console,
            shares=(GuestShare(share, "power"),),
        ).xml()
    )
    first = marker_fields(wait_for_marker(console, "WV-READ n=tick", BOOT_TIMEOUT_S))
    assert first["value"] == "41"
    wait_for_marker(console, "WV-BUSY", BOOT_TIMEOUT_S)
    (share / "energy_uj").write_text("42\n")
    wait_for_marker(console, "WV-READ n=tick file=energy_uj value=[42]", BOOT_TIMEOUT_S)


def test_an_earlier_image_that_cannot_be_removed_is_logged_and_the_rest_pruned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pruning goes on past a folder it cannot remove (here: a mount inside it) and says so."""
    from support.availability import require_root
    from wattvisor.images.guest import _prune

    require_root("mounting a tmpfs")
    stuck, gone, kept = tmp_path / "image-stuck", tmp_path / "image-gone", tmp_path / "image-now"
    for folder in (stuck / "mnt", gone, kept):
        folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "wvtest", str(stuck / "mnt")],
                   check=True)  # fmt: skip
    try:
        with caplog.at_level("WARNING", logger="wattvisor.images.guest"):
            _prune(tmp_path, keep={kept})
    finally:
        subprocess.run(["umount", str(stuck / "mnt")], check=False)
    assert not gone.exists() and kept.is_dir()
    assert any(str(stuck) in record.getMessage() for record in caplog.records)
