"""A compute service on a real store (SQLite and PostgreSQL) and libvirt's test driver;
``qemu_compute``: one on a real libvirtd (QEMU, TCG) for the tests that boot guests."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from compute.principals import ADMIN
from support.guest_domains import destroy_and_undefine
from wattvisor.compute import Compute, HostRecord, ImageRecord, LocalHostClient
from wattvisor.config import Settings, load_settings
from wattvisor.host.driver import HostDriver
from wattvisor.images import GuestImage
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

WAIT_S = 30.0
QEMU_WAIT_S = 120.0


def second_host_uri(directory: Path, cores: int = 4) -> str:
    """A libvirt test-driver URI of its own (a node file), i.e. another host."""
    node = directory / f"node-{secrets.token_hex(4)}.xml"
    node.write_text(
        "<node><cpu><mode>fixed</mode><nodes>1</nodes><sockets>1</sockets>"
        f"<cores>{cores}</cores><threads>1</threads><active>{cores}</active><mhz>2000</mhz>"
        "<model>x86_64</model></cpu><memory>8388608</memory></node>"
    )
    return f"test://{node}"


def add_test_driver_host(
    compute: Compute, directory: Path, name: str, cores: int = 4
) -> HostRecord:
    """Another host on libvirt's test driver with a node file of its own.

    It is added the way the controller adds a host it drives itself, not registered by
    URI: an admin may not register a URI that makes libvirt read a file.
    """
    settings = compute.hosts.settings
    driver = HostDriver(settings.host, settings.data_dir, uri=second_host_uri(directory, cores))
    return compute.hosts.get(compute.hosts.add(LocalHostClient(driver), name=name))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        host={
            "libvirt_uri": "test:///default",
            "virt_type": "qemu",
            "instance_name_template": f"wvc-{secrets.token_hex(4)}-%04x",
        },
        energy={"source": "model"},
        compute={"workers": 2},
    )


@pytest.fixture
def compute(store_url: str, settings: Settings) -> Iterator[Compute]:
    engine = make_engine(store_url)
    migrate(engine)

    service = Compute.build(engine, Placement(engine), settings)
    driver = HostDriver(settings.host, settings.data_dir, uri="test:///default")
    service.hosts.add(LocalHostClient(driver), name="local-host", local=True)
    service.ensure_default_flavors()
    try:
        yield service
    finally:
        service.close()
        engine.dispose()


@pytest.fixture
def kernel_image(compute: Compute, tmp_path: Path) -> ImageRecord:
    """An image booting a kernel file (the test driver never runs it)."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(b"initrd")
    return compute.catalog.create_image(
        "tiny-linux", kernel_path=str(kernel), initrd_path=str(initrd), cmdline="console=ttyS0"
    )


@pytest.fixture
def settle(compute: Compute) -> Callable[[str], None]:
    """Wait until the server's queued task has run."""

    def wait(server_id: str) -> None:
        compute.servers.wait(server_id, WAIT_S)

    return wait


@pytest.fixture
def qemu_compute(
    libvirt_system: libvirt.virConnect, guest_image: GuestImage, world_readable_tmp: Path
) -> Iterator[Compute]:
    """A compute service on SQLite driving the shared ``qemu:///system`` with the tiny
    guest as image ``idle`` (it idles) and ``disks`` (it reports its disks, root ``vda``).
    Whatever a test leaves (servers, their domains, volumes, the pool) is removed."""
    settings = load_settings(
        data_dir=world_readable_tmp / "data",
        host={"libvirt_uri": "qemu:///system", "virt_type": "qemu",
              "instance_name_template": f"wvtest-{secrets.token_hex(5)}-%04x"},
        compute={"stop_timeout_s": 1},
    )  # fmt: skip
    engine = make_engine(settings.store_url)
    migrate(engine)
    compute = Compute.build(engine, Placement(engine), settings)
    client = LocalHostClient(HostDriver(settings.host, settings.data_dir, uri="qemu:///system"))
    compute.hosts.add(client, name="qemu-host", local=True)
    compute.ensure_default_flavors()
    for name, cmdline in (
        ("idle", guest_image.cmdline("idle")),
        ("disks", guest_image.cmdline("disks", file="vda")),
    ):
        compute.catalog.create_image(
            name, kernel_path=str(guest_image.kernel), initrd_path=str(guest_image.initrd),
            cmdline=cmdline,
        )  # fmt: skip
    try:
        yield compute
    finally:
        for server in compute.servers.list_all(ADMIN):
            compute.servers.delete(ADMIN, server.uuid)
            compute.servers.wait(server.uuid, QEMU_WAIT_S)
            if server.domain_name:
                with contextlib.suppress(libvirt.libvirtError):
                    destroy_and_undefine(libvirt_system.lookupByName(server.domain_name))
        for volume in compute.devices.volumes(ADMIN):
            with contextlib.suppress(Exception):
                compute.devices.delete_volume(ADMIN, volume.id)
        with contextlib.suppress(libvirt.libvirtError):
            pool = libvirt_system.storagePoolLookupByName(client.volume_pool)
            pool.destroy()
            pool.undefine()
        compute.close()
        engine.dispose()
