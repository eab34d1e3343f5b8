"""A minimal ISO9660 (ECMA-119) image writer, just enough to hand a guest a cdrom in tests.

No ISO tool ships on the test hosts and the guest only needs to mount the disc
and read a file, so this writes the plain standard: a primary volume
descriptor, both path tables and one sector per directory. Names are kept as
given (lower case included); Linux's isofs shows them with the ``;1`` version
suffix stripped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SECTOR = 2048
_FIRST_FREE = 20  # 0-15 system area, 16 PVD, 17 terminator, 18-19 path tables


def _both16(value: int) -> bytes:
    return struct.pack("<H", value) + struct.pack(">H", value)


def _both32(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def _sectors(size: int) -> int:
    return max(1, -(-size // SECTOR))


@dataclass
class _Dir:
    name: bytes
    parent: _Dir | None
    dirs: dict[str, _Dir] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    sector: int = 0
    number: int = 0


def _record(name: bytes, sector: int, size: int, is_dir: bool) -> bytes:
    body = (
        bytes([0])
        + _both32(sector)
        + _both32(size)
        + bytes([125, 1, 1, 0, 0, 0, 0])  # 2025-01-01 00:00:00 UTC: fixed for reproducible images
        + bytes([2 if is_dir else 0, 0, 0])
        + _both16(1)
        + bytes([len(name)])
        + name
    )
    # The length byte counts the padding that keeps every record at an even size.
    padding = b"\0" if (len(body) + 1) % 2 else b""
    return bytes([len(body) + 1 + len(padding)]) + body + padding


def iso9660_image(files: dict[str, bytes], volume_id: str = "CDROM") -> bytes:
    """An ISO image holding ``files`` (``"dir/sub/name" -> content``)."""
    root = _Dir(b"\0", None)
    for path, data in files.items():
        *parents, leaf = path.split("/")
        node = root
        for part in parents:
            node = node.dirs.setdefault(part, _Dir(part.encode(), node))
        node.files[leaf] = data
    ordered = [root]  # breadth first: the order the path tables want
    for node in ordered:
        ordered.extend(node.dirs[name] for name in sorted(node.dirs))
    sector = _FIRST_FREE
    for number, node in enumerate(ordered, start=1):
        node.number, node.sector = number, sector
        sector += 1
    file_sectors: dict[tuple[int, str], int] = {}
    for node in ordered:
        for name in sorted(node.files):
            file_sectors[(node.number, name)] = sector
            sector += _sectors(len(node.files[name]))
    total = sector
    image = bytearray(total * SECTOR)

    def put(at_sector: int, data: bytes) -> None:
        image[at_sector * SECTOR : at_sector * SECTOR + len(data)] = data

    for node in ordered:
        parent = node.parent or node
        entries = [
            _record(b"\0", node.sector, SECTOR, True),
            _record(b"\1", parent.sector, SECTOR, True),
        ]
        children = sorted([*node.dirs, *node.files])
        for name in children:
            if name in node.dirs:
                entries.append(_record(name.encode(), node.dirs[name].sector, SECTOR, True))
            else:
                data = node.files[name]
                at = file_sectors[(node.number, name)]
                entries.append(_record(f"{name};1".encode(), at, len(data), False))
                put(at, data)
        listing = b"".join(entries)
        if len(listing) > SECTOR:
            raise ValueError(f"directory {node.name!r} holds too many entries for one sector")
        put(node.sector, listing)

    def path_table(endian: str) -> bytes:
        out = b""
        for node in ordered:
            name = node.name
            parent = node.parent.number if node.parent else 1
            out += bytes([len(name), 0]) + struct.pack(f"{endian}IH", node.sector, parent) + name
            out += b"\0" if len(name) % 2 else b""
        return out

    l_table, m_table = path_table("<"), path_table(">")
    if len(l_table) > SECTOR:
        raise ValueError("too many directories for a one-sector path table")
    put(18, l_table)
    put(19, m_table)
    pvd = (
        bytes([1]) + b"CD001" + bytes([1, 0])
        + b" " * 32
        + volume_id.encode().ljust(32)[:32]
        + bytes(8)
        + _both32(total)
        + bytes(32)
        + _both16(1) + _both16(1) + _both16(SECTOR)
        + _both32(len(l_table))
        + struct.pack("<I", 18) + bytes(4) + struct.pack(">I", 19) + bytes(4)
        + _record(b"\0", root.sector, SECTOR, True)
        + b" " * (128 * 4 + 37 * 3)
        + (b"0" * 16 + b"\0") * 4
        + bytes([1, 0])
    )
    put(16, pvd)
    put(17, bytes([255]) + b"CD001" + bytes([1]))
    return bytes(image)
