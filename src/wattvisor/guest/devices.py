"""Device elements of a domain (children of ``<devices>``).

Each class declares where its values live; the element order lists follow the
order libvirt itself formats a device in (``virDomain*DefFormat``), so elements the
model creates land where libvirt would put them. Every device has ``alias``, the
``<alias name=.../>`` child wattvisor uses to find it again.
"""

from __future__ import annotations

from typing import ClassVar

from wattvisor.guest.aliases import is_user_alias, validate_alias
from wattvisor.guest.errors import DuplicateAliasError, GuestXMLError, NotADomainError
from wattvisor.guest.xmlmodel import (
    Element,
    FlagProperty,
    IntProperty,
    Ranks,
    StrProperty,
    XMLObject,
    YesNoProperty,
    insert_after,
    parse_xml,
    remove_child,
)

# The children every device shares, in the order libvirt's virDomainDeviceInfoFormat
# writes them (src/conf/domain_conf.c). Each device formatter writes its own elements
# first and these after them; the few elements a formatter writes after the device info
# are listed after DEVICE_INFO in that kind's order below.
DEVICE_INFO = ("boot", "alias", "master", "rom", "acpi", "address")

# Child order per device kind, from libvirt's formatters (virDomainDiskDefFormat,
# virDomainNetDefFormat, virDomainFSDefFormat, virDomainHostdevDefFormat,
# virDomainRedirdevDefFormat, virDomainRNGDefFormat, virDomainShmemDefFormat, ...).
# libxml2 validates domain.rng's <interleave> only when the elements of one group stay
# together, so a child inserted between a device's own elements (an <alias> between
# <source> and <teaming> of a <hostdev>) makes a valid document invalid.
DEVICE_ORDERS: dict[str, tuple[str, ...]] = {
    "disk": (
        "driver", "auth", "source", "backingStore", "backenddomain", "geometry", "blockio",
        "mirror", "target", "iotune", "throttlefilters", "readonly", "shareable",
        "transient", "serial", "wwn", "vendor", "product", "encryption", *DEVICE_INFO,
        "privateData",
    ),
    "interface": (
        "mac", "source", "vlan", "virtualport", "bandwidth", "port", "actual", "ip", "route",
        "portForward", "script", "downscript", "backenddomain", "target", "guest", "model",
        "driver", "backend", "filterref", "tune", "teaming", "link", "mtu", "tapfd",
        "coalesce", *DEVICE_INFO, "privateData",
    ),
    "filesystem": (
        "driver", "binary", "idmap", "source", "target", "readonly", *DEVICE_INFO,
        "space_hard_limit", "space_soft_limit",
    ),
    "hostdev": (
        "driver", "source", "origstates", "teaming", "readonly", "shareable", *DEVICE_INFO,
    ),
    "redirdev": ("source", "protocol", "log", *DEVICE_INFO),
    "rng": ("rate", "backend", "driver", *DEVICE_INFO),
    "shmem": ("model", "size", "server", "msi", *DEVICE_INFO),
    "video": ("driver", "model", *DEVICE_INFO),
    "serial": ("source", "protocol", "log", "target", *DEVICE_INFO),
    "console": ("source", "protocol", "log", "target", *DEVICE_INFO),
    "memballoon": ("stats", *DEVICE_INFO, "driver"),
    "controller": ("model", "driver", "target", "pcihole64", *DEVICE_INFO),
    "channel": ("source", "protocol", "log", "target", *DEVICE_INFO),
    "input": ("driver", "source", *DEVICE_INFO),
    "sound": ("codec", "audio", *DEVICE_INFO, "driver"),
}  # fmt: skip


def _after_alias(kind: str) -> frozenset[str]:
    order = DEVICE_ORDERS.get(kind, DEVICE_INFO)
    return frozenset(order[order.index("alias") + 1 :])


_AFTER_ALIAS: dict[str, frozenset[str]] = {kind: _after_alias(kind) for kind in DEVICE_ORDERS}
_AFTER_ALIAS_ANY = _after_alias("")


def alias_anchor(device: Element) -> Element | None:
    """The child a new ``<alias>`` goes right after (None: it goes first).

    That is the last child libvirt writes before the device info's alias. A child the
    order tables do not know counts as one of the device's own elements, which libvirt
    always writes before the device info, so an alias never splits them.
    """
    after = _AFTER_ALIAS.get(str(device.tag), _AFTER_ALIAS_ANY)
    for child in device.iterchildren(reversed=True):
        if isinstance(child.tag, str) and child.tag not in after:
            return child
    return None


