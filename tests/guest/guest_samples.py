"""Sample guests, metadata and corpus access shared by the guest model tests."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from wattvisor.guest import (
    Console,
    Disk,
    Domain,
    Filesystem,
    FlavorMeta,
    ImageMeta,
    InstanceMetadata,
    Interface,
    MemoryBacking,
    OwnerMeta,
    RootMeta,
    Serial,
    ShareMeta,
    Video,
    make_alias,
)

# ../shared/corpus next to the repository; WATTVISOR_CORPUS names it for a checkout
# that lives elsewhere (a git worktree).
CORPUS = (
    Path(
        os.environ.get("WATTVISOR_CORPUS")
        or Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
    )
    / "libvirt-9.0-domains"
)
INSTANCE_UUID = "7f0e2c1a-5b8d-4c3e-9a71-0d2f4b6c8e10"
VOLUME_ID = "0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9"
PORT_ID = "9e8d7c6b-5a49-4837-a625-140f2e3d4c5b"
SHARE_ID = "scaphandre-share"

# A domain as defined before wattvisor named devices: no user aliases, one of
# libvirt's own aliases, one user alias, attachable and fixed devices.
LEGACY_XML = f"""<domain type='kvm'>
  <name>legacy</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98a23fa0</uuid>
  <memory unit='KiB'>219136</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <source file='/var/lib/root.img'/>
      <target dev='vda' bus='virtio'/>
      <serial>{VOLUME_ID}</serial>
    </disk>
    <disk type='file' device='disk'>
      <source file='/var/lib/data.img'/>
      <target dev='vdb' bus='virtio'/>
      <alias name='virtio-disk1'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
      <alias name='ua-keep-me'/>
    </disk>
    <controller type='usb' index='0'/>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs'/>
      <source dir='/srv/share'/>
      <target dir='scaphandre'/>
    </filesystem>
    <interface type='network'>
      <mac address='52:54:00:AB:CD:EF'/>
      <source network='default'/>
      <model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x06' slot='0x12' function='0x5'/>
      </source>
    </hostdev>
    <video>
      <model type='virtio'/>
    </video>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""

# Well-formed, but domain.rng rejects it (no such disk device kind).
SCHEMA_INVALID_XML = """<domain type='qemu'>
  <name>x</name>
  <memory>1024</memory>
  <os>
    <type>hvm</type>
  </os>
  <devices>
    <disk type='file' device='floppy-drive'>
      <target dev='vda'/>
    </disk>
  </devices>
</domain>
"""


def c14n(xml: str | bytes) -> bytes:
    """Canonical XML (C14N 1.0, comments kept) of a document, for equality checks."""
    data = xml.encode() if isinstance(xml, str) else xml
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.tostring(etree.fromstring(data, parser).getroottree(), method="c14n")


def corpus_files() -> list[Path]:
    """libvirt's domain XML corpus; its absence is a failure, never a skip."""
    files = sorted(CORPUS.glob("*.xml"))
    assert files, f"libvirt domain corpus missing at {CORPUS.resolve()}"
    return files


def sample_metadata() -> InstanceMetadata:
    return InstanceMetadata(
        package_version="0.1.0",
        display_name="web-1",
        creation_time=datetime(2026, 11, 21, 23, 59, 1, tzinfo=UTC),
        flavor=FlavorMeta(
            name="m1.small",
            id="2",
            memory_mib=512,
            disk_gib=1,
            swap_mib=0,
            ephemeral_gib=0,
            vcpus=1,
            extra_specs={"hw:power_metrics": "true"},
        ),
        image=ImageMeta(uuid="c0ffee00-0000-4000-8000-000000000001", properties={"os": "linux"}),
        owner=OwnerMeta(
            user_uuid="a11ce000-0000-4000-8000-000000000001",
            user_name="alice",
            project_uuid="de300000-0000-4000-8000-000000000001",
            project_name="demo",
        ),
        root=RootMeta(type="image", uuid="c0ffee00-0000-4000-8000-000000000001"),
        shares=(ShareMeta(tag="scaphandre", purpose="power_metrics"),),
    )


def build_guest(metadata: InstanceMetadata | None = None, **overrides: object) -> Domain:
    """The guest the host driver builds: kernel boot, 1 disk, 1 NIC, video, file serial
    console, virtiofs share on memfd shared memory, metadata."""
    params: dict[str, object] = {
        "name": "instance-00000001",
        "uuid": INSTANCE_UUID,
        "memory_mib": 512,
        "vcpus": 1,
        "virt_type": "qemu",
        "kernel": "/var/lib/wattvisor/kernel/vmlinuz",
        "initrd": "/var/lib/wattvisor/kernel/initrd.gz",
        "cmdline": "console=ttyS0 quiet",
        "memory_backing": MemoryBacking(),
        "instance_metadata": metadata,
    }
    params.update(overrides)
    domain = Domain(**params)  # type: ignore[arg-type]
    domain.add_device(
        Disk(
            source_file="/var/lib/wattvisor/instances/1/disk.qcow2",
            target_dev="vda",
            driver_type="qcow2",
            serial=VOLUME_ID,
            alias=make_alias(VOLUME_ID),
        )
    )
    domain.add_device(
        Interface(source_network="default", mac="52:54:00:12:34:56", alias=make_alias(PORT_ID))
    )
    domain.add_device(Video())
    domain.add_device(Serial(type="file", source_path="/var/log/wattvisor/1-console.log"))
    domain.add_device(Console(type="pty", target_type="serial"))
    domain.add_device(
        Filesystem(
            source_dir="/run/wattvisor/shares/1.ro",
            target_dir="scaphandre",
            binary_path="/usr/lib/qemu/virtiofsd",
            alias=make_alias(SHARE_ID),
        )
    )
    return domain
