"""The ``<domain>`` element: build a guest, or parse one and change it losslessly."""

from __future__ import annotations

import math
import re
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Self, TypeVar, overload

from lxml import etree

from wattvisor.guest.aliases import validate_alias
from wattvisor.guest.devices import (
    Device,
    Disk,
    Interface,
    device_alias,
    device_from_element,
)
from wattvisor.guest.errors import DuplicateAliasError, GuestXMLError, NotADomainError
from wattvisor.guest.metadata import METADATA_NS, InstanceMetadata
from wattvisor.guest.xmlmodel import (
    AttrListProperty,
    Buildable,
    ChildProperty,
    Element,
    ElementPath,
    FlagProperty,
    IntProperty,
    Nodes,
    Ranks,
    StrProperty,
    ValueProperty,
    XMLObject,
    YesNoProperty,
    built_node,
    insert_child,
    parse_xml,
    remove_child,
    replace_child,
)

D = TypeVar("D", bound=Device)

# libvirt's scaled-integer units (virScaleInteger), as multiples of one byte.
_UNIT_RE = re.compile(r"(?i)(b|bytes|[kmgtpe](?:b|ib)?)")


def _unit_bytes(unit: str) -> int:
    if not _UNIT_RE.fullmatch(unit):
        raise GuestXMLError(
            f"memory unit {unit!r} is not accepted; use b, KiB, MiB, GiB, TiB, KB, MB, GB..."
        )
    lower = unit.lower()
    if lower in ("b", "bytes"):
        return 1
    power = "kmgtpe".index(lower[0]) + 1
    base = 1000 if lower[1:] == "b" else 1024
    return int(base**power)


class MemoryProperty(ValueProperty[int]):
    """A memory size in KiB, read in whatever ``unit`` the XML states, written in KiB."""

    def parse(self, raw: str) -> int:
        raise NotImplementedError  # read() handles the unit

    def format(self, value: int) -> str:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GuestXMLError(f"{self.name} must be a non-negative integer (KiB), not {value!r}")
        return str(value)

    def read(self, elem: Element) -> int | None:
        node = self.path.find(elem)
        if node is None:
            return None
        text = (node.text or "").strip()
        if not text.isdigit():
            raise GuestXMLError(f"<{node.tag}> is {text!r}, which is not a whole number")
        return math.ceil(int(text) * _unit_bytes(node.get("unit", "KiB")) / 1024)

    def write(self, elem: Element, value: int | None, ranks: Ranks) -> None:
        super().write(elem, value, ranks)
        if value is not None:
            node = self.path.find(elem)
            assert node is not None
            node.set("unit", "KiB")

    def build(self, nodes: Nodes, value: Any) -> None:
        super().build(nodes, value)
        built_node(nodes, self.path.steps).set("unit", "KiB")


class Features(XMLObject):
    """``<features>``: hypervisor features; the simple ones as flags."""

    __slots__ = ()
    TAG = "features"
    ORDER: ClassVar = {
        "features": (
            "pae", "acpi", "apic", "hap", "viridian", "privnet", "hyperv", "kvm", "xen",
            "pvspinlock", "pmu", "vmport", "gic", "smm", "ioapic", "hpt", "vmcoreinfo", "htm",
            "nested-hv", "msrs", "ccf-assist", "cfpc", "sbbc", "ibs", "tcg",
        ),
        "hyperv": (
            "relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer", "reset",
            "vendor_id", "frequencies", "reenlightenment", "tlbflush", "ipi", "evmcs", "avic",
            "emsr_bitmap", "xmm_input",
        ),
    }  # fmt: skip

    acpi = FlagProperty("./acpi")
    apic = FlagProperty("./apic")
    pae = FlagProperty("./pae")
    smm = FlagProperty("./smm")
    # Hyper-V enlightenments Windows guests use (Nova turns these on for os_type=windows).
    hyperv_relaxed = YesNoProperty("./hyperv/relaxed/@state", true="on", false="off")
    hyperv_vapic = YesNoProperty("./hyperv/vapic/@state", true="on", false="off")
    hyperv_spinlocks = YesNoProperty("./hyperv/spinlocks/@state", true="on", false="off")
    hyperv_spinlock_retries = IntProperty("./hyperv/spinlocks/@retries")
    vmcoreinfo = FlagProperty("./vmcoreinfo")

    def __init__(self, names: Sequence[str] = ("acpi", "apic")) -> None:
        """Flag features by element name, e.g. ``Features(("acpi", "apic"))``."""
        super().__init__()
        for name in names:
            if not re.fullmatch(r"[A-Za-z][\w-]*", name):
                raise GuestXMLError(f"feature name {name!r} is not an element name")
            insert_child(self._elem, self._elem.makeelement(name), self._ranks)

    @property
    def names(self) -> list[str]:
        """Every feature element present, in document order."""
        return [str(c.tag) for c in self._elem.iterchildren() if isinstance(c.tag, str)]