class AliasProperty(StrProperty):
    """``<alias name=.../>``: reads any alias; writes only a free user alias (``ua-``)."""

    _plain_str = False

    def __init__(self) -> None:
        super().__init__("./alias/@name")

    def format(self, value: str) -> str:
        return validate_alias(value)

    def write(self, elem: Element, value: str | None, ranks: Ranks) -> None:
        if value is None:
            node = self.path.find(elem)  # the <alias> element itself
            if node is not None:
                remove_child(node)
            return
        validate_alias(value)
        devices = elem.getparent()
        if devices is not None:
            for other in devices.iterchildren():
                if (
                    other is not elem
                    and isinstance(other.tag, str)
                    and device_alias(other) == value
                ):
                    raise DuplicateAliasError(
                        f"device alias {value!r} is already used by <{other.tag}> in this "
                        "domain; aliases must be unique within a domain"
                    )
        node = self.path.find(elem)
        if node is None:
            node = insert_after(elem, elem.makeelement("alias"), alias_anchor(elem))
        node.set("name", value)


class Device(XMLObject):
    """Any device; the base of the specific classes and the view of unmodelled ones.

    ``alias`` reads any alias, including libvirt's own (``virtio-disk0``); writing
    accepts only user aliases (``ua-...``) and refuses one that another device of
    the same domain already has.
    """

    __slots__ = ()
    TAG = "device"

    @property
    def kind(self) -> str:
        """The element name: ``disk``, ``interface``, ``hostdev``..."""
        return str(self._elem.tag)

    alias = AliasProperty()

    @property
    def user_alias(self) -> str | None:
        """The alias when it is a user alias (``ua-...``); libvirt's own aliases give None."""
        alias = self.alias
        return alias if alias is not None and is_user_alias(alias) else None


def device_alias(element: Element) -> str | None:
    """The alias name of a device element, or None."""
    node = next(element.iterchildren("alias"), None)
    return None if node is None else node.get("name")


class Disk(Device):
    """``<disk>``: a file, block device or network volume seen as disk or cdrom."""

    __slots__ = ()
    TAG = "disk"
    ORDER: ClassVar = {
        "disk": DEVICE_ORDERS["disk"],
        "source": ("host", "snapshot", "config", "auth", "encryption", "reservations"),
    }

    type = StrProperty("@type")
    device = StrProperty("@device")
    driver_name = StrProperty("./driver/@name")
    driver_type = StrProperty("./driver/@type")
    driver_cache = StrProperty("./driver/@cache")
    source_file = StrProperty("./source/@file")
    source_dev = StrProperty("./source/@dev")
    source_protocol = StrProperty("./source/@protocol")
    source_name = StrProperty("./source/@name")
    source_host_name = StrProperty("./source/host/@name")
    source_host_port = IntProperty("./source/host/@port")
    target_dev = StrProperty("./target/@dev")
    bus = StrProperty("./target/@bus")
    readonly = FlagProperty("./readonly")
    serial = StrProperty("./serial")
    boot_order = IntProperty("./boot/@order")

    def __init__(
        self,
        *,
        target_dev: str,
        source_file: str | None = None,
        source_dev: str | None = None,
        source_protocol: str | None = None,
        source_name: str | None = None,
        source_host_name: str | None = None,
        source_host_port: int | None = None,
        bus: str = "virtio",
        device: str = "disk",
        type: str | None = None,
        driver_name: str | None = "qemu",
        driver_type: str | None = None,
        driver_cache: str | None = None,
        serial: str | None = None,
        readonly: bool = False,
        boot_order: int | None = None,
        alias: str | None = None,
    ) -> None:
        """Build a disk; ``type`` defaults from the source given (file, block, network)."""
        super().__init__()
        if type is None:
            type = "network" if source_protocol else "block" if source_dev else "file"
        self._set(
            type=type, device=device, driver_name=driver_name, driver_type=driver_type,
            driver_cache=driver_cache, source_file=source_file, source_dev=source_dev,
            source_protocol=source_protocol, source_name=source_name,
            source_host_name=source_host_name, source_host_port=source_host_port,
            target_dev=target_dev, bus=bus, serial=serial, boot_order=boot_order, alias=alias,
        )  # fmt: skip
        if readonly:
            self.readonly = True


