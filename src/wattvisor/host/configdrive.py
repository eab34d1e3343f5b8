"""OpenStack-style config drive: an ISO 9660 image labelled ``config-2`` for the guest.

cloud-init's ConfigDrive source (and any image built for OpenStack) looks for a
filesystem labelled ``config-2`` holding ``openstack/<version>/meta_data.json``,
so a guest learns its identity and its share mount tags without any network::

    openstack/latest/meta_data.json        the document below
    openstack/latest/network_data.json     the server's interface and static addresses ({} if none)
    openstack/latest/vendor_data.json      {}
    openstack/2018-08-27/...               the same, under a dated version cloud-init knows

``meta_data.json`` follows Nova's fields (``uuid``, ``name``, ``hostname``,
``project_id``, ``launch_index``, ``availability_zone``, ``meta``, ``devices``).
Each share is a device like Nova's virtiofs share metadata
(``{"type": "share", "bus": "none", "address": "none", "tag": ...}``) plus
``"purpose"``. The same document is served to the owner by
``GET /v1/servers/{id}/metadata`` (:func:`config_drive_metadata_document`).
Neither holds host paths or host names: the input type has no field for them.

The image is written with pycdlib (pure Python, no genisoimage on hosts), with
Joliet and Rock Ridge so that Linux shows the lower-case names cloud-init opens.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import threading
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycdlib

from wattvisor.guest import Disk, ShareMeta, make_alias
from wattvisor.host.networks import GuestNetwork, network_data_document

log = logging.getLogger(__name__)

CONFIG_DRIVE_LABEL = "config-2"
CONFIG_DRIVE_ALIAS = make_alias("config-drive")
"""The cdrom's stable user alias; a domain has at most one config drive."""
_CDROM_TARGETS = {"ide": "hdc", "sata": "sdc", "scsi": "sdc"}
METADATA_VERSIONS: tuple[str, ...] = ("2018-08-27", "latest")
"""Version directories written; cloud-init reads the newest dated one it knows, then latest."""

_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_META_KEY_MAX = 255
_META_VALUE_MAX = 255


class ConfigDriveError(ValueError):
    """Metadata that cannot go on a config drive; the message names the value."""


