"""A compute service on a real store (SQLite and PostgreSQL) and libvirt's test driver."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wattvisor.compute import Compute, HostRecord, ImageRecord, LocalHostClient
from wattvisor.config import Settings, load_settings
from wattvisor.host.driver import HostDriver
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate

WAIT_S = 30.0


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
