"""Hand-written domain XML for booting the tiny guest in tests, and waiting on its console.

Kept deliberately small and literal: tests here prove host behaviour (shares,
daemons, images), so the XML they boot must not depend on the product's own
XML model, which has tests of its own.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import libvirt

from wattvisor.images import GuestImage

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"


def destroy_and_undefine(domain: libvirt.virDomain) -> None:
    """Stop and forget a domain, whatever state it is in (running, defined, transient)."""
    with contextlib.suppress(libvirt.libvirtError):
        if domain.isActive():
            domain.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def unique_domain_name(prefix: str = "wvtest") -> str:
    """A name no other test run uses, so parallel sessions never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class GuestShare:
    """A virtiofs filesystem of the test domain."""

    source_dir: Path
    mount_tag: str
    readonly: bool = False


@dataclass(frozen=True)
class GuestDomainSpec:
    """Everything needed to write the XML of one TCG test guest."""

    name: str
    image: GuestImage
    cmdline: str
    serial_log: Path
    memory_mib: int = 256
    shares: tuple[GuestShare, ...] = field(default_factory=tuple)
    cdrom: Path | None = None
    cdrom_bus: str = "ide"  # "ide" (pc machine) or "scsi" (virtio-scsi)

    def _cdrom_xml(self) -> str:
        if self.cdrom is None:
            return ""
        target = "hdc" if self.cdrom_bus == "ide" else "sda"
        controller = ""
        if self.cdrom_bus == "scsi":
            controller = "\n    <controller type='scsi' model='virtio-scsi'/>"
        return f"""{controller}
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(str(self.cdrom))}/>
      <target dev='{target}' bus='{self.cdrom_bus}'/>
      <readonly/>
    </disk>"""

    def xml(self) -> str:
        filesystems = "".join(
            f"""
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs' queue='1024'/>
      <binary path='{VIRTIOFSD}'/>
      <source dir={quoteattr(str(share.source_dir))}/>
      <target dir={quoteattr(share.mount_tag)}/>{"<readonly/>" if share.readonly else ""}
    </filesystem>"""
            for share in self.shares
        )
        memory_backing = (
            "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"
            if self.shares
            else ""
        )
        return f"""<domain type='qemu'>
  <name>{escape(self.name)}</name>
  <memory unit='MiB'>{self.memory_mib}</memory>
  <vcpu>1</vcpu>
  {memory_backing}
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(self.image.kernel))}</kernel>
    <initrd>{escape(str(self.image.initrd))}</initrd>
    <cmdline>{escape(self.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'>
      <source path={quoteattr(str(self.serial_log))}/>
      <target port='0'/>
    </serial>{filesystems}{self._cdrom_xml()}
    <memballoon model='none'/>
  </devices>
</domain>
"""


class ConsoleTimeout(AssertionError):
    """The guest did not print the awaited marker in time; carries the console so far."""


def read_console(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for_marker(path: Path, marker: str, timeout_s: float = 120.0) -> str:
    """Poll the serial log until a line starting with ``marker`` appears; return that line.

    Polling keeps a healthy run fast while allowing a slow TCG boot on a busy host.
    """
    pattern = re.compile(rf"^{re.escape(marker)}.*$", re.MULTILINE)
    deadline = time.monotonic() + timeout_s
    while True:
        text = read_console(path)
        found = pattern.search(text)
        if found:
            return found.group(0).rstrip("\r")
        if time.monotonic() > deadline:
            tail = "\n".join(text.splitlines()[-40:])
            raise ConsoleTimeout(
                f"no console line starting with {marker!r} within {timeout_s:.0f} s; "
                f"console {path} ends with:\n{tail}"
            )
        time.sleep(0.25)


def marker_fields(line: str) -> dict[str, str]:
    """``key=value`` and ``key=[value with spaces]`` pairs of a ``WV-`` console line."""
    return {
        m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r"(\w[\w.-]*)=(?:\[([^\]]*)\]|(\S*))", line)
    }