def hostname_from_name(name: str) -> str:
    """A DNS label from a display name, as Nova derives ``hostname`` (``Web 1`` -> ``web-1``)."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "server"


@dataclass(frozen=True)
class ConfigDriveMetadata:
    """What a guest may learn about itself: identity, owner project, metadata, share tags."""

    uuid: str
    name: str
    project_id: str
    hostname: str | None = None
    launch_index: int = 0
    availability_zone: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    shares: tuple[ShareMeta, ...] = ()
    public_keys: Mapping[str, str] = field(default_factory=dict)
    network: GuestNetwork | None = None

    def __post_init__(self) -> None:
        try:
            canonical = str(uuidlib.UUID(str(self.uuid)))
        except ValueError as exc:
            raise ConfigDriveError(
                f"instance uuid {self.uuid!r} is not a UUID such as "
                "'6f1c2a9e-0b7d-4c1e-9a55-2f3c4d5e6f70'"
            ) from exc
        object.__setattr__(self, "uuid", canonical)
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigDriveError(f"instance name {self.name!r} must be a non-empty string")
        if not isinstance(self.project_id, str) or not self.project_id.strip():
            raise ConfigDriveError(f"project id {self.project_id!r} must be a non-empty string")
        hostname = self.hostname if self.hostname is not None else hostname_from_name(self.name)
        if not _HOSTNAME.fullmatch(hostname):
            raise ConfigDriveError(
                f"hostname {hostname!r} is not accepted; use a DNS label: 1-63 characters "
                "a-z 0-9 -, not starting or ending with -"
            )
        object.__setattr__(self, "hostname", hostname)
        if not isinstance(self.launch_index, int) or self.launch_index < 0:
            raise ConfigDriveError(f"launch index {self.launch_index!r} must be an integer >= 0")
        for key, value in self.meta.items():
            if not isinstance(key, str) or not 0 < len(key) <= _META_KEY_MAX:
                raise ConfigDriveError(f"metadata key {key!r} must be 1-255 characters")
            if not isinstance(value, str) or len(value) > _META_VALUE_MAX:
                raise ConfigDriveError(
                    f"metadata value for {key!r} must be a string of at most 255 characters"
                )
        object.__setattr__(self, "meta", dict(self.meta))
        object.__setattr__(self, "public_keys", dict(self.public_keys))
        shares = tuple(self.shares)
        for share in shares:
            if not isinstance(share, ShareMeta):
                raise ConfigDriveError(f"share {share!r} must be a ShareMeta(tag, purpose)")
        tags = [s.tag for s in shares]
        if len(set(tags)) != len(tags):
            raise ConfigDriveError(f"share mount tags {tags!r} must be unique")
        object.__setattr__(self, "shares", shares)


def config_drive_metadata_document(meta: ConfigDriveMetadata) -> dict[str, Any]:
    """``meta_data.json`` as a dict: what the guest reads and the owner gets from the API."""
    document: dict[str, Any] = {
        "uuid": meta.uuid,
        "name": meta.name,
        "hostname": meta.hostname,
        "project_id": meta.project_id,
        "launch_index": meta.launch_index,
        "availability_zone": meta.availability_zone,
        "meta": dict(meta.meta),
        "devices": [
            {
                "type": "share",
                "bus": "none",
                "address": "none",
                "tag": share.tag,
                "purpose": share.purpose,
            }
            for share in meta.shares
        ],
    }
    if meta.public_keys:
        document["public_keys"] = dict(meta.public_keys)
    return document


def config_drive_files(meta: ConfigDriveMetadata) -> dict[str, bytes]:
    """Every file of the drive, by path (``openstack/latest/meta_data.json`` -> bytes)."""
    meta_data = json.dumps(config_drive_metadata_document(meta), indent=2, sort_keys=True)
    network_data = json.dumps(network_data_document(meta.network), indent=2)
    files: dict[str, bytes] = {}
    for version in METADATA_VERSIONS:
        base = f"openstack/{version}"
        files[f"{base}/meta_data.json"] = meta_data.encode() + b"\n"
        files[f"{base}/network_data.json"] = network_data.encode() + b"\n"
        files[f"{base}/vendor_data.json"] = b"{}\n"
    return files


def build_config_drive(path: Path, meta: ConfigDriveMetadata) -> Path:
    """Write the config drive of ``meta`` to ``path`` (0644) and return ``path``.

    Written to a temporary file beside ``path`` and renamed, so a guest or a
    concurrent reader sees the old image or the new one, never half of one.
    Missing parent directories are created 0755: QEMU runs as its own user and
    must be able to reach the file.
    """
    image = config_drive_image(meta)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(image)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("removing the unfinished config drive %s failed: %s", tmp, exc)
        raise
    return path


def config_drive_device(path: Path, *, bus: str = "ide") -> Disk:
    """The read-only cdrom ``<disk>`` carrying the drive at ``path``, aliased ``ua-config-drive``.

    IDE suits the ``pc`` machine (every Linux kernel has ``ata_piix``); ``q35`` has no
    IDE, use ``sata`` there, or ``scsi`` with a virtio-scsi controller.
    """
    target = _CDROM_TARGETS.get(bus)
    if target is None:
        raise ConfigDriveError(
            f"config drive bus {bus!r} is not accepted; use one of {sorted(_CDROM_TARGETS)}"
        )
    return Disk(
        device="cdrom",
        bus=bus,
        target_dev=target,
        source_file=str(path),
        driver_type="raw",
        readonly=True,
        alias=CONFIG_DRIVE_ALIAS,
    )


META_DATA_SLOT = 8192
"""Bytes reserved for ``meta_data.json`` in the cached image; larger documents get a fresh image."""
NETWORK_DATA_SLOT = 4096
"""Bytes reserved for ``network_data.json`` in the cached image."""
_SLOTS: dict[str, int] = {"meta_data.json": META_DATA_SLOT, "network_data.json": NETWORK_DATA_SLOT}
_PLACEHOLDERS: dict[str, bytes] = {
    name: b"{" + fill * (size - 3) + b"}\n"
    for (name, size), fill in zip(_SLOTS.items(), (b"#", b"%"), strict=True)
}
_template: tuple[bytes, dict[str, tuple[int, ...]]] | None = None
_template_lock = threading.Lock()


def config_drive_image(meta: ConfigDriveMetadata) -> bytes:
    """The ISO 9660 (Joliet + Rock Ridge) image bytes of the drive.

    Every drive has the same layout and differs only in ``meta_data.json`` and
    ``network_data.json``, so the image is built once with fixed-size placeholders
    and each drive is a copy with the documents written over them, padded with JSON
    white space (about 40 times cheaper than building the image). A document too
    large for its slot gets an image of its own.
    """
    files = config_drive_files(meta)
    latest = f"openstack/{METADATA_VERSIONS[-1]}"
    documents = {name: files[f"{latest}/{name}"] for name in _SLOTS}
    if any(len(documents[name]) > size for name, size in _SLOTS.items()):
        return _build_image(files)
    image, offsets = _cached_template()
    drive = bytearray(image)
    for name, size in _SLOTS.items():
        padded = documents[name][:-1].ljust(size - 1, b" ") + b"\n"
        for offset in offsets[name]:
            drive[offset : offset + size] = padded
    return bytes(drive)


def _cached_template() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    global _template
    with _template_lock:
        if _template is None:
            files = {
                path: _PLACEHOLDERS.get(path.rpartition("/")[2], data)
                for path, data in config_drive_files(_TEMPLATE_META).items()
            }
            image = _build_image(files)
            found: dict[str, tuple[int, ...]] = {}
            for name, placeholder in _PLACEHOLDERS.items():
                offsets = []
                start = image.find(placeholder)
                while start != -1:
                    offsets.append(start)
                    start = image.find(placeholder, start + len(placeholder))
                if len(offsets) != len(METADATA_VERSIONS):
                    raise ConfigDriveError(
                        f"config drive template holds {len(offsets)} {name} copies, "
                        f"expected {len(METADATA_VERSIONS)}"
                    )
                found[name] = tuple(offsets)
            _template = (image, found)
        return _template


def _build_image(files: Mapping[str, bytes]) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=3,
        vol_ident=CONFIG_DRIVE_LABEL,
        joliet=3,
        rock_ridge="1.09",
        app_ident_str="wattvisor",
    )
    names = _IsoNames()
    made: set[str] = set()
    for rel_path, data in files.items():
        parts = rel_path.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory in made:
                continue
            iso.add_directory(
                names.iso_path(directory, is_dir=True),
                rr_name=parts[depth - 1],
                joliet_path="/" + directory,
            )
            made.add(directory)
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            names.iso_path(rel_path, is_dir=False),
            rr_name=parts[-1],
            joliet_path="/" + rel_path,
        )
    out = io.BytesIO()
    try:
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


class _IsoNames:
    """Plain ISO 9660 names (upper case, d-characters, unique per directory) for each path.

    Readers that honour Rock Ridge or Joliet (Linux, cloud-init) never show these.
    """

    def __init__(self) -> None:
        self._by_path: dict[str, str] = {"": ""}
        self._used: dict[str, set[tuple[str, str]]] = {}

    def iso_path(self, rel_path: str, *, is_dir: bool) -> str:
        if rel_path in self._by_path:
            return self._by_path[rel_path]
        parent, _, leaf = rel_path.rpartition("/")
        parent_iso = self.iso_path(parent, is_dir=True) if parent else ""
        used = self._used.setdefault(parent_iso, set())
        base, dot, suffix = leaf.rpartition(".")
        if is_dir or not dot:
            stem, ext = _d_chars(leaf)[:30], ""
        else:
            stem, ext = _d_chars(base)[:26], _d_chars(suffix)[:3]
        candidate, n = stem, 0
        while (candidate, ext) in used:
            n += 1
            candidate = f"{stem[: len(stem) - len(str(n))]}{n}"
        used.add((candidate, ext))
        name = candidate if is_dir else f"{candidate}.{ext};1"
        self._by_path[rel_path] = full = f"{parent_iso}/{name}"
        return full


def _d_chars(text: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", text.upper()) or "_"


# The document of the cached template is replaced in every copy; only its layout matters.
_TEMPLATE_META = ConfigDriveMetadata(
    uuid=str(uuidlib.UUID(int=0)), name="template", project_id="template"
)
