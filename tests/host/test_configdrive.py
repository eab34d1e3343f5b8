"""The config drive: an ISO labelled config-2 in cloud-init's OpenStack layout, no host paths."""

from __future__ import annotations

import io
import json
import shutil
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from support.availability import unavailable
from wattvisor.guest import ShareMeta
from wattvisor.host.configdrive import (
    CONFIG_DRIVE_LABEL,
    ConfigDriveError,
    ConfigDriveMetadata,
    build_config_drive,
    config_drive_metadata_document,
)

INSTANCE = "6f1c2a9e-0b7d-4c1e-9a55-2f3c4d5e6f70"
SHARE_DIR = "/var/lib/libvirt/scaphandre/instance-0000002a"


def _meta(**overrides: Any) -> ConfigDriveMetadata:
    values: dict[str, Any] = {
        "uuid": INSTANCE,
        "name": "Power Demo",
        "project_id": "proj-a",
        "availability_zone": "lab",
        "meta": {"role": "web"},
        "shares": (ShareMeta(tag="scaphandre", purpose="power_metrics"),),
    }
    values.update(overrides)
    return ConfigDriveMetadata(**values)


def _read(iso: pycdlib.PyCdlib, path: str, kind: str = "rr_path") -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **{kind: path})
    return out.getvalue()


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    return build_config_drive(tmp_path / "drives" / f"{INSTANCE}.iso", _meta())


def test_drive_is_labelled_config_2(drive: Path) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(drive))
    try:
        assert iso.pvd.volume_identifier.decode().rstrip() == CONFIG_DRIVE_LABEL == "config-2"
        assert iso.joliet_vd is not None
        assert iso.joliet_vd.volume_identifier.decode("utf-16-be").rstrip() == "config-2"
    finally:
        iso.close()


def test_blkid_sees_the_label_cloud_init_looks_for(drive: Path) -> None:
    if shutil.which("blkid") is None:
        unavailable("blkid (util-linux) is not installed")
    found = subprocess.run(
        ["blkid", "-p", "-o", "export", str(drive)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "LABEL=config-2" in found and "TYPE=iso9660" in found


def test_meta_data_json_carries_identity_and_share_devices(drive: Path) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(drive))
    try:
        document = json.loads(_read(iso, "/openstack/latest/meta_data.json"))
        joliet = json.loads(_read(iso, "/openstack/latest/meta_data.json", "joliet_path"))
    finally:
        iso.close()
    assert joliet == document
    assert document["uuid"] == INSTANCE
    assert document["name"] == "Power Demo"
    assert document["hostname"] == "power-demo"
    assert document["project_id"] == "proj-a"
    assert document["launch_index"] == 0
    assert document["availability_zone"] == "lab"
    assert document["meta"] == {"role": "web"}
    assert document["devices"] == [
        {
            "type": "share",
            "bus": "none",
            "address": "none",
            "tag": "scaphandre",
            "purpose": "power_metrics",
        }
    ]


def test_drive_has_the_layout_cloud_init_reads(drive: Path) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(drive))
    try:
        tree = {
            f"{root}/{name}".lstrip("/")
            for root, _dirs, files in iso.walk(rr_path="/")
            for name in files
        }
        latest = _read(iso, "/openstack/latest/meta_data.json")
        dated = _read(iso, "/openstack/2018-08-27/meta_data.json")
        network = json.loads(_read(iso, "/openstack/latest/network_data.json"))
        vendor = json.loads(_read(iso, "/openstack/latest/vendor_data.json"))
    finally:
        iso.close()
    assert tree == {
        f"openstack/{version}/{name}"
        for version in ("latest", "2018-08-27")
        for name in ("meta_data.json", "network_data.json", "vendor_data.json")
    }
    assert dated == latest
    assert network == {} and vendor == {}


