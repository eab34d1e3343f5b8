"""Capability traits: parsed from libvirt's documents, only names os-traits knows."""

from __future__ import annotations

import os_traits

from wattvisor.host.traits import (
    GuestSupport,
    HostCapabilities,
    compute_traits,
    parse_capabilities,
    parse_domain_capabilities,
)

CAPS = """<capabilities>
  <host><uuid>x</uuid><cpu><arch>x86_64</arch></cpu></host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'><wordsize>32</wordsize><domain type='qemu'/><domain type='kvm'/></arch>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'><wordsize>64</wordsize><domain type='qemu'/><domain type='kvm'/></arch>
  </guest>
</capabilities>"""

DOMCAPS = """<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path><domain>qemu</domain><arch>x86_64</arch>
  <memoryBacking supported='yes'>
    <enum name='sourceType'><value>file</value><value>anonymous</value><value>memfd</value></enum>
  </memoryBacking>
  <devices>
    <disk supported='yes'>
      <enum name='diskDevice'><value>disk</value><value>cdrom</value></enum>
      <enum name='bus'><value>ide</value><value>fdc</value><value>scsi</value>
        <value>virtio</value><value>usb</value><value>sata</value></enum>
    </disk>
    <video supported='yes'>
      <enum name='modelType'><value>vga</value><value>cirrus</value><value>virtio</value>
        <value>none</value><value>bochs</value><value>ramfb</value></enum>
    </video>
    <filesystem supported='yes'>
      <enum name='driverType'><value>path</value><value>handle</value><value>virtiofs</value></enum>
    </filesystem>
  </devices>
</domainCapabilities>"""


def _caps(**overrides: object) -> HostCapabilities:
    host_arch, guests = parse_capabilities(CAPS)
    dom = parse_domain_capabilities(DOMCAPS)
    values: dict[str, object] = dict(
        host_arch=host_arch,
        hypervisor_type="QEMU",
        guests=guests,
        disk_buses=dom.disk_buses,
        video_models=dom.video_models,
        filesystem_drivers=dom.filesystem_drivers,
        memory_backing_sources=dom.memory_backing_sources,
        domain_caps_available=True,
    )
    values.update(overrides)
    return HostCapabilities(**values)  # type: ignore[arg-type]


def test_domain_capabilities_are_parsed_from_enums() -> None:
    dom = parse_domain_capabilities(DOMCAPS)
    assert dom.disk_buses == {"ide", "fdc", "scsi", "virtio", "usb", "sata"}
    assert "ramfb" in dom.video_models
    assert "virtiofs" in dom.filesystem_drivers
    assert dom.memory_backing_sources == {"file", "anonymous", "memfd"}


def test_unsupported_device_kind_reports_nothing() -> None:
    dom = parse_domain_capabilities(
        DOMCAPS.replace("<filesystem supported='yes'>", "<filesystem supported='no'>")
    )
    assert dom.filesystem_drivers == frozenset()


def test_traits_are_all_known_to_os_traits_or_custom_families() -> None:
    traits = compute_traits(_caps(), "qemu", share_local_fs_readonly=True)
    known = set(os_traits.get_traits())
    for name in traits:
        assert name in known or name.startswith(("CUSTOM_HYPERVISOR_", "CUSTOM_VM_MODE_")), name
    # ramfb has no os-traits name: it must be dropped, not invented.
    assert not any("RAMFB" in t for t in traits)


def test_traits_cover_buses_video_nic_arch_and_share() -> None:
    traits = compute_traits(_caps(), "kvm", share_local_fs_readonly=True)
    for expected in (
        "COMPUTE_STORAGE_BUS_VIRTIO",
        "COMPUTE_STORAGE_BUS_SATA",
        "COMPUTE_STORAGE_BUS_FDC",
        "COMPUTE_GRAPHICS_MODEL_VGA",
        "COMPUTE_GRAPHICS_MODEL_BOCHS",
        "COMPUTE_GRAPHICS_MODEL_NONE",
        "COMPUTE_NET_VIF_MODEL_VIRTIO",
        "COMPUTE_NET_VIF_MODEL_E1000E",
        "COMPUTE_NET_VIF_MODEL_NE2K_PCI",
        "COMPUTE_NET_VIF_MODEL_VMXNET3",
        "HW_ARCH_X86_64",
        "COMPUTE_ARCH_X86_64",
        "CUSTOM_HYPERVISOR_KVM",
        "CUSTOM_HYPERVISOR_QEMU",
        "CUSTOM_VM_MODE_HVM",
        "COMPUTE_STORAGE_VIRTIO_FS",
        "COMPUTE_MEM_BACKING_FILE",
        "COMPUTE_SHARE_LOCAL_FS",
    ):
        assert expected in traits, expected
    # The host lacks qxl and the architectures for spapr-vlan/lan9118.
    assert "COMPUTE_GRAPHICS_MODEL_QXL" not in traits
    assert "COMPUTE_NET_VIF_MODEL_SPAPR_VLAN" not in traits
    assert "COMPUTE_NET_VIF_MODEL_LAN9118" not in traits


def test_qemu_virt_type_never_claims_kvm() -> None:
    traits = compute_traits(_caps(), "qemu", share_local_fs_readonly=False)
    assert "CUSTOM_HYPERVISOR_QEMU" in traits
    assert "CUSTOM_HYPERVISOR_KVM" not in traits


def test_share_trait_needs_readonly_guarantee_virtiofs_and_shared_memory() -> None:
    assert "COMPUTE_SHARE_LOCAL_FS" not in compute_traits(
        _caps(), "kvm", share_local_fs_readonly=False
    )
    no_fs = _caps(filesystem_drivers=frozenset({"path"}))
    assert "COMPUTE_SHARE_LOCAL_FS" not in compute_traits(
        no_fs, "kvm", share_local_fs_readonly=True
    )
    no_memfd = _caps(memory_backing_sources=frozenset({"anonymous"}))
    traits = compute_traits(no_memfd, "kvm", share_local_fs_readonly=True)
    assert "COMPUTE_SHARE_LOCAL_FS" not in traits
    assert "COMPUTE_MEM_BACKING_FILE" not in traits


def test_guest_without_usable_domain_type_adds_no_arch() -> None:
    guests = (GuestSupport(arch="aarch64", os_type="hvm", domain_types=("qemu",)),)
    traits = compute_traits(_caps(guests=guests), "kvm", share_local_fs_readonly=False)
    assert "COMPUTE_ARCH_AARCH64" in traits  # qemu (TCG) is usable on a kvm host
    guests_kvm_only = (GuestSupport(arch="aarch64", os_type="hvm", domain_types=("kvm",)),)
    traits = compute_traits(_caps(guests=guests_kvm_only), "qemu", share_local_fs_readonly=False)
    assert "COMPUTE_ARCH_AARCH64" not in traits
