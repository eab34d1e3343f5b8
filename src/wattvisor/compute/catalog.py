"""Flavors and images: what servers are made of, validated when saved.

Flavor extra specs and image properties are checked with the scheduler's own schema
when they are saved, so a typo is reported to whoever made it, not at boot time.
Both are read on every server create, so they are cached in memory, and every change
bumps the store's ``catalog`` generation in the same commit: the cache is used only
while the generation it was read with is still the store's, so a flavor or image
deleted by any process (another controller on the same database, too) is gone at once.
"""

from __future__ import annotations

import os
import threading
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, Table, delete, insert, select, update

from wattvisor.compute.errors import Conflict, InvalidRequest, NotFound
from wattvisor.compute.identifiers import check_flavor_id
from wattvisor.compute.image_files import (
    IMAGE_PARTS,
    FileDigest,
    ImageFileUnavailable,
    ImagePart,
    OpenImageFile,
    VerifiedFiles,
    file_digest,
    image_part_path,
)
from wattvisor.compute.names import quoted, require_printable
from wattvisor.compute.records import FlavorRecord, ImageRecord
from wattvisor.scheduler import InvalidSpec, validate_flavor_extra_specs, validate_image_properties
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import FlavorRow, ImageRow
from wattvisor.store.generations import (
    CATALOG,
    bump_generation,
    current_generation,
    read_generation,
)

_flavors = cast(Table, FlavorRow.__table__)
_images = cast(Table, ImageRow.__table__)
DISK_FORMATS = ("raw", "qcow2")
_T = TypeVar("_T", FlavorRecord, ImageRecord)


def _problems(exc: InvalidSpec) -> list[str]:
    return [str(p) for p in exc.problems]


@dataclass(frozen=True)
class _Snapshot:
    """Every flavor and image as of one catalog generation, in name order."""

    generation: int
    flavors: tuple[FlavorRecord, ...]
    images: tuple[ImageRecord, ...]


