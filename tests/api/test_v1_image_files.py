"""``GET /v1/images/{id}/file`` over real HTTP on loopback: digests in the headers, Range,
who may read image files, and a file changed after registration refused."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from biscuit_auth import KeyPair
from sqlalchemy import update

from support.served_controller import Controller, served_controller
from wattvisor.auth import mint_token
from wattvisor.compute.catalog import _images
from wattvisor.store import write_transaction
from wattvisor.store.generations import CATALOG, bump_generation

MIB = 1024 * 1024


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    with served_controller(tmp_path) as served:
        yield served


def _disk_image(controller: Controller, size: int = 3 * MIB + 17) -> tuple[str, Path, bytes]:
    path = controller.tmp / f"disk-{os.urandom(3).hex()}.raw"
    content = os.urandom(size)
    path.write_bytes(content)
    made = httpx.post(
        f"{controller.url}/v1/images",
        json={"name": path.stem, "disk_path": str(path), "disk_format": "raw"},
        headers=controller.admin,
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"]), path, content


def _host_headers(controller: Controller) -> dict[str, str]:
    credentials = controller.join_agent()
    return {"Authorization": f"Bearer {credentials.host_token()}"}


def _file(
    controller: Controller,
    image_id: str,
    auth: dict[str, str],
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.get(
        f"{controller.url}/v1/images/{image_id}/file",
        params=params or {"part": "disk"},
        headers={**auth, **(headers or {})},
        timeout=30,
    )


def test_the_catalog_records_each_files_sha256_and_size_at_registration(
    controller: Controller,
) -> None:
    image_id, _path, content = _disk_image(controller)
    record = controller.node.compute.catalog.image(image_id)
    assert record.disk_sha256 == hashlib.sha256(content).hexdigest()
    assert record.disk_size == len(content)
    assert record.kernel_sha256 is None


def test_a_host_token_from_the_join_streams_the_file_with_its_digest(
    controller: Controller,
) -> None:
    image_id, _path, content = _disk_image(controller)
    response = _file(controller, image_id, _host_headers(controller))
    assert response.status_code == 200, response.text
    sha = hashlib.sha256(content).hexdigest()
    assert response.content == content
    assert response.headers["content-length"] == str(len(content))
    assert response.headers["x-image-sha256"] == sha
    b64 = base64.b64encode(hashlib.sha256(content).digest()).decode()
    assert response.headers["repr-digest"] == f"sha-256=:{b64}:"
    assert response.headers["accept-ranges"] == "bytes"


def test_a_range_resumes_from_its_first_byte_while_the_content_is_the_same(
    controller: Controller,
) -> None:
    image_id, _path, content = _disk_image(controller)
    host = _host_headers(controller)
    etag = f'"sha256:{hashlib.sha256(content).hexdigest()}"'
    part = _file(controller, image_id, host, headers={"Range": "bytes=1000-", "If-Range": etag})
    assert part.status_code == 206
    assert part.content == content[1000:]
    assert part.headers["content-range"] == f"bytes 1000-{len(content) - 1}/{len(content)}"
    closed = _file(controller, image_id, host, headers={"Range": "bytes=10-19"})
    assert (closed.status_code, closed.content) == (206, content[10:20])
    other = _file(controller, image_id, host,
                  headers={"Range": "bytes=1000-", "If-Range": '"sha256:00"'})  # fmt: skip
    assert other.status_code == 200 and other.content == content
    beyond = _file(controller, image_id, host, headers={"Range": f"bytes={len(content)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(content)}"


def test_members_cannot_read_image_files_and_admins_can(controller: Controller) -> None:
    image_id, _path, content = _disk_image(controller)
    keys = KeyPair()
    controller.node.compute.users.register("alice", "proj-a", "member", repr(keys.public_key))
    member = {
        "Authorization": f"Bearer {mint_token(keys.private_key, 'alice', timedelta(hours=1))}"
    }
    refused = _file(controller, image_id, member)
    assert refused.status_code == 403
    assert "'alice'" in refused.json()["error"]["message"]
    assert _file(controller, image_id, controller.admin).content == content


def test_a_host_token_still_reaches_nothing_else(controller: Controller) -> None:
    image_id, _path, _content = _disk_image(controller)
    host = _host_headers(controller)
    for path in ("/v1/images", f"/v1/images/{image_id}", "/v1/servers"):
        response = httpx.get(f"{controller.url}{path}", headers=host)
        assert response.status_code == 403, path


def test_an_unknown_part_is_refused_naming_it(controller: Controller) -> None:
    image_id, _path, _content = _disk_image(controller)
    response = _file(controller, image_id, controller.admin, params={"part": "rootfs"})
    assert response.status_code == 400
    assert "'rootfs'" in response.json()["error"]["message"]
    typo = _file(controller, image_id, controller.admin, params={"prat": "disk"})
    assert typo.status_code == 400 and "'prat'" in typo.json()["error"]["message"]
    missing = _file(controller, image_id, controller.admin, params={"part": "kernel"})
    assert missing.status_code == 404
    assert "has no kernel file" in missing.json()["error"]["message"]


def test_a_file_changed_after_registration_is_refused_naming_both_digests(
    controller: Controller,
) -> None:
    image_id, path, content = _disk_image(controller)
    assert _file(controller, image_id, controller.admin).status_code == 200  # verified once
    changed = bytearray(content)
    changed[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(changed))
    response = _file(controller, image_id, _host_headers(controller))
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "image_file_changed"
    assert hashlib.sha256(content).hexdigest() in error["message"]
    assert hashlib.sha256(bytes(changed)).hexdigest() in error["message"]


def test_an_image_registered_without_digests_gets_them_on_first_use(
    controller: Controller,
) -> None:
    image_id, _path, content = _disk_image(controller)
    engine = controller.node.compute.catalog.engine
    with write_transaction(engine) as conn:
        conn.execute(
            update(_images).where(_images.c.id == image_id).values(disk_sha256=None, disk_size=None)
        )
        bump_generation(conn, CATALOG)
    assert controller.node.compute.catalog.image(image_id).disk_sha256 is None
    response = _file(controller, image_id, controller.admin)
    assert response.headers["x-image-sha256"] == hashlib.sha256(content).hexdigest()
    assert controller.node.compute.catalog.image(image_id).disk_size == len(content)
