"""A host's image cache fed by the controller over real HTTP on loopback, with a host
token from the real join: once per image for concurrent spawns, resumed after an
interruption, and never using a copy whose digest is wrong."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.served_controller import Controller, served_controller
from wattvisor.compute import LocalHostClient
from wattvisor.host.driver import HostDriver
from wattvisor.host.image_cache import (
    ContentMismatch,
    ExpectedContent,
    ImageCache,
    ImageCacheError,
    qcow2_backing_file,
)
from wattvisor.host.image_fetch import ControllerImages

MIB = 1024 * 1024


@dataclass
class Fleet:
    controller: Controller
    images: ControllerImages
    cache_dir: Path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with served_controller(tmp_path, workers=8) as controller:
        credentials = controller.join_agent()
        images = ControllerImages.for_agent(credentials)
        try:
            yield Fleet(controller, images, tmp_path / "agent-data" / "images")
        finally:
            images.close()


def _register_disk(controller: Controller, size: int) -> tuple[str, bytes]:
    path = controller.tmp / f"disk-{secrets.token_hex(3)}.raw"
    # Random head, zero tail: the cache keeps the holes of a raw image.
    content = os.urandom(size // 2) + bytes(size - size // 2)
    path.write_bytes(content)
    record = controller.node.compute.catalog.create_image(
        path.stem, disk_path=str(path), disk_format="raw"
    )
    return record.id, content


def _expected(content: bytes) -> ExpectedContent:
    return ExpectedContent(hashlib.sha256(content).hexdigest(), len(content))


def _agent_host(fleet: Fleet) -> str:
    """A second host on libvirt's test driver whose spawns read images from the
    controller over HTTP (as an agent's do); the controller's own host is disabled so
    every server lands there. Returns its id."""
    controller = fleet.controller
    node_file = controller.tmp / f"node-{secrets.token_hex(4)}.xml"
    node_file.write_text(
        "<node><cpu><mode>fixed</mode><nodes>1</nodes><sockets>1</sockets>"
        "<cores>16</cores><threads>1</threads><active>16</active><mhz>2000</mhz>"
        "<model>x86_64</model></cpu><memory>16777216</memory></node>"
    )
    settings = controller.node.settings
    remote = settings.host.model_copy(update={"share_local_fs": {}})
    data_dir = fleet.cache_dir.parent
    driver = HostDriver(remote, data_dir, uri=f"test://{node_file}")
    client = LocalHostClient(driver, data_dir=data_dir, image_sources=fleet.images)
    hosts = controller.node.compute.hosts
    before = {h.provider_uuid for h in hosts.list_all()}
    agent = hosts.add(client, name="edge-agent")
    for provider in before:
        hosts.set_enabled(provider, False, "the test boots on the agent host")
    controller.node.compute.catalog.create_flavor("d0", 1, 64, 0, exist_ok=True)
    return agent


def _boot(controller: Controller, count: int, image: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=controller.url, headers=controller.admin, timeout=30) as api:
        ids = []
        for n in range(count):
            made = api.post("/v1/servers", json={"name": f"s{n}", "flavor": "d0", "image": image})
            assert made.status_code == 202, made.text
            ids.append(made.json()["id"])
        done = []
        deadline = time.monotonic() + 120
        for server_id in ids:
            while True:
                body: dict[str, Any] = api.get(f"/v1/servers/{server_id}",
                                               params={"wait_s": 5}).json()  # fmt: skip
                if body["status"] != "BUILD" and body.get("task") is None:
                    done.append(body)
                    break
                assert time.monotonic() < deadline, body
    return done


def test_eight_concurrent_spawns_of_one_image_download_it_once(fleet: Fleet) -> None:
    image_id, content = _register_disk(fleet.controller, 6 * MIB)
    _agent_host(fleet)
    servers = _boot(fleet.controller, 8, image_id)
    assert [s["status"] for s in servers] == ["ACTIVE"] * 8, servers
    fetches = fleet.controller.log.image_requests(image_id)
    assert [(f.status, f.body_bytes) for f in fetches] == [(200, len(content))]
    [base] = ImageCache(fleet.cache_dir).bases()
    assert base.read_bytes() == content
    overlays = list((fleet.cache_dir.parent / "instances").glob("*/disk"))
    assert len(overlays) == 8
    assert {qcow2_backing_file(p) for p in overlays} == {str(base)}


def test_a_kernel_image_boots_from_checked_copies_fetched_once(fleet: Fleet) -> None:
    kernel = fleet.controller.tmp / "vmlinuz"
    kernel.write_bytes(os.urandom(300_000))
    initrd = fleet.controller.tmp / "initrd.img"
    initrd.write_bytes(os.urandom(200_000))
    image = fleet.controller.node.compute.catalog.create_image(
        "kernel-boot", kernel_path=str(kernel), initrd_path=str(initrd), cmdline="quiet"
    )
    _agent_host(fleet)
    servers = _boot(fleet.controller, 3, image.id)
    assert [s["status"] for s in servers] == ["ACTIVE"] * 3, servers
    fetched = sorted(f.query for f in fleet.controller.log.image_requests(image.id))
    assert fetched == ["part=initrd", "part=kernel"]
    cached = {
        p.name: p for p in fleet.cache_dir.iterdir() if "+" in p.name and ".json" not in p.name
    }
    sha = hashlib.sha256(kernel.read_bytes()).hexdigest()
    assert cached[f"{image.id}+kernel-{sha[:16]}"].read_bytes() == kernel.read_bytes()


def test_a_byte_corrupted_in_transit_is_never_used_and_the_error_names_both_digests(
    fleet: Fleet,
) -> None:
    image_id, content = _register_disk(fleet.controller, 3 * MIB)
    expected = _expected(content)
    cache = ImageCache(fleet.cache_dir)
    fleet.controller.log.flip_at = 1234
    source = fleet.images.source(image_id, "disk", "/controller/path", expected)
    with pytest.raises(ContentMismatch) as refused, cache.image_base(image_id, source, "raw",
                                                                     expected):  # fmt: skip
        pytest.fail("a corrupt download was handed out as a base")
    damaged = bytearray(content)
    damaged[1234] ^= 0x01
    message = str(refused.value)
    assert image_id in message
    assert expected.sha256 in message and hashlib.sha256(damaged).hexdigest() in message
    assert cache.bases() == [] and not list(fleet.cache_dir.glob(".*.part"))
    with cache.image_base(image_id, source, "raw", expected) as base:  # the next try is clean
        assert base.path.read_bytes() == content


def test_a_corrupt_download_fails_the_spawn_with_both_digests_for_the_admin(fleet: Fleet) -> None:
    image_id, content = _register_disk(fleet.controller, 2 * MIB)
    _agent_host(fleet)
    fleet.controller.log.flip_at = 99
    [server] = _boot(fleet.controller, 1, image_id)
    assert server["status"] == "ERROR"
    assert hashlib.sha256(content).hexdigest() in server["fault"], server["fault"]
    assert ImageCache(fleet.cache_dir).bases() == []


def test_an_interrupted_download_resumes_with_range_where_it_stopped(fleet: Fleet) -> None:
    image_id, content = _register_disk(fleet.controller, 5 * MIB)
    expected = _expected(content)
    cut = 2 * MIB + 12345
    fleet.controller.log.cut_after = cut
    cache = ImageCache(fleet.cache_dir, retry_delay_s=0.01)
    source = fleet.images.source(image_id, "disk", "/controller/path", expected)
    with cache.image_base(image_id, source, "raw", expected) as base:
        assert base.path.read_bytes() == content
    first, second = fleet.controller.log.image_requests(image_id)
    assert (first.range, first.body_bytes) == (None, cut)
    # Resumed after what had arrived (all of it, unless the last bytes were in flight),
    # not from the start.
    resumed_at = len(content) - second.body_bytes
    assert (second.status, second.range) == (206, f"bytes={resumed_at}-")
    assert MIB < resumed_at <= cut


def test_a_file_changed_on_the_controller_is_refused_by_the_host(fleet: Fleet) -> None:
    image_id, content = _register_disk(fleet.controller, MIB)
    path = Path(fleet.controller.node.compute.catalog.image(image_id).disk_path or "")
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    expected = _expected(content)
    source = fleet.images.source(image_id, "disk", str(path), expected)
    with (
        pytest.raises(ImageCacheError) as refused,
        ImageCache(fleet.cache_dir).image_base(image_id, source, "raw", expected),
    ):
        pytest.fail("a changed file was handed out as a base")
    assert "409" in str(refused.value) and expected.sha256 in str(refused.value)


def test_interruptions_beyond_the_retry_bound_fail_the_fetch_and_leave_nothing(
    fleet: Fleet,
) -> None:
    image_id, content = _register_disk(fleet.controller, 2 * MIB)
    expected = _expected(content)
    fleet.controller.log.cut_after = MIB
    cache = ImageCache(fleet.cache_dir, retries=0)
    source = fleet.images.source(image_id, "disk", "/controller/path", expected)
    with (
        pytest.raises(ImageCacheError, match="interrupted 1x, resumed at most 0x") as failed,
        cache.image_base(image_id, source, "raw", expected),
    ):
        pytest.fail("an unfinished download was handed out as a base")
    assert image_id in str(failed.value)
    assert cache.bases() == [] and not list(fleet.cache_dir.glob(".*.part"))
    assert len(fleet.controller.log.image_requests(image_id)) == 1