class Catalog:
    """Flavors and images, by id or by name."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._verified = VerifiedFiles()

    def _current(self) -> _Snapshot:
        """The catalog as the store holds it now: the cached one while its generation holds."""
        cached = self._snapshot
        if cached is not None and cached.generation == current_generation(self.engine, CATALOG):
            return cached
        with read_transaction(self.engine) as conn:
            # The rows and the generation from one snapshot, so the rows belong to it.
            generation = read_generation(conn, CATALOG)
            flavors = conn.execute(select(_flavors).order_by(_flavors.c.name)).all()
            images = conn.execute(select(_images).order_by(_images.c.name)).all()
        snapshot = _Snapshot(
            generation, tuple(_flavor(r) for r in flavors), tuple(_image(r) for r in images)
        )
        with self._lock:
            if self._snapshot is None or self._snapshot.generation < generation:
                self._snapshot = snapshot
        return snapshot

    # -- flavors -------------------------------------------------------------------------

    def create_flavor(
        self,
        name: str,
        vcpus: int,
        ram_mb: int,
        disk_gb: int = 0,
        *,
        swap_mb: int = 0,
        ephemeral_gb: int = 0,
        extra_specs: Mapping[str, str] | None = None,
        flavor_id: str | None = None,
        exist_ok: bool = False,
    ) -> FlavorRecord:
        specs = {str(k): str(v) for k, v in (extra_specs or {}).items()}
        _check_texts("flavor extra spec", specs)
        require_printable("flavor id", flavor_id)
        try:
            validate_flavor_extra_specs(specs)
        except InvalidSpec as exc:
            raise InvalidRequest(str(exc), problems=_problems(exc)) from exc
        _check_name("flavor", name)
        if flavor_id is not None:
            check_flavor_id(flavor_id)
        for field, value, low in (
            ("vcpus", vcpus, 1), ("ram_mb", ram_mb, 16), ("disk_gb", disk_gb, 0),
            ("swap_mb", swap_mb, 0), ("ephemeral_gb", ephemeral_gb, 0),
        ):  # fmt: skip
            if value < low:
                raise InvalidRequest(
                    f"flavor {field}={value} is not accepted; use >= {low}",
                    field=field,
                    value=value,
                )
        record = FlavorRecord(
            id=flavor_id or str(uuidlib.uuid4()), name=name, vcpus=vcpus, ram_mb=ram_mb,
            disk_gb=disk_gb, swap_mb=swap_mb, ephemeral_gb=ephemeral_gb, extra_specs=specs,
        )  # fmt: skip
        with write_transaction(self.engine) as conn:
            # Flavors are found by id or by name: neither may be another flavor's either.
            same = conn.execute(
                select(_flavors).where(
                    _flavors.c.name.in_((name, record.id)) | _flavors.c.id.in_((name, record.id))
                )
            ).first()
            if same is not None:
                if exist_ok and same.name == name:
                    return _flavor(same)
                raise Conflict(
                    f"flavor {name!r} (id {record.id}) clashes with flavor {same.name!r} "
                    f"(id {same.id}): flavors are found by id or name, so each must be unique",
                    name=name,
                )
            conn.execute(
                insert(_flavors).values(
                    id=record.id, name=name, vcpus=vcpus, ram_mb=ram_mb, disk_gb=disk_gb,
                    swap_mb=swap_mb, ephemeral_gb=ephemeral_gb, extra_specs=specs,
                )
            )  # fmt: skip
            bump_generation(conn, CATALOG)
        return record

    def flavors(self) -> list[FlavorRecord]:
        return list(self._current().flavors)

    def flavor(self, ident: str) -> FlavorRecord:
        """A flavor by id or name."""
        flavors = list(self._current().flavors)
        found = self._find(flavors, ident)
        if found is None:
            names = ", ".join(f.name for f in flavors) or "(none)"
            raise NotFound(f"flavor {quoted(ident)} does not exist; flavors: {names}", flavor=ident)
        return found

    def delete_flavor(self, ident: str) -> None:
        flavor = self.flavor(ident)
        with write_transaction(self.engine) as conn:
            conn.execute(delete(_flavors).where(_flavors.c.id == flavor.id))
            bump_generation(conn, CATALOG)

    # -- images --------------------------------------------------------------------------

    def create_image(
        self,
        name: str,
        *,
        properties: Mapping[str, str] | None = None,
        kernel_path: str | None = None,
        initrd_path: str | None = None,
        cmdline: str | None = None,
        disk_path: str | None = None,
        disk_format: str | None = None,
        image_id: str | None = None,
        exist_ok: bool = False,
    ) -> ImageRecord:
        props = {str(k): str(v) for k, v in (properties or {}).items()}
        _check_texts("image property", props)
        for field, text in (("cmdline", cmdline), ("kernel_path", kernel_path),
                            ("initrd_path", initrd_path), ("disk_path", disk_path)):  # fmt: skip
            require_printable(f"image {field}", text)
        try:
            validate_image_properties(props)
        except InvalidSpec as exc:
            raise InvalidRequest(str(exc), problems=_problems(exc)) from exc
        _check_name("image", name)
        if bool(kernel_path) == bool(disk_path):
            raise InvalidRequest(
                "an image boots either a kernel (kernel_path, optional initrd_path and "
                "cmdline) or a disk (disk_path, disk_format); give exactly one of them",
                kernel_path=kernel_path, disk_path=disk_path,
            )  # fmt: skip
        if disk_path and (disk_format or "raw") not in DISK_FORMATS:
            raise InvalidRequest(
                f"disk_format {disk_format!r} is not accepted; accepted: {', '.join(DISK_FORMATS)}",
                disk_format=disk_format,
            )
        for field, path in (("kernel_path", kernel_path), ("initrd_path", initrd_path),
                            ("disk_path", disk_path)):  # fmt: skip
            if path is None:
                continue
            if not os.path.isabs(path) or not Path(path).is_file():
                raise InvalidRequest(
                    f"{field} {quoted(path)} is not an existing file given by its absolute path",
                    field=field, value=path,
                )  # fmt: skip
        record = ImageRecord(
            id=image_id or str(uuidlib.uuid4()), name=name, properties=props,
            kernel_path=kernel_path, initrd_path=initrd_path if kernel_path else None,
            cmdline=cmdline if kernel_path else None, disk_path=disk_path,
            disk_format=(disk_format or "raw") if disk_path else None,
        )  # fmt: skip
        # Hashed before the write transaction: a large disk takes seconds, and the
        # store must not be held meanwhile.
        record = _with_digests(record, {p: _digest_of(record, p) for p in _parts_of(record)})
        with write_transaction(self.engine) as conn:
            same = conn.execute(
                select(_images).where((_images.c.name == name) | (_images.c.id == record.id))
            ).first()
            if same is not None:
                if exist_ok and same.name == name:
                    return _image(same)
                raise Conflict(f"image {name!r} (or id {record.id}) exists already", name=name)
            conn.execute(
                insert(_images).values(
                    id=record.id, name=name, properties=props, kernel_path=record.kernel_path,
                    initrd_path=record.initrd_path, cmdline=record.cmdline,
                    disk_path=record.disk_path, disk_format=record.disk_format,
                    **_digest_columns(record),
                )
            )  # fmt: skip
            bump_generation(conn, CATALOG)
        return record

    def with_digests(self, image: ImageRecord) -> ImageRecord:
        """``image`` with every file's digest, recording (once) those it was registered
        without: an image from before digests were kept is trusted as its files are on
        first use, and held to that content afterwards. A file that cannot be read keeps
        None (the host then reports it missing, as it did before)."""
        missing = [p for p in _parts_of(image) if _recorded(image, p) is None]
        if not missing:
            return image
        found: dict[ImagePart, FileDigest] = {}
        for part in missing:
            try:
                found[part] = _digest_of(image, part)
            except ImageFileUnavailable:
                continue
        if not found:
            return image
        record = _with_digests(image, found)
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(_images).where(_images.c.id == image.id).values(**_digest_columns(record))
            )
            bump_generation(conn, CATALOG)
        return record

    def open_image_file(self, ident: str, part: ImagePart) -> OpenImageFile:
        """The image's ``part`` file open for streaming, its content checked against the
        digest recorded at registration (:class:`ImageFileChanged` when it differs)."""
        image = self.image(ident)
        path = image_part_path(image.id, part, _paths_of(image))
        image = self.with_digests(image)
        recorded = _recorded(image, part)
        if recorded is None:  # unreadable when the digest was to be recorded
            raise ImageFileUnavailable(
                f"the {part} file {path} of image {image.id} cannot be read",
                image=image.id, part=part,
            )  # fmt: skip
        return self._verified.open(image.id, part, path, recorded)

    def images(self) -> list[ImageRecord]:
        return list(self._current().images)

    def image(self, ident: str) -> ImageRecord:
        """An image by id or name."""
        images = list(self._current().images)
        found = self._find(images, ident)
        if found is None:
            names = ", ".join(i.name for i in images) or "(none)"
            raise NotFound(f"image {quoted(ident)} does not exist; images: {names}", image=ident)
        return found

    def delete_image(self, ident: str) -> None:
        image = self.image(ident)
        with write_transaction(self.engine) as conn:
            conn.execute(delete(_images).where(_images.c.id == image.id))
            bump_generation(conn, CATALOG)

    @staticmethod
    def _find(items: list[_T], ident: str) -> _T | None:
        for item in items:
            if item.id == ident:
                return item
        for item in items:
            if item.name == ident:
                return item
        return None


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise InvalidRequest(f"{kind} name {name!r} must be 1-255 characters", name=name)
    require_printable(f"{kind} name", name)


def _check_texts(kind: str, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        require_printable(f"{kind} key", key)
        require_printable(f"{kind} {key!r}", value)


def _flavor(row: Any) -> FlavorRecord:
    return FlavorRecord(
        id=row.id,
        name=row.name,
        vcpus=row.vcpus,
        ram_mb=row.ram_mb,
        disk_gb=row.disk_gb,
        swap_mb=row.swap_mb,
        ephemeral_gb=row.ephemeral_gb,
        extra_specs=dict(row.extra_specs or {}),
    )


def _image(row: Any) -> ImageRecord:
    return ImageRecord(
        id=row.id,
        name=row.name,
        properties=dict(row.properties or {}),
        kernel_path=row.kernel_path,
        initrd_path=row.initrd_path,
        cmdline=row.cmdline,
        disk_path=row.disk_path,
        disk_format=row.disk_format,
        disk_sha256=row.disk_sha256,
        disk_size=row.disk_size,
        kernel_sha256=row.kernel_sha256,
        kernel_size=row.kernel_size,
        initrd_sha256=row.initrd_sha256,
        initrd_size=row.initrd_size,
    )


def _paths_of(image: ImageRecord) -> dict[ImagePart, str | None]:
    return {"disk": image.disk_path, "kernel": image.kernel_path, "initrd": image.initrd_path}


def _parts_of(image: ImageRecord) -> list[ImagePart]:
    paths = _paths_of(image)
    return [p for p in IMAGE_PARTS if paths[p]]


def _recorded(image: ImageRecord, part: ImagePart) -> FileDigest | None:
    sha256 = getattr(image, f"{part}_sha256")
    size = getattr(image, f"{part}_size")
    return FileDigest(sha256, size) if sha256 is not None and size is not None else None


def _digest_of(image: ImageRecord, part: ImagePart) -> FileDigest:
    path = _paths_of(image)[part] or ""
    try:
        return file_digest(Path(path))
    except OSError as exc:
        raise ImageFileUnavailable(
            f"the {part} file {path} of image {image.name} cannot be read: {exc.strerror}",
            image=image.id, part=part,
        ) from exc  # fmt: skip


def _with_digests(image: ImageRecord, digests: Mapping[ImagePart, FileDigest]) -> ImageRecord:
    changes: dict[str, Any] = {}
    for part, digest in digests.items():
        changes[f"{part}_sha256"] = digest.sha256
        changes[f"{part}_size"] = digest.size
    return replace(image, **changes)


def _digest_columns(image: ImageRecord) -> dict[str, Any]:
    return {
        f"{part}_{what}": getattr(image, f"{part}_{what}")
        for part in IMAGE_PARTS
        for what in ("sha256", "size")
    }
