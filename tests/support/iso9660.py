"""ISO 9660 images for tests that hand a guest a cdrom, written with pycdlib.

Rock Ridge carries the names as given (lower case, any length), which is what a
Linux guest shows; the plain ISO 9660 names underneath are generated placeholders.
"""

from __future__ import annotations

import io

import pycdlib


def iso9660_image(files: dict[str, bytes], volume_id: str = "CDROM") -> bytes:
    """An ISO image holding ``files`` (``"dir/sub/name" -> content``), labelled ``volume_id``."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=volume_id, rock_ridge="1.09")
    iso_paths: dict[str, str] = {"": ""}
    try:
        for number, (path, data) in enumerate(sorted(files.items())):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in iso_paths:
                    parent = iso_paths["/".join(parts[: depth - 1])]
                    iso_paths[directory] = f"{parent}/D{len(iso_paths)}"
                    iso.add_directory(iso_paths[directory], rr_name=parts[depth - 1])
            parent = iso_paths["/".join(parts[:-1])]
            iso.add_fp(io.BytesIO(data), len(data), f"{parent}/F{number}.;1", rr_name=parts[-1])
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()
