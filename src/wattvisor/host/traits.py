"""Capability traits of a libvirt host, from what libvirt itself reports.

Disk/cdrom buses, video models, virtiofs and memory backing come from domain
capabilities (``virConnectGetDomainCapabilities``), as Nova's libvirt driver does;
NIC models from a per-virt-type table because libvirt does not report them.
Only names os-traits knows are returned, plus the two CUSTOM_ families for
hypervisor type and VM mode, so a request can never ask for a trait that a host
could not have reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import os_traits
from lxml import etree

# Nova's nova/virt/libvirt/vif.py SUPPORTED_VIF_MODELS, restricted to the
# architectures where the model exists as a device (spapr-vlan is a POWER
# hypervisor NIC, lan9118 an ARM board NIC).
_VIF_MODELS: dict[str, tuple[str, ...]] = {
    "kvm": ("virtio", "ne2k_pci", "pcnet", "rtl8139", "e1000", "e1000e", "spapr-vlan", "vmxnet3"),
    "qemu": (
        "virtio",
        "ne2k_pci",
        "pcnet",
        "rtl8139",
        "e1000",
        "e1000e",
        "lan9118",
        "spapr-vlan",
        "vmxnet3",
    ),
}
_VIF_MODEL_ARCHES: dict[str, tuple[str, ...]] = {
    "spapr-vlan": ("ppc64", "ppc64le"),
    "lan9118": ("armv7l", "aarch64"),
}
# Used only when the driver cannot report domain capabilities (test:///default):
# Nova's blockinfo.SUPPORTED_DEVICE_BUSES for qemu/kvm.
_STATIC_DISK_BUSES = ("virtio", "scsi", "ide", "usb", "fdc", "sata")
_STATIC_VIDEO_MODELS = ("vga", "cirrus", "virtio", "qxl", "bochs", "none")

CUSTOM_HYPERVISOR_PREFIX = "CUSTOM_HYPERVISOR_"
CUSTOM_VM_MODE_PREFIX = "CUSTOM_VM_MODE_"


def trait_name(prefix: str, value: str) -> str:
    """``PREFIX_`` + value upper-cased with ``-`` turned into ``_`` (Nova's rule)."""
    return f"{prefix}_{value.replace('-', '_').upper()}"


@dataclass(frozen=True)
class GuestSupport:
    """One ``<guest>`` entry of the host capabilities: what can run here."""

    arch: str
    os_type: str
    domain_types: tuple[str, ...]


@dataclass(frozen=True)
class HostCapabilities:
    """What the traits are derived from; built from libvirt's XML documents."""

    host_arch: str
    hypervisor_type: str
    guests: tuple[GuestSupport, ...]
    disk_buses: frozenset[str]
    video_models: frozenset[str]
    filesystem_drivers: frozenset[str]
    memory_backing_sources: frozenset[str]
    domain_caps_available: bool
    notes: tuple[str, ...] = field(default=())


def parse_capabilities(caps_xml: str) -> tuple[str, tuple[GuestSupport, ...]]:
    """Host arch and guest support from ``virConnectGetCapabilities`` XML."""
    root = etree.fromstring(caps_xml.encode())
    host_arch = root.findtext("host/cpu/arch") or ""
    guests: list[GuestSupport] = []
    for guest in root.iterfind("guest"):
        arch = guest.find("arch")
        if arch is None:
            continue
        domain_types = tuple(d.get("type", "") for d in arch.iterfind("domain"))
        guests.append(
            GuestSupport(
                arch=arch.get("name", ""),
                os_type=guest.findtext("os_type") or "",
                domain_types=domain_types,
            )
        )
    return host_arch, tuple(guests)


def host_uuid_from_capabilities(caps_xml: str) -> str | None:
    """``<host><uuid>`` of the capabilities document, lower-case, if it has one."""
    root = etree.fromstring(caps_xml.encode())
    value = (root.findtext("host/uuid") or "").strip().lower()
    return value or None


def _enum_values(element: etree._Element | None, name: str) -> set[str]:
    if element is None or element.get("supported") == "no":
        return set()
    return {
        (value.text or "").strip()
        for value in element.iterfind(f"enum[@name='{name}']/value")
        if value.text
    }


@dataclass(frozen=True)
class DomainCapabilities:
    """The parts of ``virConnectGetDomainCapabilities`` that become traits."""

    disk_buses: frozenset[str]
    video_models: frozenset[str]
    filesystem_drivers: frozenset[str]
    memory_backing_sources: frozenset[str]


def parse_domain_capabilities(domcaps_xml: str) -> DomainCapabilities:
    root = etree.fromstring(domcaps_xml.encode())
    devices = root.find("devices")
    disk = devices.find("disk") if devices is not None else None
    video = devices.find("video") if devices is not None else None
    filesystem = devices.find("filesystem") if devices is not None else None
    return DomainCapabilities(
        disk_buses=frozenset(_enum_values(disk, "bus")),
        video_models=frozenset(_enum_values(video, "modelType")),
        filesystem_drivers=frozenset(_enum_values(filesystem, "driverType")),
        memory_backing_sources=frozenset(_enum_values(root.find("memoryBacking"), "sourceType")),
    )


def merge_domain_capabilities(caps: Iterable[DomainCapabilities]) -> DomainCapabilities:
    """Union over machine types and arches, as Nova does for disk buses."""
    caps = list(caps)
    return DomainCapabilities(
        disk_buses=frozenset().union(*(c.disk_buses for c in caps)),
        video_models=frozenset().union(*(c.video_models for c in caps)),
        filesystem_drivers=frozenset().union(*(c.filesystem_drivers for c in caps)),
        memory_backing_sources=frozenset().union(*(c.memory_backing_sources for c in caps)),
    )


def usable_domain_types(virt_type: str) -> tuple[str, ...]:
    """Hypervisor types a host configured for ``virt_type`` can honour.

    A KVM host also runs plain QEMU (TCG) guests; a QEMU host never uses KVM.
    """
    return ("kvm", "qemu") if virt_type == "kvm" else ("qemu",)


def vif_models(virt_type: str, arches: Iterable[str]) -> frozenset[str]:
    """NIC models a ``virt_type`` host can give guests of ``arches`` (libvirt does not
    report them: Nova's per-virt-type table)."""
    wanted = set(arches)
    return frozenset(
        model
        for model in _VIF_MODELS.get(virt_type, ())
        if (allowed := _VIF_MODEL_ARCHES.get(model)) is None or wanted.intersection(allowed)
    )


def compute_traits(
    caps: HostCapabilities,
    virt_type: str,
    *,
    share_local_fs_readonly: bool,
) -> frozenset[str]:
    """All traits the host reports, each a name os-traits knows or one CUSTOM_ family."""
    traits: set[str] = set()
    known = set(os_traits.get_traits())

    def add(name: str) -> None:
        if name in known:
            traits.add(name)

    if caps.host_arch:
        add(trait_name("HW_ARCH", caps.host_arch))

    usable = usable_domain_types(virt_type)
    guest_arches: set[str] = set()
    for guest in caps.guests:
        types = [t for t in guest.domain_types if t in usable]
        if not types:
            continue
        guest_arches.add(guest.arch)
        add(trait_name("COMPUTE_ARCH", guest.arch))
        for domain_type in types:
            traits.add(CUSTOM_HYPERVISOR_PREFIX + domain_type.upper())
        if guest.os_type:
            traits.add(CUSTOM_VM_MODE_PREFIX + guest.os_type.upper().replace("-", "_"))

    for bus in caps.disk_buses:
        add(trait_name("COMPUTE_STORAGE_BUS", bus))
    for model in caps.video_models:
        add(trait_name("COMPUTE_GRAPHICS_MODEL", model))
    for model in vif_models(virt_type, guest_arches or {caps.host_arch}):
        add(trait_name("COMPUTE_NET_VIF_MODEL", model))

    virtiofs = "virtiofs" in caps.filesystem_drivers
    shared_memory = bool({"memfd", "file"} & caps.memory_backing_sources)
    if virtiofs:
        add("COMPUTE_STORAGE_VIRTIO_FS")
    if shared_memory:
        add("COMPUTE_MEM_BACKING_FILE")
    if share_local_fs_readonly and virtiofs and shared_memory:
        add("COMPUTE_SHARE_LOCAL_FS")
    return frozenset(traits)


def static_domain_capabilities() -> DomainCapabilities:
    """What a qemu/kvm host supports when the driver cannot say (test:///default)."""
    return DomainCapabilities(
        disk_buses=frozenset(_STATIC_DISK_BUSES),
        video_models=frozenset(_STATIC_VIDEO_MODELS),
        filesystem_drivers=frozenset(),
        memory_backing_sources=frozenset(),
    )