class Interface(Device):
    """``<interface>``: a NIC on a libvirt network, a host bridge or a tap device."""

    __slots__ = ()
    TAG = "interface"
    ORDER: ClassVar = {"interface": DEVICE_ORDERS["interface"]}

    type = StrProperty("@type")
    mac = StrProperty("./mac/@address")
    source_network = StrProperty("./source/@network")
    source_bridge = StrProperty("./source/@bridge")
    source_dev = StrProperty("./source/@dev")
    target_dev = StrProperty("./target/@dev")
    model = StrProperty("./model/@type")
    mtu = IntProperty("./mtu/@size")

    def __init__(
        self,
        *,
        source_network: str | None = None,
        source_bridge: str | None = None,
        type: str | None = None,
        mac: str | None = None,
        model: str | None = "virtio",
        target_dev: str | None = None,
        mtu: int | None = None,
        alias: str | None = None,
    ) -> None:
        """Build a NIC; ``type`` defaults from the source (network, bridge, else ethernet)."""
        super().__init__()
        if type is None:
            type = "network" if source_network else "bridge" if source_bridge else "ethernet"
        self._set(
            type=type, mac=mac, source_network=source_network, source_bridge=source_bridge,
            target_dev=target_dev, model=model, mtu=mtu, alias=alias,
        )  # fmt: skip


class Video(Device):
    """``<video>``: the emulated graphics card."""

    __slots__ = ()
    TAG = "video"
    ORDER: ClassVar = {
        "video": DEVICE_ORDERS["video"],
        "model": ("acceleration", "resolution"),
    }

    model = StrProperty("./model/@type")
    vram = IntProperty("./model/@vram")
    heads = IntProperty("./model/@heads")
    primary = YesNoProperty("./model/@primary")

    def __init__(
        self,
        *,
        model: str = "virtio",
        vram: int | None = None,
        heads: int | None = 1,
        primary: bool | None = None,
        alias: str | None = None,
    ) -> None:
        super().__init__()
        self._set(model=model, vram=vram, heads=heads, primary=primary, alias=alias)


class Filesystem(Device):
    """``<filesystem>``: a host directory shared with the guest (virtiofs or 9p).

    ``target_dir`` is the mount tag the guest mounts (``mount -t virtiofs TAG``);
    ``mount_tag`` is the same value under the name guests know it by.
    """

    __slots__ = ()
    TAG = "filesystem"
    ORDER: ClassVar = {
        "filesystem": DEVICE_ORDERS["filesystem"],
        "binary": ("cache", "sandbox", "lock", "thread_pool", "openfiles"),
    }

    type = StrProperty("@type")
    accessmode = StrProperty("@accessmode")
    driver_type = StrProperty("./driver/@type")
    binary_path = StrProperty("./binary/@path")
    source_dir = StrProperty("./source/@dir")
    target_dir = StrProperty("./target/@dir")
    readonly = FlagProperty("./readonly")

    def __init__(
        self,
        *,
        source_dir: str,
        target_dir: str,
        driver_type: str | None = "virtiofs",
        accessmode: str | None = "passthrough",
        binary_path: str | None = None,
        readonly: bool = False,
        type: str = "mount",
        alias: str | None = None,
    ) -> None:
        """Build a share. libvirt < 11 refuses ``readonly`` on virtiofs: make the source
        a read-only bind mount instead."""
        super().__init__()
        self._set(
            type=type, accessmode=accessmode, driver_type=driver_type, binary_path=binary_path,
            source_dir=source_dir, target_dir=target_dir, alias=alias,
        )  # fmt: skip
        if readonly:
            self.readonly = True

    @property
    def mount_tag(self) -> str | None:
        return self.target_dir

    @mount_tag.setter
    def mount_tag(self, value: str | None) -> None:
        self.target_dir = value


class _CharDevice(Device):
    """Common shape of ``<serial>`` and ``<console>``: a pty or a file on the host."""

    __slots__ = ()
    ORDER: ClassVar = {"serial": DEVICE_ORDERS["serial"], "console": DEVICE_ORDERS["console"]}

    type = StrProperty("@type")
    source_path = StrProperty("./source/@path")
    source_append = YesNoProperty("./source/@append", true="on", false="off")
    log_file = StrProperty("./log/@file")
    target_type = StrProperty("./target/@type")
    target_port = IntProperty("./target/@port")

    def __init__(
        self,
        *,
        type: str = "pty",
        source_path: str | None = None,
        target_type: str | None = None,
        target_port: int | None = 0,
        log_file: str | None = None,
        alias: str | None = None,
    ) -> None:
        super().__init__()
        if type == "file" and not source_path:
            raise GuestXMLError(
                f"a <{self.TAG} type='file'> needs source_path, got {source_path!r}"
            )
        self._set(
            type=type, source_path=source_path, log_file=log_file, target_type=target_type,
            target_port=target_port, alias=alias,
        )  # fmt: skip