class MemoryBacking(XMLObject):
    """``<memoryBacking>``: how guest RAM is backed; virtiofs needs it shared."""

    __slots__ = ()
    TAG = "memoryBacking"
    ORDER: ClassVar = {
        "memoryBacking": (
            "hugepages", "nosharepages", "locked", "source", "access", "allocation", "discard",
        ),
    }  # fmt: skip

    hugepages = FlagProperty("./hugepages")
    source_type = StrProperty("./source/@type")
    access_mode = StrProperty("./access/@mode")

    def __init__(
        self,
        *,
        source_type: str | None = "memfd",
        access_mode: str | None = "shared",
        hugepages: bool = False,
    ) -> None:
        """Defaults to memfd-backed shared memory, what virtiofs needs without hugepages."""
        super().__init__()
        if hugepages:
            self.hugepages = True
        self._set(source_type=source_type, access_mode=access_mode)


class MetadataProperty(Buildable):
    """``<metadata><wattvisor:instance>``: wattvisor's instance metadata, or None.

    Assigning replaces only that element; other applications' metadata stays.
    """

    def __init__(self) -> None:
        self.name = "instance_metadata"
        self.path = ElementPath("./metadata")
        self._tag = f"{{{METADATA_NS}}}instance"

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: XMLObject, owner: type) -> InstanceMetadata | None: ...
    def __get__(self, obj: XMLObject | None, owner: type) -> Self | InstanceMetadata | None:
        if obj is None:
            return self
        node = self._find(obj.element)
        return None if node is None else InstanceMetadata.from_element(node)

    def _find(self, elem: Element) -> Element | None:
        metadata = next(elem.iterchildren("metadata"), None)
        return None if metadata is None else next(metadata.iterchildren(self._tag), None)

    def __set__(self, obj: XMLObject, value: InstanceMetadata | None) -> None:
        elem = obj.element
        current = self._find(elem)
        if value is None:
            if current is not None:
                remove_child(current)
            return
        new = value.to_element()  # built first: a bad value changes nothing
        if current is not None:
            replace_child(current, new)
            return
        metadata = self.path.ensure(elem, obj._ranks)
        insert_child(metadata, new, obj._ranks)

    def build(self, nodes: Nodes, value: Any) -> None:
        built_node(nodes, self.path.steps).append(value.to_element())


_DOMAIN_ORDER = (
    "name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory",
    "currentMemory", "blkiotune", "memtune", "memoryBacking", "vcpu", "vcpus", "iothreads",
    "iothreadids", "defaultiothread", "cputune", "numatune", "resource", "sysinfo",
    "bootloader", "bootloader_args", "os", "idmap", "features", "cpu", "clock",
    "on_poweroff", "on_reboot", "on_crash", "on_lockfailure", "pm", "perf", "devices",
    "seclabel", "keywrap", "launchSecurity",
)  # fmt: skip
_DEVICES_ORDER = (
    "emulator", "disk", "controller", "lease", "filesystem", "interface", "smartcard",
    "serial", "parallel", "console", "channel", "input", "tpm", "graphics", "sound", "audio",
    "video", "hostdev", "redirdev", "redirfilter", "hub", "watchdog", "memballoon", "rng",
    "panic", "shmem", "memory", "iommu", "vsock", "crypto",
)  # fmt: skip


class DeviceList(Sequence[Device]):
    """Live view of a domain's devices (every ``<devices>`` child but ``<emulator>``)."""

    __slots__ = ("_domain",)

    def __init__(self, domain: Domain) -> None:
        self._domain = domain

    def _elements(self) -> list[Element]:
        devices = next(self._domain.element.iterchildren("devices"), None)
        if devices is None:
            return []
        return [c for c in devices.iterchildren() if isinstance(c.tag, str) and c.tag != "emulator"]

    def __len__(self) -> int:
        return len(self._elements())

    @overload
    def __getitem__(self, index: int) -> Device: ...
    @overload
    def __getitem__(self, index: slice) -> list[Device]: ...
    def __getitem__(self, index: int | slice) -> Device | list[Device]:
        if isinstance(index, slice):
            return [device_from_element(e) for e in self._elements()[index]]
        return device_from_element(self._elements()[index])

    def __iter__(self) -> Iterator[Device]:
        return (device_from_element(e) for e in self._elements())

    def append(self, device: Device) -> Device:
        """Same as ``Domain.add_device``."""
        return self._domain.add_device(device)

    def remove(self, device: Device | str) -> Device:
        """Same as ``Domain.remove_device``."""
        return self._domain.remove_device(device)

    def of_type(self, cls: type[D]) -> list[D]:
        """The devices of one class, e.g. ``domain.devices.of_type(Disk)``."""
        return [d for d in self if isinstance(d, cls)]


