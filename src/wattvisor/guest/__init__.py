"""The libvirt domain XML model: build, parse, change and check guests' XML.

A model object (``Domain``, ``Disk``, ``Filesystem``...) is a view onto an lxml
element. Each class declares once where each value lives (``source_dir`` is
``./source/@dir``); reading a property reads the tree and writing it writes the
tree, creating missing elements where libvirt itself would put them. Nothing else
is touched, so any domain XML parses and writes back unchanged, including
elements and namespaces the model has never heard of.

Build a guest::

    domain = Domain(name="web-1", uuid=instance_uuid, memory_mib=512, vcpus=1,
                    virt_type="qemu", kernel=k, initrd=i, cmdline="console=ttyS0",
                    memory_backing=MemoryBacking(),            # memfd, shared
                    instance_metadata=meta)
    domain.add_device(Disk(source_file=path, target_dev="vda", driver_type="qcow2",
                           serial=volume_id, alias=make_alias(volume_id)))
    domain.add_device(Filesystem(source_dir=ro_dir, target_dir="scaphandre",
                                 binary_path="/usr/lib/qemu/virtiofsd",
                                 alias=make_alias(share_id)))
    validate_domain_xml(domain.to_xml())

Change one::

    domain = Domain.parse(xml)
    disk = domain.find_device(alias="ua-" + volume_id, serial=volume_id)
    domain.remove_device(disk)

Around it: ``InstanceMetadata`` (wattvisor's ``<metadata>`` child, also usable
with ``virDomainSetMetadata``), ``make_alias``/``validate_alias`` (libvirt's
``ua-`` rule), ``upgrade_domain_xml`` (add missing aliases to existing domains)
and ``validate_domain_xml`` (libvirt's RelaxNG schema). Every error is a
``GuestXMLError``, a ``ValueError``; bad input leaves the model unchanged.
This package never talks to libvirt.
"""

from wattvisor.guest.aliases import (
    ALIAS_PATTERN,
    alias_identifier,
    is_user_alias,
    make_alias,
    validate_alias,
)
from wattvisor.guest.devices import (
    Channel,
    Console,
    Controller,
    Device,
    Disk,
    Filesystem,
    Hostdev,
    Input,
    Interface,
    Rng,
    Serial,
    Video,
    parse_device,
)
from wattvisor.guest.domain import DeviceList, Domain, Features, MemoryBacking
from wattvisor.guest.errors import (
    DuplicateAliasError,
    GuestXMLError,
    InvalidAliasError,
    MalformedXMLError,
    MetadataError,
    NotADomainError,
    SchemaError,
)
from wattvisor.guest.metadata import (
    METADATA_KEY,
    METADATA_NS,
    METADATA_PREFIX,
    FlavorMeta,
    ImageMeta,
    InstanceMetadata,
    OwnerMeta,
    RootMeta,
    ShareMeta,
)
from wattvisor.guest.schema import DOMAIN_RNG, validate_domain_xml
from wattvisor.guest.upgrade import (
    ATTACHABLE_KINDS,
    AliasChange,
    UpgradeResult,
    upgrade_domain,
    upgrade_domain_xml,
)

__all__ = [
    "ALIAS_PATTERN",
    "ATTACHABLE_KINDS",
    "DOMAIN_RNG",
    "METADATA_KEY",
    "METADATA_NS",
    "METADATA_PREFIX",
    "AliasChange",
    "Channel",
    "Console",
    "Controller",
    "Device",
    "DeviceList",
    "Disk",
    "Domain",
    "DuplicateAliasError",
    "Features",
    "Filesystem",
    "FlavorMeta",
    "GuestXMLError",
    "Hostdev",
    "ImageMeta",
    "Input",
    "InstanceMetadata",
    "Interface",
    "InvalidAliasError",
    "MalformedXMLError",
    "MemoryBacking",
    "MetadataError",
    "NotADomainError",
    "OwnerMeta",
    "Rng",
    "RootMeta",
    "SchemaError",
    "Serial",
    "ShareMeta",
    "UpgradeResult",
    "Video",
    "alias_identifier",
    "is_user_alias",
    "make_alias",
    "parse_device",
    "upgrade_domain",
    "upgrade_domain_xml",
    "validate_alias",
    "validate_domain_xml",
]