class Serial(_CharDevice):
    """``<serial>``: the guest's serial port; ``type='file'`` logs it to ``source_path``."""

    __slots__ = ()
    TAG = "serial"


class Console(_CharDevice):
    """``<console>``: the guest console, usually on top of the first serial port."""

    __slots__ = ()
    TAG = "console"


class Channel(_CharDevice):
    """``<channel>``: a host-guest byte stream, e.g. the QEMU guest agent's virtio port."""

    __slots__ = ()
    TAG = "channel"
    ORDER: ClassVar = {"channel": DEVICE_ORDERS["channel"]}

    target_name = StrProperty("./target/@name")

    def __init__(
        self,
        *,
        type: str = "unix",
        target_type: str = "virtio",
        target_name: str | None = None,
        source_path: str | None = None,
        alias: str | None = None,
    ) -> None:
        """A ``unix`` channel without ``source_path`` gets a socket path chosen by libvirt."""
        Device.__init__(self)
        self._set(
            type=type, source_path=source_path, target_type=target_type,
            target_name=target_name, alias=alias,
        )  # fmt: skip


class Controller(Device):
    """``<controller>``: a bus controller (``scsi``, ``usb``, ``pci``, ``sata``...)."""

    __slots__ = ()
    TAG = "controller"
    ORDER: ClassVar = {"controller": DEVICE_ORDERS["controller"]}

    type = StrProperty("@type")
    index = IntProperty("@index")
    model = StrProperty("@model")

    def __init__(
        self,
        *,
        type: str,
        index: int | None = 0,
        model: str | None = None,
        alias: str | None = None,
    ) -> None:
        super().__init__()
        self._set(type=type, index=index, model=model, alias=alias)


class Input(Device):
    """``<input>``: a pointer or keyboard, e.g. the USB tablet of an absolute pointer."""

    __slots__ = ()
    TAG = "input"
    ORDER: ClassVar = {"input": DEVICE_ORDERS["input"]}

    type = StrProperty("@type")
    bus = StrProperty("@bus")

    def __init__(self, *, type: str, bus: str | None = None, alias: str | None = None) -> None:
        super().__init__()
        self._set(type=type, bus=bus, alias=alias)


class Rng(Device):
    """``<rng>``: a random number generator fed from a host source such as /dev/urandom."""

    __slots__ = ()
    TAG = "rng"
    ORDER: ClassVar = {"rng": DEVICE_ORDERS["rng"]}

    model = StrProperty("@model")
    backend_model = StrProperty("./backend/@model")
    backend_path = StrProperty("./backend")
    rate_bytes = IntProperty("./rate/@bytes")
    rate_period = IntProperty("./rate/@period")

    def __init__(
        self,
        *,
        model: str = "virtio",
        backend_model: str = "random",
        backend_path: str | None = "/dev/urandom",
        rate_bytes: int | None = None,
        rate_period: int | None = None,
        alias: str | None = None,
    ) -> None:
        super().__init__()
        self._set(
            model=model, rate_bytes=rate_bytes, rate_period=rate_period,
            backend_model=backend_model, backend_path=backend_path, alias=alias,
        )  # fmt: skip


class Hostdev(Device):
    """``<hostdev>``: a host PCI/USB/SCSI device passed through to the guest."""

    __slots__ = ()
    TAG = "hostdev"
    ORDER: ClassVar = {"hostdev": DEVICE_ORDERS["hostdev"]}

    mode = StrProperty("@mode")
    type = StrProperty("@type")
    managed = YesNoProperty("@managed")


DEVICE_CLASSES: dict[str, type[Device]] = {
    cls.TAG: cls
    for cls in (
        Disk,
        Interface,
        Video,
        Filesystem,
        Serial,
        Console,
        Channel,
        Controller,
        Input,
        Rng,
        Hostdev,
    )
}


def device_from_element(element: Element) -> Device:
    """The model object for a device element (``Device`` for kinds not modelled)."""
    cls = DEVICE_CLASSES.get(str(element.tag), Device)
    return cls.wrap(element)


def parse_device(xml: str | bytes) -> Device:
    """Parse standalone device XML (as given to ``attachDeviceFlags``)."""
    root = parse_xml(xml, "device XML")
    if not isinstance(root.tag, str) or root.tag in ("domain", "devices") or "}" in root.tag:
        raise NotADomainError(f"root element <{root.tag}> is not a device element")
    return device_from_element(root)