class Domain(XMLObject):
    """A libvirt domain: either built here (``Domain(name=..., ...)``) or parsed
    (``Domain.parse(xml)``). Properties read and write the XML tree; what the model
    does not declare stays exactly as it was.
    """

    __slots__ = ("_built",)
    TAG = "domain"
    ORDER: ClassVar = {
        "domain": _DOMAIN_ORDER,
        "devices": _DEVICES_ORDER,
        "os": (
            "type", "firmware", "loader", "nvram", "kernel", "initrd", "cmdline", "dtb", "root",
            "acpi", "boot", "bootmenu", "smbios", "bios",
        ),
        "cpu": ("model", "vendor", "topology", "cache", "maxphysaddr", "feature", "numa"),
    }  # fmt: skip

    virt_type = StrProperty("@type")
    name = StrProperty("./name")
    uuid = StrProperty("./uuid")
    title = StrProperty("./title")
    description = StrProperty("./description")
    memory_kib = MemoryProperty("./memory")
    current_memory_kib = MemoryProperty("./currentMemory")
    memory_backing = ChildProperty(MemoryBacking, "./memoryBacking")
    vcpus = IntProperty("./vcpu")
    os_type = StrProperty("./os/type")
    arch = StrProperty("./os/type/@arch")
    machine = StrProperty("./os/type/@machine")
    firmware = StrProperty("./os/@firmware")
    loader = StrProperty("./os/loader")
    loader_type = StrProperty("./os/loader/@type")
    loader_readonly = YesNoProperty("./os/loader/@readonly")
    loader_secure = YesNoProperty("./os/loader/@secure")
    nvram = StrProperty("./os/nvram")
    kernel = StrProperty("./os/kernel")
    initrd = StrProperty("./os/initrd")
    cmdline = StrProperty("./os/cmdline")
    boot_devs = AttrListProperty("./os/boot", "dev", choices=("hd", "cdrom", "network", "fd"))
    features = ChildProperty(Features, "./features")
    cpu_mode = StrProperty("./cpu/@mode")
    cpu_model = StrProperty("./cpu/model")
    clock_offset = StrProperty("./clock/@offset")
    on_poweroff = StrProperty("./on_poweroff")
    on_reboot = StrProperty("./on_reboot")
    on_crash = StrProperty("./on_crash")
    emulator = StrProperty("./devices/emulator")
    instance_metadata = MetadataProperty()

    def __init__(
        self,
        *,
        name: str,
        memory_mib: int,
        uuid: str | uuidlib.UUID | None = None,
        vcpus: int = 1,
        virt_type: str = "kvm",
        title: str | None = None,
        description: str | None = None,
        current_memory_mib: int | None = None,
        os_type: str = "hvm",
        arch: str | None = "x86_64",
        machine: str | None = None,
        kernel: str | None = None,
        initrd: str | None = None,
        cmdline: str | None = None,
        boot_devs: Sequence[str] = (),
        features: Sequence[str] = ("acpi", "apic"),
        cpu_mode: str | None = None,
        clock_offset: str | None = "utc",
        on_poweroff: str | None = "destroy",
        on_reboot: str | None = "restart",
        on_crash: str | None = "destroy",
        emulator: str | None = None,
        memory_backing: MemoryBacking | None = None,
        instance_metadata: InstanceMetadata | None = None,
        devices: Sequence[Device] = (),
    ) -> None:
        """Build a complete guest. ``uuid`` defaults to a random one; give the instance's.

        Direct kernel boot: pass ``kernel`` (and ``initrd``/``cmdline``); disk boot:
        ``boot_devs=("hd",)``.
        """
        super().__init__()
        self._built = True
        if isinstance(memory_mib, bool) or not isinstance(memory_mib, int) or memory_mib <= 0:
            raise GuestXMLError(f"memory_mib must be a positive integer, not {memory_mib!r}")
        if current_memory_mib is None:
            current_memory_mib = memory_mib
        self._set(
            virt_type=virt_type, name=name, uuid=str(uuid or uuidlib.uuid4()), title=title,
            description=description, memory_kib=memory_mib * 1024,
            current_memory_kib=current_memory_mib * 1024, vcpus=vcpus, os_type=os_type,
            arch=arch, machine=machine, kernel=kernel, initrd=initrd, cmdline=cmdline,
            cpu_mode=cpu_mode, clock_offset=clock_offset, on_poweroff=on_poweroff,
            on_reboot=on_reboot, on_crash=on_crash, emulator=emulator,
            memory_backing=memory_backing, instance_metadata=instance_metadata,
            boot_devs=list(boot_devs), features=Features(features) if features else None,
        )  # fmt: skip
        for device in devices:
            self.add_device(device)

    @classmethod
    def parse(cls, xml: str | bytes) -> Self:
        """Parse domain XML safely; raises ``MalformedXMLError`` or ``NotADomainError``."""
        root = parse_xml(xml, "domain XML")
        if root.tag != "domain":
            raise NotADomainError(
                f"root element is <{root.tag}>, but domain XML must have <domain> as its root"
            )
        domain = cls.wrap(root)
        domain._built = False
        return domain

    def to_xml(self, pretty: bool | None = None) -> str:
        """The whole document as text, exactly as parsed apart from what was changed.

        ``pretty`` indents elements without surrounding whitespace; by default only
        domains built here are indented (a parsed document keeps its own layout).
        """
        if pretty is None:
            pretty = getattr(self, "_built", False)
        return etree.tostring(self._elem.getroottree(), encoding="unicode", pretty_print=pretty)

    # -- memory in MiB, the unit callers think in ------------------------------
    @property
    def memory_mib(self) -> int | None:
        kib = self.memory_kib
        return None if kib is None else kib // 1024

    @memory_mib.setter
    def memory_mib(self, value: int) -> None:
        self.memory_kib = value * 1024

    # -- devices -----------------------------------------------------------------
    @property
    def devices(self) -> DeviceList:
        return DeviceList(self)

    def _devices_element(self, create: bool) -> Element | None:
        node = next(self._elem.iterchildren("devices"), None)
        if node is None and create:
            node = insert_child(self._elem, self._elem.makeelement("devices"), self._ranks)
        return node

    def aliases(self) -> dict[str, Device]:
        """Every device alias in the domain, mapped to its device."""
        devices = self._devices_element(create=False)
        if devices is None:
            return {}
        found: dict[str, Device] = {}
        for element in devices.iterchildren():
            if isinstance(element.tag, str) and (alias := device_alias(element)) is not None:
                found.setdefault(alias, device_from_element(element))
        return found

    def _alias_in_use(self, alias: str) -> bool:
        devices = self._devices_element(create=False)
        return devices is not None and any(
            isinstance(e.tag, str) and device_alias(e) == alias for e in devices.iterchildren()
        )

    def add_device(self, device: D) -> D:
        """Add ``device`` at libvirt's place for its kind; its alias must be a free ``ua-``.

        Raises ``InvalidAliasError``/``DuplicateAliasError`` and changes nothing when
        the alias is not acceptable.
        """
        element = device.element
        if element.getparent() is not None:
            raise GuestXMLError(f"this <{element.tag}> already belongs to a domain; pass a new one")
        alias = device.alias
        if alias is not None:
            validate_alias(alias)
            if self._alias_in_use(alias):
                raise DuplicateAliasError(
                    f"device alias {alias!r} is already used in domain {self.name!r}; "
                    "aliases must be unique within a domain"
                )
        devices = self._devices_element(create=True)
        assert devices is not None
        insert_child(devices, element, self._ranks)
        return device

    def remove_device(self, device: Device | str) -> Device:
        """Remove a device of this domain, given as object or alias; returns it detached."""
        if isinstance(device, str):
            found = self.find_device(alias=device)
            if found is None:
                raise GuestXMLError(f"domain {self.name!r} has no device with alias {device!r}")
            device = found
        element = device.element
        devices = self._devices_element(create=False)
        if devices is None or element.getparent() is not devices:
            raise GuestXMLError(
                f"the <{element.tag}> given is not a device of domain {self.name!r}"
            )
        remove_child(element)
        element.tail = None
        return device

    def find_device(
        self,
        *,
        alias: str | None = None,
        serial: str | None = None,
        target_dev: str | None = None,
        mac: str | None = None,
    ) -> Device | None:
        """Find a device by alias first; for XML written before aliases, fall back to a
        disk's ``<serial>``, then a disk's target dev, then an interface's MAC."""
        devices = list(self.devices)
        if alias is not None:
            for dev in devices:
                if dev.alias == alias:
                    return dev
        disks = [d for d in devices if isinstance(d, Disk)]
        if serial is not None:
            for disk in disks:
                if disk.serial == serial:
                    return disk
        if target_dev is not None:
            for disk in disks:
                if disk.target_dev == target_dev:
                    return disk
        if mac is not None:
            for dev in devices:
                if isinstance(dev, Interface) and (dev.mac or "").lower() == mac.lower():
                    return dev
        return None

    def validate(self) -> None:
        """Check the document against libvirt's domain.rng; raises ``SchemaError``."""
        from wattvisor.guest.schema import validate_domain_element

        validate_domain_element(self._elem)
