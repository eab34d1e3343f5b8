"""Image properties shape the guest: Nova's meanings, applied to the domain XML.

A prefilter sends a server to a host that can give e.g. a SATA disk; this module makes
the guest the one that was asked for, and checks (the late check) that the host can
really build it before anything is defined. The names and accepted values live in
``wattvisor.scheduler.image_property_names`` and ``validation``; every applied
property is read here through :func:`guest_shape`.

What each property does (as Nova's libvirt driver):

- ``hw_disk_bus``: bus of the root disk; its target is named for the bus (``vda``,
  ``sda``, ``hda``, ``fda``), as Nova's ``blockinfo`` does.
- ``hw_cdrom_bus``: bus of the config drive cdrom (default: IDE on ``pc``, SATA on
  ``q35``, which has no IDE).
- ``hw_vif_model``: NIC model of every interface (:func:`vif_model_for`).
- ``hw_video_model``: a ``<video>`` of that model (``none``: libvirt's "no video").
- ``hw_machine_type``: the machine type; ``hw_architecture``: the guest arch.
- ``hw_firmware_type=uefi``: ``<os firmware='efi'>`` (libvirt picks OVMF from the
  firmware descriptors); ``os_secure_boot`` (or flavor ``os:secure_boot``)
  ``required`` asks for a secure-boot loader and SMM, ``optional`` gets one when
  the host has it, ``disabled`` asks for one without.
- ``hw_rng_model=virtio``: a virtio RNG fed by /dev/urandom, unless the flavor's
  ``hw_rng:allowed`` is false (refused at server create), rate from
  ``hw_rng:rate_bytes``/``hw_rng:rate_period``.
- ``hw_scsi_model``: a SCSI controller of that model.
- ``hw_qemu_guest_agent``: the ``org.qemu.guest_agent.0`` virtio-serial channel.
- ``hw_pointer_model=usbtablet``: a USB tablet (absolute pointer).
- ``os_type=windows``: the clock in local time, as Windows expects, and Hyper-V
  enlightenments (relaxed, vapic, spinlocks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import libvirt
from lxml import etree

from wattvisor.guest import (
    Channel,
    Controller,
    Disk,
    Domain,
    Input,
    Interface,
    Rng,
    Video,
    make_alias,
)
from wattvisor.host.configdrive import CONFIG_DRIVE_ALIAS
from wattvisor.host.driver import HostDriver, HostError
from wattvisor.host.traits import usable_domain_types, vif_models
from wattvisor.scheduler.validation import (
    RNG_ALLOWED_SPEC,
    SECURE_BOOT_SPEC,
    canonical_value,
    image_property,
    parse_bool,
    property_value,
)

log = logging.getLogger(__name__)

DEFAULT_VIF_MODEL = "virtio"
DEFAULT_DISK_BUS = "virtio"
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
RNG_SOURCE = "/dev/urandom"
WINDOWS_SPINLOCK_RETRIES = 8191  # Nova's value, recommended for certified Windows guests
VIDEO_ALIAS = make_alias("video")
RNG_ALIAS = make_alias("rng")
GUEST_AGENT_ALIAS = make_alias("guest-agent")
POINTER_ALIAS = make_alias("pointer")
SCSI_CONTROLLER_ALIAS = make_alias("scsi-controller")

# Nova's blockinfo.get_dev_prefix_for_disk_bus for the buses a QEMU guest has.
_DEV_PREFIX = {"virtio": "vd", "ide": "hd", "sata": "sd", "scsi": "sd", "usb": "sd", "fdc": "fd"}
# SCSI controller models QEMU emulates, per guest arch family (libvirt's names).
_SCSI_MODELS_X86 = ("lsilogic", "lsisas1068", "lsisas1078", "virtio-scsi", "vmpvscsi")
_SCSI_MODELS = {
    "x86_64": _SCSI_MODELS_X86,
    "i686": _SCSI_MODELS_X86,
    "ppc64": ("ibmvscsi", "virtio-scsi"),
    "ppc64le": ("ibmvscsi", "virtio-scsi"),
}


@dataclass(frozen=True, slots=True)
class GuestShape:
    """What a server's image and flavor ask of its virtual hardware.

    ``asked`` maps each property that was set to ``key=value`` as written, so a
    refusal names what the person wrote.
    """

    disk_bus: str = DEFAULT_DISK_BUS
    cdrom_bus: str | None = None
    vif_model: str = DEFAULT_VIF_MODEL
    video_model: str | None = None
    machine: str | None = None
    arch: str | None = None
    uefi: bool = False
    secure_boot: str | None = None
    rng: bool = False
    rng_rate_bytes: int | None = None
    rng_rate_period: int | None = None
    scsi_model: str | None = None
    guest_agent: bool = False
    usb_tablet: bool = False
    os_type: str | None = None
    asked: Mapping[str, str] = field(default_factory=dict)


def vif_model_for(image_properties: Mapping[str, str]) -> str:
    """The NIC model of a server booted from an image: ``hw_vif_model`` or virtio."""
    found = image_property(image_properties, "hw_vif_model")
    if found is None:
        return DEFAULT_VIF_MODEL
    return canonical_value("hw_vif_model", found[1]) or DEFAULT_VIF_MODEL


def disk_target(bus: str, index: int = 0) -> str:
    """The target dev of the ``index``-th disk on ``bus``: ``vda``, ``sdb``, ``hda``..."""
    return f"{_DEV_PREFIX.get(bus, 'sd')}{chr(ord('a') + index)}"


def _int_spec(extra_specs: Mapping[str, str], key: str) -> int | None:
    raw = extra_specs.get(key)
    if raw is None or not str(raw).strip().isdigit():
        return None
    return int(str(raw).strip()) or None


def guest_shape(
    image_properties: Mapping[str, str], extra_specs: Mapping[str, str] | None = None
) -> GuestShape:
    """Read the applied properties (validated when the image was saved and at server
    create) into a :class:`GuestShape`."""
    extra = extra_specs or {}
    asked: dict[str, str] = {}

    def get(key: str) -> str | None:
        found = image_property(image_properties, key)
        if found is None:
            return None
        asked[key] = f"{found[0]}={found[1]}"
        return property_value(key, found[1])

    def trait_value(key: str) -> str | None:
        raw = get(key)
        return None if raw is None else canonical_value(key, raw) or raw

    disk_bus = trait_value("hw_disk_bus") or DEFAULT_DISK_BUS
    cdrom_bus = trait_value("hw_cdrom_bus")
    vif = trait_value("hw_vif_model") or DEFAULT_VIF_MODEL
    video = trait_value("hw_video_model")
    arch = trait_value("hw_architecture")
    machine = get("hw_machine_type")
    uefi = get("hw_firmware_type") == "uefi"
    image_policy = get("os_secure_boot")
    flavor_policy = extra.get(SECURE_BOOT_SPEC)
    if flavor_policy is not None:
        asked["os_secure_boot"] = f"flavor extra spec {SECURE_BOOT_SPEC}={flavor_policy}"
    policy = str(flavor_policy).strip().lower() if flavor_policy is not None else image_policy
    rng_allowed = parse_bool(str(extra.get(RNG_ALLOWED_SPEC, "true"))) is not False
    rng = get("hw_rng_model") == "virtio" and rng_allowed
    scsi = get("hw_scsi_model")
    agent = get("hw_qemu_guest_agent")
    pointer = get("hw_pointer_model")
    os_type = get("os_type")
    return GuestShape(
        disk_bus=disk_bus, cdrom_bus=cdrom_bus, vif_model=vif, video_model=video,
        machine=machine, arch=arch, uefi=uefi, secure_boot=policy if uefi else None,
        rng=rng, rng_rate_bytes=_int_spec(extra, "hw_rng:rate_bytes"),
        rng_rate_period=_int_spec(extra, "hw_rng:rate_period"), scsi_model=scsi,
        guest_agent=agent is not None and parse_bool(agent) is True,
        usb_tablet=pointer == "usbtablet", os_type=os_type, asked=asked,
    )  # fmt: skip


def default_cdrom_bus(machine: str | None) -> str:
    """IDE where the machine has it (``pc``); SATA on ``q35``, which has none."""
    machine = machine or "pc"
    return "ide" if machine.startswith("pc") and "q35" not in machine else "sata"


def apply_guest_shape(domain: Domain, shape: GuestShape, *, root_disk_alias: str) -> None:
    """Make ``domain`` (as ``build_domain`` made it) the guest ``shape`` asks for.

    Host-independent: :func:`check_host_support` then holds it against the host.
    """
    if shape.machine:
        domain.machine = shape.machine
    if shape.arch:
        domain.arch = shape.arch
    for disk in domain.devices.of_type(Disk):
        if disk.alias == root_disk_alias:
            disk.bus = shape.disk_bus
            disk.target_dev = disk_target(shape.disk_bus)
            if shape.disk_bus == "fdc":
                disk.device = "floppy"
        elif disk.alias == CONFIG_DRIVE_ALIAS:
            bus = shape.cdrom_bus or default_cdrom_bus(domain.machine)
            disk.bus = bus
            # The third unit of the bus, clear of a root disk on the same bus.
            disk.target_dev = disk_target(bus, 2)
    for nic in domain.devices.of_type(Interface):
        nic.model = shape.vif_model
    if shape.scsi_model:
        domain.add_device(
            Controller(type="scsi", index=0, model=shape.scsi_model, alias=SCSI_CONTROLLER_ALIAS)
        )
    if shape.guest_agent:
        domain.add_device(Channel(target_name=GUEST_AGENT_CHANNEL, alias=GUEST_AGENT_ALIAS))
    if shape.usb_tablet:
        domain.add_device(Input(type="tablet", bus="usb", alias=POINTER_ALIAS))
    if shape.video_model:
        none = shape.video_model == "none"
        domain.add_device(
            Video(
                model=shape.video_model, heads=None if none else 1,
                alias=None if none else VIDEO_ALIAS,
            )
        )  # fmt: skip
    if shape.rng:
        domain.add_device(
            Rng(
                backend_path=RNG_SOURCE, rate_bytes=shape.rng_rate_bytes,
                rate_period=shape.rng_rate_period if shape.rng_rate_bytes else None,
                alias=RNG_ALIAS,
            )
        )  # fmt: skip
    if shape.uefi:
        domain.firmware = "efi"
        if shape.secure_boot in ("required", "disabled"):
            _set_secure_boot(domain, shape.secure_boot == "required")
    if shape.os_type == "windows":
        _set_windows_features(domain)


def _set_windows_features(domain: Domain) -> None:
    """Nova's Windows guest: clock in local time, and the Hyper-V enlightenments that
    QEMU offers with and without KVM (relaxed timing, virtual APIC, spinlock retries)."""
    domain.clock_offset = "localtime"
    features = domain.features
    if features is None:
        return
    features.hyperv_relaxed = True
    features.hyperv_vapic = True
    features.hyperv_spinlocks = True
    features.hyperv_spinlock_retries = WINDOWS_SPINLOCK_RETRIES


def _set_secure_boot(domain: Domain, on: bool) -> None:
    domain.loader_secure = on
    features = domain.features
    if on and features is not None:
        features.smm = True


# -- the late check ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestSupport:
    """What a host can build for one (arch, machine, virt type): its domain capabilities."""

    emulator: str
    machine: str
    arch: str
    disk_buses: frozenset[str]
    video_models: frozenset[str]
    rng_models: frozenset[str]
    firmwares: frozenset[str]
    secure_boot: bool
    vif_models: frozenset[str]


def _enum(root: etree._Element, path: str, name: str) -> frozenset[str]:
    node = root.find(path)
    if node is None or node.get("supported") == "no":
        return frozenset()
    return frozenset(
        (v.text or "").strip() for v in node.iterfind(f"enum[@name='{name}']/value") if v.text
    )


def parse_guest_support(domcaps_xml: str, vif_models: frozenset[str]) -> GuestSupport:
    """:class:`GuestSupport` from ``virConnectGetDomainCapabilities`` XML; NIC models
    come from the caller (libvirt does not report them; see host/traits.py)."""
    root = etree.fromstring(domcaps_xml.encode())
    firmwares = set(_enum(root, "os", "firmware"))
    loader = root.find("os/loader")
    if loader is not None and loader.get("supported") != "no" and loader.find("value") is not None:
        firmwares.add("efi")
    return GuestSupport(
        emulator=(root.findtext("path") or "").strip(),
        machine=(root.findtext("machine") or "").strip(),
        arch=(root.findtext("arch") or "").strip(),
        disk_buses=_enum(root, "devices/disk", "bus"),
        video_models=_enum(root, "devices/video", "modelType"),
        rng_models=_enum(root, "devices/rng", "model"),
        firmwares=frozenset(firmwares),
        secure_boot="yes" in _enum(root, "os/loader", "secure"),
        vif_models=vif_models,
    )


def _refusal(shape: GuestShape, key: str, value: str, supported: object) -> HostError:
    asked = shape.asked.get(key, f"{key}={value}")
    source = "" if asked.startswith("flavor ") else "image property "
    return HostError(f"{source}{asked} is not supported by this host (supported: {supported})")


def _listed(values: frozenset[str] | tuple[str, ...]) -> str:
    return ", ".join(sorted(values)) or "none"


def check_host_support(domain: Domain, shape: GuestShape, support: GuestSupport) -> None:
    """Refuse, naming the property and value, what this host cannot build; then give
    ``domain`` the host's emulator and settle ``os_secure_boot=optional``.

    Runs before the domain is defined, so a refusal leaves nothing behind.
    """
    if shape.arch and support.arch and shape.arch != support.arch:
        raise _refusal(shape, "hw_architecture", shape.arch, support.arch)
    root = shape.disk_bus if "hw_disk_bus" in shape.asked else None
    if root is not None and support.disk_buses and root not in support.disk_buses:
        raise _refusal(shape, "hw_disk_bus", root, _listed(support.disk_buses))
    cdrom = shape.cdrom_bus
    if cdrom is not None and support.disk_buses and cdrom not in support.disk_buses:
        raise _refusal(shape, "hw_cdrom_bus", cdrom, _listed(support.disk_buses))
    video = shape.video_model
    if video is not None and video not in support.video_models:
        raise _refusal(shape, "hw_video_model", video, _listed(support.video_models))
    vif_asked = shape.vif_model != DEFAULT_VIF_MODEL or "hw_vif_model" in shape.asked
    if vif_asked and support.vif_models and shape.vif_model not in support.vif_models:
        raise _refusal(shape, "hw_vif_model", shape.vif_model, _listed(support.vif_models))
    if shape.rng and "virtio" not in support.rng_models:
        raise _refusal(shape, "hw_rng_model", "virtio", _listed(support.rng_models))
    if shape.scsi_model is not None:
        models = _SCSI_MODELS.get(support.arch, ("virtio-scsi",))
        if shape.scsi_model not in models:
            raise _refusal(shape, "hw_scsi_model", shape.scsi_model, _listed(models))
    if shape.uefi:
        if "efi" not in support.firmwares:
            raise _refusal(
                shape, "hw_firmware_type", "uefi",
                "bios only; install UEFI firmware such as Debian's ovmf",
            )  # fmt: skip
        if shape.secure_boot == "required" and not support.secure_boot:
            raise _refusal(
                shape, "os_secure_boot", "required",
                f"no secure-boot firmware for machine {support.machine}; q35 has one",
            )  # fmt: skip
        if shape.secure_boot == "optional":
            _set_secure_boot(domain, support.secure_boot)
    if support.emulator:
        domain.emulator = support.emulator


def fetch_guest_support(
    driver: HostDriver, domain: Domain, shape: GuestShape
) -> GuestSupport | None:
    """The host's domain capabilities for ``domain``'s arch and machine (None where the
    driver cannot report them, e.g. ``test:///default``); an arch or machine the host
    has no emulator for is refused naming the property that asked for it."""
    arch = domain.arch or driver.capabilities().host_arch
    machine = domain.machine
    virt_type = driver.settings.virt_type
    try:
        xml = driver.connection.call(
            lambda c: c.getDomainCapabilities(None, arch, machine, virt_type, 0)
        )
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return None
        message = exc.get_error_message()
        if "hw_machine_type" in shape.asked and "machine" in message:
            machines = _host_machines(driver, arch)
            raise _refusal(shape, "hw_machine_type", machine or "", _listed(machines)) from exc
        if "hw_architecture" in shape.asked:
            usable = usable_domain_types(virt_type)
            arches_ok = frozenset(
                g.arch for g in driver.capabilities().guests if set(g.domain_types) & set(usable)
            )
            raise _refusal(shape, "hw_architecture", arch, _listed(arches_ok)) from exc
        if not shape.asked:
            # Nothing was asked of the hardware: libvirt itself judges the definition.
            log.warning("no domain capabilities for %s/%s: %s", arch, machine, message)
            return None
        raise HostError(
            f"cannot read the domain capabilities of {arch}/{machine}: {message}"
        ) from exc
    arches = [arch]
    return parse_guest_support(str(xml), vif_models(virt_type, arches))


def _host_machines(driver: HostDriver, arch: str) -> frozenset[str]:
    """The machine types the host offers for ``arch``, shown by their short names
    (``pc``, ``q35``) and what they stand for (``pc-q35-7.2``); every versioned one
    when the emulator has no short names."""
    root = etree.fromstring(str(driver.connection.call(lambda c: c.getCapabilities())).encode())
    every: set[str] = set()
    short: set[str] = set()
    for machine in root.iterfind(f"guest/arch[@name='{arch}']/machine"):
        name = (machine.text or "").strip()
        every.add(name)
        if machine.get("canonical"):
            short.update((name, machine.get("canonical", "")))
    chosen = short or every
    chosen.discard("")
    return frozenset(chosen)
