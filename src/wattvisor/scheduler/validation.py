"""One schema for the flavor extra specs and image properties the scheduler acts on.

Values are checked when a flavor or image is saved, so a typo is reported to the person
who made it ("hw_vif_model='virtio-net' is not accepted; accepted: e1000, ...") instead of
surfacing at boot time as an unexplained "no valid host". Keys the schema does not know
are left alone: they belong to other parts of the system.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from wattvisor.placement.names import is_custom_name, standard_traits

TRUE_SPELLINGS = frozenset({"1", "t", "true", "on", "y", "yes"})
FALSE_SPELLINGS = frozenset({"0", "f", "false", "off", "n", "no"})
TRAIT_SPEC_PREFIX = "trait:"
TRAIT_SPEC_VALUES = ("required", "forbidden")

# The enumerations wattvisor started from (Nova's image property enums); every model that
# os-traits knows a trait for is accepted as well, see _accepted().
_SEED_VIF_MODELS = (
    "e1000",
    "e1000e",
    "igb",
    "lan9118",
    "ne2k_pci",
    "netfront",
    "pcnet",
    "rtl8139",
    "spapr-vlan",
    "sriov",
    "virtio",
    "vmxnet",
    "vmxnet3",
)
_SEED_VIDEO_MODELS = ("bochs", "cirrus", "gop", "none", "qxl", "vga", "virtio", "vmvga", "xen")
_SEED_DISK_BUSES = ("fdc", "ide", "lxc", "sata", "scsi", "uml", "usb", "virtio", "xen")
_SEED_ARCHITECTURES = (
    "aarch64",
    "alpha",
    "armv6",
    "armv7",
    "armv7b",
    "cris",
    "i686",
    "ia64",
    "lm32",
    "m68k",
    "microblaze",
    "microblazeel",
    "mips",
    "mips64",
    "mips64el",
    "mipsel",
    "openrisc",
    "parisc",
    "parisc64",
    "ppc",
    "ppc64",
    "ppc64le",
    "ppcemb",
    "ppcle",
    "s390",
    "s390x",
    "sh4",
    "sh4eb",
    "sparc",
    "sparc64",
    "unicore32",
    "x86_64",
    "xtensa",
    "xtensaeb",
)
_HYPERVISOR_TYPES = (
    "baremetal",
    "bhyve",
    "docker",
    "fake",
    "hyperv",
    "ironic",
    "kqemu",
    "kvm",
    "lxc",
    "lxd",
    "openvz",
    "parallels",
    "phyp",
    "powervm",
    "qemu",
    "test",
    "uml",
    "vbox",
    "virtuozzo",
    "vmware",
    "xen",
    "zvm",
)
_VM_MODES = ("exe", "hvm", "uml", "xen")

# Spellings in common use that mean one of the canonical values above.
_ALIASES: dict[str, dict[str, str]] = {
    "hw_architecture": {
        "amd64": "x86_64",
        "x64": "x86_64",
        "i386": "i686",
        "i486": "i686",
        "i586": "i686",
        "arm64": "aarch64",
        "ppc64el": "ppc64le",
    },
    "vm_mode": {"hv": "hvm", "pv": "xen", "baremetal": "hvm"},
    "hypervisor_type": {"xapi": "xen"},
}


@dataclass(frozen=True, slots=True)
class TraitProperty:
    """A property whose value names a trait: ``prefix + "_" + VALUE`` (upper-cased, ``-``
    turned into ``_``)."""

    key: str
    prefix: str
    seed: tuple[str, ...]
    custom: bool = False

    def trait_for(self, value: str) -> str:
        return f"{self.prefix}_{value.upper().replace('-', '_')}"


TRAIT_PROPERTIES: dict[str, TraitProperty] = {
    p.key: p
    for p in (
        TraitProperty("hw_vif_model", "COMPUTE_NET_VIF_MODEL", _SEED_VIF_MODELS),
        TraitProperty("hw_video_model", "COMPUTE_GRAPHICS_MODEL", _SEED_VIDEO_MODELS),
        TraitProperty("hw_disk_bus", "COMPUTE_STORAGE_BUS", _SEED_DISK_BUSES),
        TraitProperty("hw_cdrom_bus", "COMPUTE_STORAGE_BUS", _SEED_DISK_BUSES),
        TraitProperty("hw_architecture", "HW_ARCH", _SEED_ARCHITECTURES),
        TraitProperty("hypervisor_type", "CUSTOM_HYPERVISOR", _HYPERVISOR_TYPES, custom=True),
        TraitProperty("vm_mode", "CUSTOM_VM_MODE", _VM_MODES, custom=True),
    )
}
POWER_METRICS_IMAGE_KEY = "hw_power_metrics"
POWER_METRICS_FLAVOR_KEY = "hw:power_metrics"


@dataclass(frozen=True, slots=True)
class Problem:
    """One rejected key: what was given and what would have been accepted."""

    source: str
    key: str
    value: str
    accepted: tuple[str, ...]

    def __str__(self) -> str:
        accepted = ", ".join(self.accepted)
        return f"{self.source} {self.key}={self.value!r} is not accepted; accepted: {accepted}"


class InvalidSpec(ValueError):
    """Flavor extra specs or image properties that the scheduler cannot honour."""

    def __init__(self, problems: Iterable[Problem | str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@cache
def accepted_values(key: str) -> tuple[str, ...]:
    """Accepted (canonical, lower-case) values of a trait-naming property."""
    prop = TRAIT_PROPERTIES[key]
    if prop.custom:
        return tuple(sorted(prop.seed))
    known = standard_traits()
    from_traits = {
        t[len(prop.prefix) + 1 :].lower() for t in known if t.startswith(prop.prefix + "_")
    }
    candidates = set(prop.seed) | from_traits
    return tuple(sorted(v for v in candidates if prop.trait_for(v) in known))


def canonical_value(key: str, value: str) -> str | None:
    """The canonical spelling of ``value`` for ``key``, or None when it is not accepted."""
    lowered = value.strip().lower()
    lowered = _ALIASES.get(key, {}).get(lowered, lowered)
    accepted = accepted_values(key)
    if lowered in accepted:
        return lowered
    if "_" in lowered and lowered.replace("_", "-") in accepted:
        return lowered.replace("_", "-")
    if "-" in lowered and lowered.replace("-", "_") in accepted:
        return lowered.replace("-", "_")
    return None


def parse_bool(value: str) -> bool | None:
    """oslo-style boolean spellings; None when ``value`` is none of them."""
    lowered = str(value).strip().lower()
    if lowered in TRUE_SPELLINGS:
        return True
    if lowered in FALSE_SPELLINGS:
        return False
    return None


_BOOL_ACCEPTED = tuple(sorted(TRUE_SPELLINGS)) + tuple(sorted(FALSE_SPELLINGS))
_TRAIT_NAME = re.compile(r"^[A-Z0-9_]+$")


def _check_trait_spec(source: str, key: str, value: str) -> list[Problem]:
    name = key[len(TRAIT_SPEC_PREFIX) :]
    problems = []
    if not (name in standard_traits() or is_custom_name(name)):
        problems.append(
            Problem(source, key, value, ("trait:<os-traits name>", "trait:CUSTOM_<A-Z0-9_>"))
        )
    if str(value).strip().lower() not in TRAIT_SPEC_VALUES:
        problems.append(Problem(source, key, value, TRAIT_SPEC_VALUES))
    return problems


def image_problems(properties: Mapping[str, str]) -> list[Problem]:
    """Every problem with image ``properties`` (empty when they are all acceptable)."""
    problems: list[Problem] = []
    for key, value in sorted(properties.items()):
        if key in TRAIT_PROPERTIES:
            if canonical_value(key, str(value)) is None:
                problems.append(Problem("image property", key, str(value), accepted_values(key)))
        elif key == POWER_METRICS_IMAGE_KEY:
            if parse_bool(str(value)) is None:
                problems.append(Problem("image property", key, str(value), _BOOL_ACCEPTED))
        elif key.startswith(TRAIT_SPEC_PREFIX):
            problems.extend(_check_trait_spec("image property", key, str(value)))
    return problems


def flavor_problems(extra_specs: Mapping[str, str]) -> list[Problem]:
    """Every problem with flavor ``extra_specs`` (empty when they are all acceptable)."""
    problems: list[Problem] = []
    for key, value in sorted(extra_specs.items()):
        if key == POWER_METRICS_FLAVOR_KEY:
            if parse_bool(str(value)) is None:
                problems.append(Problem("flavor extra spec", key, str(value), _BOOL_ACCEPTED))
        elif key.startswith(TRAIT_SPEC_PREFIX):
            problems.extend(_check_trait_spec("flavor extra spec", key, str(value)))
    return problems


def validate_image_properties(properties: Mapping[str, str]) -> None:
    """Raise InvalidSpec naming every unacceptable image property (call when saving)."""
    problems = image_problems(properties)
    if problems:
        raise InvalidSpec(problems)


def validate_flavor_extra_specs(extra_specs: Mapping[str, str]) -> None:
    """Raise InvalidSpec naming every unacceptable flavor extra spec (call when saving)."""
    problems = flavor_problems(extra_specs)
    if problems:
        raise InvalidSpec(problems)