def test_api_document_is_the_guest_document(drive: Path) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(drive))
    try:
        on_drive = json.loads(_read(iso, "/openstack/latest/meta_data.json"))
    finally:
        iso.close()
    assert config_drive_metadata_document(_meta()) == on_drive


def test_no_host_path_anywhere_on_the_drive(tmp_path: Path) -> None:
    # The share's host directory is what a careless caller might pass along; the tag
    # is all the drive may hold.
    meta = _meta(shares=(ShareMeta(tag="scaphandre", purpose="power_metrics"),))
    drive = build_config_drive(tmp_path / "cd.iso", meta)
    raw = drive.read_bytes()
    for needle in (SHARE_DIR, "/var/lib", str(tmp_path), "libvirt"):
        assert needle.encode() not in raw
        assert needle.encode("utf-16-be") not in raw
    text = json.dumps(config_drive_metadata_document(meta))
    assert '"/' not in text


def test_drive_file_is_0644_and_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "d" / "cd.iso"
    build_config_drive(target, _meta(name="first"))
    build_config_drive(target, _meta(name="second"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert stat.S_IMODE(target.parent.stat().st_mode) & 0o005 == 0o005
    assert [p.name for p in target.parent.iterdir()] == ["cd.iso"]
    iso = pycdlib.PyCdlib()
    iso.open(str(target))
    try:
        assert json.loads(_read(iso, "/openstack/latest/meta_data.json"))["name"] == "second"
    finally:
        iso.close()


def test_bad_metadata_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigDriveError, match="'not-a-uuid' is not a UUID"):
        build_config_drive(tmp_path / "cd.iso", _meta(uuid="not-a-uuid"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hostname": "Bad_Host"}, "hostname 'Bad_Host' is not accepted"),
        ({"name": " "}, "instance name"),
        ({"project_id": ""}, "project id"),
        ({"launch_index": -1}, "launch index"),
        ({"meta": {"k": "v" * 256}}, "at most 255"),
        (
            {"shares": (ShareMeta(tag="a", purpose="p"), ShareMeta(tag="a", purpose="q"))},
            "must be unique",
        ),
    ],
)
def test_invalid_metadata_names_the_value(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigDriveError, match=message):
        _meta(**overrides)


def test_hostname_defaults_to_a_dns_label_of_the_name() -> None:
    assert _meta(name="Web Server #1").hostname == "web-server-1"
    assert _meta(name="!!!").hostname == "server"


def test_drive_without_shares_has_an_empty_device_list(tmp_path: Path) -> None:
    document = config_drive_metadata_document(_meta(shares=()))
    assert document["devices"] == []
    assert str(uuid.UUID(document["uuid"])) == INSTANCE


def _document_on(path: Path) -> Any:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        return json.loads(_read(iso, "/openstack/latest/meta_data.json"))
    finally:
        iso.close()


def test_each_drive_carries_only_its_own_document(tmp_path: Path) -> None:
    """Drives are copies of one cached image: no drive may show another's document."""
    first = build_config_drive(tmp_path / "a.iso", _meta(name="first"))
    second = build_config_drive(
        tmp_path / "b.iso", _meta(uuid="b2a7e6a9-7c55-4bb4-9c39-1f7b5a1b2c3d", name="second")
    )
    assert _document_on(first)["name"] == "first"
    assert _document_on(second) == config_drive_metadata_document(
        _meta(uuid="b2a7e6a9-7c55-4bb4-9c39-1f7b5a1b2c3d", name="second")
    )


def test_document_larger_than_the_cached_slot_gets_an_image_of_its_own(tmp_path: Path) -> None:
    from wattvisor.host.configdrive import META_DATA_SLOT

    meta = _meta(meta={f"key-{i}": "v" * 200 for i in range(60)})
    assert len(json.dumps(config_drive_metadata_document(meta))) > META_DATA_SLOT
    drive = build_config_drive(tmp_path / "big.iso", meta)
    assert _document_on(drive) == config_drive_metadata_document(meta)
