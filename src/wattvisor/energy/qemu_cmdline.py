"""Recognise a QEMU process and read its guest name and UUID from argv.

libvirt starts QEMU as ``qemu-system-<arch>`` (``qemu-kvm`` on RHEL, ``kvm`` on
old Debian) with ``-name guest=NAME,debug-threads=on`` and ``-uuid UUID``. QEMU
option values separate keys with ``,`` and write a literal comma as ``,,``, which
libvirt does for names that contain commas, so a plain split would cut them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

_QEMU_BINARY = re.compile(r"^(qemu-system-[A-Za-z0-9_.-]+|qemu-kvm|kvm)$")


@dataclass(frozen=True, slots=True)
class QemuIdentity:
    """What argv says about the guest a QEMU process runs."""

    name: str | None
    uuid: str | None


def split_qemu_opts(value: str) -> list[str]:
    """Split a QEMU option string on single commas; ``,,`` stands for a literal comma."""
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == ",":
            if index + 1 < len(value) and value[index + 1] == ",":
                current.append(",")
                index += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _name_from_opts(value: str) -> str | None:
    for position, part in enumerate(split_qemu_opts(value)):
        if part.startswith("guest="):
            return part[len("guest=") :]
        if position == 0 and "=" not in part and part:
            return part
    return None


def is_qemu_argv(argv: Sequence[str]) -> bool:
    """Whether argv[0] is a QEMU system emulator binary."""
    return bool(argv) and bool(_QEMU_BINARY.match(os.path.basename(argv[0])))


def parse_qemu_argv(argv: Sequence[str]) -> QemuIdentity | None:
    """The guest's name and UUID, or ``None`` when argv is not QEMU's."""
    if not is_qemu_argv(argv):
        return None
    name: str | None = None
    uuid: str | None = None
    for index, arg in enumerate(argv):
        following = argv[index + 1] if index + 1 < len(argv) else None
        if arg in ("-name", "--name") and following is not None and name is None:
            name = _name_from_opts(following)
        elif arg.startswith(("-name=", "--name=")) and name is None:
            name = _name_from_opts(arg.split("=", 1)[1])
        elif arg in ("-uuid", "--uuid") and following is not None:
            uuid = following.lower()
    return QemuIdentity(name=name, uuid=uuid)
