"""One schema for the flavor extra specs and image properties the scheduler acts on.

Values are checked when a flavor or image is saved, so a typo is reported to the person
who made it ("hw_vif_model='virtio-net' is not accepted; accepted: e1000, ...") instead of
surfacing at boot time as an unexplained "no valid host".

Flavor extra specs follow Nova's schema (``nova/api/validation/extra_specs``) for the
namespaces that mean something on a libvirt host, plus wattvisor's own
``hw:power_metrics``: every key must be a known one, and an unknown key is refused with
the namespaces that exist. ``resources[N]:<CLASS>`` and ``trait[N]:<TRAIT>`` are what the
scheduler asks placement for; the other keys are checked and kept with the flavor (and
the guest's metadata) for the operator's own tooling. Image properties are free-form
(Glance's); only the ones the scheduler reads are checked.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from wattvisor.placement.entities import MAX_INT
from wattvisor.placement.names import (
    CUSTOM_NAME_RULE,
    is_custom_name,
    shown_name,
    standard_resource_classes,
    standard_traits,
)
from wattvisor.scheduler.image_property_names import (
    APPLIED_HW_PROPERTIES,
    EXPORTER_PORT_RANGE,
    HW_PREFIX,
    HW_SYNONYMS,
    NOVA_HW_PROPERTIES,
    PROMETHEUS_EXPORTER_PORT_KEY,
    SERVICE_TEMPLATE_KEY,
    SERVICE_TEMPLATE_RANGE,
    canonical_property_name,
    nearest_known_name,
)
from wattvisor.scheduler.image_property_names import (
    POWER_METRICS_IMAGE_KEY as POWER_METRICS_IMAGE_KEY,
)

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
# Buses a QEMU guest's root disk and config drive cdrom can sit on (xen, lxc and uml
# belong to other hypervisors; virtio-blk and a floppy controller carry no cdrom).
ROOT_DISK_BUSES = ("fdc", "ide", "sata", "scsi", "usb", "virtio")
CDROM_BUSES = ("ide", "sata", "scsi", "usb")

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
    # The values wattvisor can apply to a libvirt QEMU/KVM guest (None: every one).
    applicable: tuple[str, ...] | None = None

    def trait_for(self, value: str) -> str:
        return f"{self.prefix}_{value.upper().replace('-', '_')}"


TRAIT_PROPERTIES: dict[str, TraitProperty] = {
    p.key: p
    for p in (
        TraitProperty("hw_vif_model", "COMPUTE_NET_VIF_MODEL", _SEED_VIF_MODELS),
        TraitProperty("hw_video_model", "COMPUTE_GRAPHICS_MODEL", _SEED_VIDEO_MODELS),
        TraitProperty(
            "hw_disk_bus", "COMPUTE_STORAGE_BUS", _SEED_DISK_BUSES, applicable=ROOT_DISK_BUSES
        ),
        TraitProperty(
            "hw_cdrom_bus", "COMPUTE_STORAGE_BUS", _SEED_DISK_BUSES, applicable=CDROM_BUSES
        ),
        TraitProperty("hw_architecture", "HW_ARCH", _SEED_ARCHITECTURES),
        TraitProperty("hypervisor_type", "CUSTOM_HYPERVISOR", _HYPERVISOR_TYPES, custom=True),
        TraitProperty("vm_mode", "CUSTOM_VM_MODE", _VM_MODES, custom=True),
    )
}
POWER_METRICS_FLAVOR_KEY = "hw:power_metrics"
# The trait a host needs to share a VM's energy counters read-only (see prefilters).
SHARE_TRAIT = "COMPUTE_SHARE_LOCAL_FS"


@dataclass(frozen=True, slots=True)
class Problem:
    """One rejected key: what was given and what would have been accepted."""

    source: str
    key: str
    value: str
    accepted: tuple[str, ...]
    reason: str = "is not accepted"
    accepted_label: str = "accepted"

    def __str__(self) -> str:
        accepted = ", ".join(self.accepted)
        key = self.key if _SHOWN_KEY.fullmatch(self.key) else shown_name(self.key, 64)
        value = shown_name(self.value, 64)
        return f"{self.source} {key}={value} {self.reason}; {self.accepted_label}: {accepted}"


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
    if prop.applicable is not None:
        candidates &= set(prop.applicable)
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


def _check_trait_spec(source: str, key: str, value: str, name: str | None = None) -> list[Problem]:
    name = key[len(TRAIT_SPEC_PREFIX) :] if name is None else name
    problems = []
    if not (name in standard_traits() or is_custom_name(name)):
        problems.append(
            Problem(
                source, key, value, ("<os-traits name>", f"CUSTOM_ name ({CUSTOM_NAME_RULE})"),
                reason="names no trait",
            )
        )  # fmt: skip
    if str(value).strip().lower() not in TRAIT_SPEC_VALUES:
        problems.append(Problem(source, key, value, TRAIT_SPEC_VALUES))
    return problems


# -- flavor extra specs -----------------------------------------------------------------

FLAVOR_SOURCE = "flavor extra spec"
# Nova's limits for extra spec keys and values (its flavor extra spec API schema).
_SPEC_KEY = re.compile(r"[a-zA-Z0-9_:. -]{1,255}")
_SHOWN_KEY = re.compile(r"[\w:.-]{1,64}")
MAX_SPEC_VALUE_LENGTH = 255
# resources<group>: and trait<group>: take an optional request group suffix (Nova's).
_GROUPED_KEY = re.compile(r"(resources|trait)([a-zA-Z0-9_-]{1,64})?:(.*)", re.DOTALL)
_CPU_LIST = r"\^?\d+((-\d+)?(,\^?\d+(-\d+)?)?)*"


@dataclass(frozen=True, slots=True)
class ValueRule:
    """What values one key accepts: a test and how to say what passes it."""

    accepted: tuple[str, ...]
    test: Callable[[str], bool]


def _boolean() -> ValueRule:
    return ValueRule(_BOOL_ACCEPTED, lambda v: parse_bool(v) is not None)


def _integer(low: int | None = None, high: int | None = None) -> ValueRule:
    def test(value: str) -> bool:
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d{1,12}", text):
            return False
        number = int(text)
        return (low is None or number >= low) and (high is None or number <= high)

    if low is not None and high is not None:
        shown = f"an integer from {low} to {high}"
    elif low is not None:
        shown = f"an integer >= {low}"
    else:
        shown = "an integer"
    return ValueRule((shown,), test)


def _one_of(*choices: str) -> ValueRule:
    return ValueRule(choices, lambda v: v in choices)


def _matching(pattern: str, shown: str) -> ValueRule:
    compiled = re.compile(pattern)
    return ValueRule((shown,), lambda v: compiled.fullmatch(v) is not None)


def _text() -> ValueRule:
    """Free text (filters of the aggregate and capabilities namespaces)."""
    return ValueRule(("printable text",), lambda v: bool(v.strip()) and v.isprintable())


@dataclass(frozen=True, slots=True)
class SpecKey:
    """One accepted key (``shown`` as people write it) and the values it takes."""

    shown: str
    pattern: re.Pattern[str]
    value: ValueRule


def _key(shown: str, value: ValueRule, **parameters: str) -> SpecKey:
    """``shown`` with ``<name>`` placeholders, each matching ``parameters[name]``."""
    pattern = re.escape(shown)
    for name, regex in parameters.items():
        pattern = pattern.replace(re.escape(f"<{name}>"), f"(?:{regex})")
    return SpecKey(shown, re.compile(pattern), value)


def _quota_keys() -> list[SpecKey]:
    keys = [
        _key("quota:cpu_shares", _integer(0)),
        _key("quota:cpu_period", _integer(0)),
        _key("quota:cpu_quota", _integer()),
    ]
    for stat in ("read", "write", "total"):
        for metric in ("bytes", "iops"):
            keys.append(_key(f"quota:disk_{stat}_{metric}_sec", _integer(0)))
    for direction in ("inbound", "outbound"):
        for metric in ("average", "peak", "burst"):
            keys.append(_key(f"quota:vif_{direction}_{metric}", _integer(0)))
    return keys


_CAPABILITIES = (
    "id", "uuid", "service_id", "host", "vcpus", "memory_mb", "local_gb", "vcpus_used",
    "memory_mb_used", "local_gb_used", "hypervisor_type", "hypervisor_version",
    "hypervisor_hostname", "free_ram_mb", "free_disk_gb", "current_workload", "running_vms",
    "disk_available_least", "host_ip", "mapped", "cpu_allocation_ratio",
    "ram_allocation_ratio", "disk_allocation_ratio", "total_usable_ram_mb",
    "total_usable_disk_gb", "disk_mb_used", "free_disk_mb", "vcpus_total", "num_instances",
    "num_io_ops", "failed_builds", "aggregates", "cell_uuid", "updated",
)  # fmt: skip
_CAPABILITIES_WITH_FILTER = (
    "cpu_info", "metrics", "stats", "numa_topology", "supported_hv_specs",
    "pci_device_pools", "nodename", "pci_stats", "supported_instances", "limits",
    "instances",
)  # fmt: skip

# The namespaces of Nova's extra spec schema that apply to a libvirt host (not vmware:,
# powervm:, accel:), with the keys and values Nova accepts in each.
FLAVOR_NAMESPACES: dict[str, list[SpecKey]] = {
    "hw": [
        _key(POWER_METRICS_FLAVOR_KEY, _boolean()),
        _key("hw:cpu_realtime", _boolean()),
        _key("hw:cpu_realtime_mask", _matching(_CPU_LIST, "a CPU list such as ^0-1")),
        _key("hw:hide_hypervisor_id", _boolean()),
        _key("hw:cpu_policy", _one_of("dedicated", "shared", "mixed")),
        _key("hw:cpu_thread_policy", _one_of("prefer", "isolate", "require")),
        _key("hw:emulator_threads_policy", _one_of("isolate", "share")),
        _key("hw:cpu_dedicated_mask", _matching(_CPU_LIST, "a CPU list such as ^0-1")),
        _key(
            "hw:mem_page_size",
            _matching(
                r"(large|small|any|\d+([kKMGT]i?)?(b|bit|B)?)",
                "large, small, any or a size such as 2MB",
            ),
        ),
        _key("hw:locked_memory", _boolean()),
        _key("hw:numa_nodes", _integer(1)),
        _key("hw:numa_cpus.<N>", _matching(_CPU_LIST, "a CPU list such as 0-3"), N=r"\d+"),
        _key("hw:numa_mem.<N>", _integer(1), N=r"\d+"),
        _key("hw:pci_numa_affinity_policy", _one_of("required", "preferred", "legacy", "socket")),
        _key("hw:cpu_sockets", _integer(1)),
        _key("hw:cpu_cores", _integer(1)),
        _key("hw:cpu_threads", _integer(1)),
        _key("hw:cpu_max_sockets", _integer(1)),
        _key("hw:cpu_max_cores", _integer(1)),
        _key("hw:cpu_max_threads", _integer(1)),
        _key("hw:boot_menu", _boolean()),
        _key("hw:vif_multiqueue_enabled", _boolean()),
        _key("hw:mem_encryption", _boolean()),
        _key("hw:mem_encryption_model", _one_of("amd-sev", "amd-sev-es", "amd-sev-snp")),
        _key("hw:pmem", _matching(r"([a-zA-Z0-9_]+(,)?)+", "comma-separated labels")),
        _key("hw:pmu", _boolean()),
        _key("hw:serial_port_count", _integer(0)),
        _key("hw:tpm_model", _one_of("tpm-tis", "tpm-crb")),
        _key("hw:tpm_version", _one_of("1.2", "2.0")),
        _key("hw:tpm_secret_security", _one_of("user", "host", "deployment")),
        _key("hw:watchdog_action", _one_of("none", "pause", "poweroff", "reset", "disabled")),
        _key("hw:viommu_model", _one_of("intel", "smmuv3", "virtio", "auto")),
        _key("hw:virtio_packed_ring", _boolean()),
        _key(
            "hw:sound_model",
            _one_of("sb16", "es1370", "pcspk", "ac97", "ich6", "ich9", "usb", "virtio"),
        ),
        _key("hw:usb_model", _one_of("none", "nec-xhci", "qemu-xhci")),
        _key("hw:redirected_usb_ports", _integer(0, 15)),
        _key("hw:ephemeral_encryption", _boolean()),
        _key("hw:ephemeral_encryption_format", _one_of("plain", "luks", "luksv2")),
    ],
    "hw_rng": [
        _key("hw_rng:allowed", _boolean()),
        _key("hw_rng:rate_bytes", _integer(0)),
        _key("hw_rng:rate_period", _integer(0)),
    ],
    "hw_video": [_key("hw_video:ram_max_mb", _integer(0))],
    "quota": _quota_keys(),
    "aggregate_instance_extra_specs": [
        _key("aggregate_instance_extra_specs:<key>", _text(), key=r".+"),
    ],
    "capabilities": [_key(f"capabilities:{name}", _text()) for name in _CAPABILITIES]
    + [
        _key(f"capabilities:{name}<filter>", _text(), filter=r"(:\w+)*")
        for name in _CAPABILITIES_WITH_FILTER
    ],
    "pci_passthrough": [
        _key(
            "pci_passthrough:alias",
            _matching(r"[^:]+:\d+(?:\s*,\s*[^:]+:\d+)*", "ALIAS:COUNT[,ALIAS:COUNT...]"),
        )
    ],
    "os": [_key("os:secure_boot", _one_of("disabled", "required"))],
}
GROUP_POLICY_KEY = "group_policy"
# Keys without a namespace that Nova knows.
FLAVOR_PLAIN_KEYS: dict[str, SpecKey] = {
    GROUP_POLICY_KEY: _key(GROUP_POLICY_KEY, _one_of("isolate", "none")),
    "hide_hypervisor_id": _key("hide_hypervisor_id", _boolean()),
    PROMETHEUS_EXPORTER_PORT_KEY: _key(
        PROMETHEUS_EXPORTER_PORT_KEY, _integer(*EXPORTER_PORT_RANGE)
    ),
    SERVICE_TEMPLATE_KEY: _key(SERVICE_TEMPLATE_KEY, _integer(*SERVICE_TEMPLATE_RANGE)),
}
KNOWN_NAMESPACES: tuple[str, ...] = tuple(
    sorted([f"{ns}:" for ns in FLAVOR_NAMESPACES] + ["resources[N]:", "trait[N]:"])
)


@dataclass(frozen=True, slots=True)
class GroupedSpec:
    """A ``resources[N]:<CLASS>`` or ``trait[N]:<TRAIT>`` extra spec, taken apart."""

    key: str
    kind: str  # "resources" or "trait"
    group: str  # "" for the unnumbered group
    name: str
    value: str


def grouped_spec(key: str, value: str) -> GroupedSpec | None:
    """``key`` as a resources/trait request (None for every other key)."""
    match = _GROUPED_KEY.fullmatch(key)
    if match is None:
        return None
    return GroupedSpec(key, match.group(1), match.group(2) or "", match.group(3), value)


def grouped_specs(extra_specs: Mapping[str, str]) -> list[GroupedSpec]:
    """Every resources/trait extra spec of a flavor, sorted by key."""
    found = (grouped_spec(k, str(v)) for k, v in sorted(extra_specs.items()))
    return [g for g in found if g is not None]


def _resource_problems(spec: GroupedSpec) -> list[Problem]:
    problems = []
    if not (spec.name in standard_resource_classes() or is_custom_name(spec.name)):
        problems.append(
            Problem(
                FLAVOR_SOURCE, spec.key, spec.value,
                ("<os-resource-classes name>", f"CUSTOM_ name ({CUSTOM_NAME_RULE})"),
                reason="names no resource class",
            )
        )  # fmt: skip
    if not _integer(0, MAX_INT).test(spec.value):
        problems.append(
            Problem(FLAVOR_SOURCE, spec.key, spec.value, (f"an integer from 0 to {MAX_INT}",))
        )
    return problems


def _key_problem(key: str, value: str) -> Problem | None:
    """The problem with one key that is not resources/trait, or None."""
    namespace, sep, _ = key.partition(":")
    if not sep:
        rule = FLAVOR_PLAIN_KEYS.get(key)
        if rule is None:
            return Problem(
                FLAVOR_SOURCE, key, value, (*KNOWN_NAMESPACES, *FLAVOR_PLAIN_KEYS),
                reason="is not a known extra spec",
                accepted_label="known namespaces and keys",
            )  # fmt: skip
        return None if rule.value.test(value) else Problem(
            FLAVOR_SOURCE, key, value, rule.value.accepted
        )  # fmt: skip
    keys = FLAVOR_NAMESPACES.get(namespace)
    if keys is None:
        return Problem(
            FLAVOR_SOURCE, key, value, KNOWN_NAMESPACES,
            reason=f"is in no known namespace ({namespace}: is not one)",
            accepted_label="known namespaces",
        )  # fmt: skip
    for rule in keys:
        if rule.pattern.fullmatch(key):
            if rule.value.test(value):
                return None
            return Problem(FLAVOR_SOURCE, key, value, rule.value.accepted)
    return Problem(
        FLAVOR_SOURCE, key, value, tuple(rule.shown for rule in keys),
        reason=f"is not a known {namespace}: key",
        accepted_label=f"known {namespace}: keys",
    )  # fmt: skip


def flavor_problems(extra_specs: Mapping[str, str]) -> list[Problem | str]:
    """Every problem with flavor ``extra_specs`` (empty when they are all acceptable)."""
    problems: list[Problem | str] = []
    groups: set[str] = set()
    traits: dict[str, tuple[str, str]] = {}
    for key, raw in sorted(extra_specs.items()):
        value = str(raw)
        if not isinstance(key, str) or not _SPEC_KEY.fullmatch(key):
            problems.append(
                Problem(
                    FLAVOR_SOURCE, str(key), value,
                    ("keys of 1-255 characters from a-z A-Z 0-9 _ - : . and space",),
                    reason="has a key that is not accepted",
                )
            )  # fmt: skip
            continue
        if len(value) > MAX_SPEC_VALUE_LENGTH:
            problems.append(
                Problem(
                    FLAVOR_SOURCE, key, value,
                    (f"values of at most {MAX_SPEC_VALUE_LENGTH} characters",),
                    reason="is too long",
                )
            )  # fmt: skip
            continue
        spec = grouped_spec(key, value)
        if spec is None:
            problem = _key_problem(key, value)
            if problem is not None:
                problems.append(problem)
            continue
        if spec.group:
            groups.add(spec.group)
        if spec.kind == "resources":
            problems.extend(_resource_problems(spec))
            continue
        found = _check_trait_spec(FLAVOR_SOURCE, key, value, spec.name)
        problems.extend(found)
        if found:
            continue
        wanted = value.strip().lower()
        earlier = traits.setdefault(spec.name, (key, wanted))
        if earlier[1] != wanted:
            problems.append(
                f"{FLAVOR_SOURCE}s {earlier[0]}={earlier[1]} and {key}={wanted} contradict "
                f"each other: a host either has {spec.name} or it does not"
            )
    share = traits.get(SHARE_TRAIT)
    power_metrics = parse_bool(str(extra_specs.get(POWER_METRICS_FLAVOR_KEY, "")))
    if power_metrics and share is not None and share[1] == "forbidden":
        problems.append(
            f"{FLAVOR_SOURCE}s {POWER_METRICS_FLAVOR_KEY}="
            f"{extra_specs[POWER_METRICS_FLAVOR_KEY]} and {share[0]}=forbidden contradict "
            f"each other: power metrics need a host with {SHARE_TRAIT}"
        )
    policy = str(extra_specs.get(GROUP_POLICY_KEY, "")).strip()
    if policy == "isolate" and len(groups) > 1:
        problems.append(
            Problem(
                FLAVOR_SOURCE, GROUP_POLICY_KEY, policy,
                ("none (or at most one numbered request group)",),
                reason=(
                    f"can never be met: isolate puts each of the {len(groups)} numbered "
                    "request groups on a different resource provider, and every wattvisor "
                    "host is a single provider"
                ),
            )
        )  # fmt: skip
    return problems


IMAGE_SOURCE = "image property"
SCSI_MODELS = (
    "buslogic", "ibmvscsi", "lsilogic", "lsisas1068", "lsisas1078", "virtio-scsi", "vmpvscsi",
)  # fmt: skip
SECURE_BOOT_POLICIES = ("required", "disabled", "optional")
# Applied image properties whose value names no trait (the trait ones: TRAIT_PROPERTIES),
# with Nova's accepted values.
IMAGE_VALUE_RULES: dict[str, ValueRule] = {
    POWER_METRICS_IMAGE_KEY: _boolean(),
    "hw_machine_type": _matching(
        r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "a machine type name such as pc, q35, pc-q35-7.2"
    ),
    "hw_firmware_type": _one_of("bios", "uefi"),
    "hw_rng_model": _one_of("virtio"),
    "hw_scsi_model": _one_of(*SCSI_MODELS),
    "hw_qemu_guest_agent": _boolean(),
    "hw_pointer_model": _one_of("usbtablet"),
    "os_type": _one_of("linux", "windows"),
    "os_secure_boot": _one_of(*SECURE_BOOT_POLICIES),
    PROMETHEUS_EXPORTER_PORT_KEY: _integer(*EXPORTER_PORT_RANGE),
    SERVICE_TEMPLATE_KEY: _integer(*SERVICE_TEMPLATE_RANGE),
}
RNG_ALLOWED_SPEC = "hw_rng:allowed"
SECURE_BOOT_SPEC = "os:secure_boot"


def property_value(key: str, raw: str) -> str:
    """The value as applied: enumerations are case-insensitive; a machine type is not."""
    return raw.strip() if key == "hw_machine_type" else raw.strip().lower()


def image_property(properties: Mapping[str, str], key: str) -> tuple[str, str] | None:
    """``(key as written, value)`` of property ``key`` or one of its synonyms, or None."""
    if key in properties:
        return key, str(properties[key])
    for synonym, canonical in sorted(HW_SYNONYMS.items()):
        if canonical == key and synonym in properties:
            return synonym, str(properties[synonym])
    return None


def _hw_key_problem(key: str, value: str) -> Problem | None:
    """The problem with a ``hw_*`` key that wattvisor does not apply, or None."""
    if canonical_property_name(key) in APPLIED_HW_PROPERTIES:
        return None
    applied = tuple(sorted(APPLIED_HW_PROPERTIES | set(HW_SYNONYMS)))
    if key in NOVA_HW_PROPERTIES:
        return Problem(
            IMAGE_SOURCE, key, value, applied,
            reason="is not applied to guests by wattvisor, so it is refused",
            accepted_label="hw_ properties wattvisor applies",
        )  # fmt: skip
    nearest = nearest_known_name(key)
    hint = f"did you mean {nearest}?" if nearest else "no known name is close"
    return Problem(
        IMAGE_SOURCE, key, value, applied,
        reason=f"is not a known image property ({hint})",
        accepted_label="hw_ properties wattvisor applies",
    )  # fmt: skip


def image_problems(properties: Mapping[str, str]) -> list[Problem]:
    """Every problem with image ``properties`` (empty when they are all acceptable)."""
    problems: list[Problem] = []
    for key, value in sorted(properties.items()):
        # The same key and length rules as flavor extra specs: properties are shown to
        # every member and stored as given.
        if not isinstance(key, str) or not _SPEC_KEY.fullmatch(key):
            problems.append(
                Problem(
                    IMAGE_SOURCE, str(key), str(value),
                    ("keys of 1-255 characters from a-z A-Z 0-9 _ - : . and space",),
                    reason="has a key that is not accepted",
                )
            )  # fmt: skip
            continue
        if len(str(value)) > MAX_SPEC_VALUE_LENGTH:
            problems.append(
                Problem(
                    IMAGE_SOURCE, key, str(value),
                    (f"values of at most {MAX_SPEC_VALUE_LENGTH} characters",),
                    reason="is too long",
                )
            )  # fmt: skip
            continue
        name = canonical_property_name(key)
        if key.startswith(HW_PREFIX):
            problem = _hw_key_problem(key, str(value))
            if problem is not None:
                problems.append(problem)
                continue
        if name in TRAIT_PROPERTIES:
            if canonical_value(name, str(value)) is None:
                problems.append(Problem(IMAGE_SOURCE, key, str(value), accepted_values(name)))
        elif name in IMAGE_VALUE_RULES:
            rule = IMAGE_VALUE_RULES[name]
            if not rule.test(property_value(name, str(value))):
                problems.append(Problem(IMAGE_SOURCE, key, str(value), rule.accepted))
        elif key.startswith(TRAIT_SPEC_PREFIX):
            problems.extend(_check_trait_spec(IMAGE_SOURCE, key, str(value)))
    synonyms = [(s, c) for s, c in sorted(HW_SYNONYMS.items()) if s in properties]
    for synonym, canonical in synonyms:
        if canonical in properties:
            problems.append(
                Problem(
                    IMAGE_SOURCE, synonym, str(properties[synonym]), (canonical,),
                    reason=f"means the same as {canonical}, which is set too; keep one",
                    accepted_label="keep",
                )
            )  # fmt: skip
    return problems


def request_problems(
    extra_specs: Mapping[str, str], properties: Mapping[str, str]
) -> list[Problem | str]:
    """What a flavor and an image ask for that contradicts itself (checked at server
    create, when both are known): each would otherwise be dropped from the guest."""
    problems: list[Problem | str] = list(image_problems(properties))
    rng = image_property(properties, "hw_rng_model")
    allowed_raw = extra_specs.get(RNG_ALLOWED_SPEC)
    if rng is not None and allowed_raw is not None and parse_bool(str(allowed_raw)) is False:
        problems.append(
            f"image property {rng[0]}={rng[1]} asks for a random number generator that "
            f"flavor extra spec {RNG_ALLOWED_SPEC}={allowed_raw} does not allow"
        )
    image_policy = image_property(properties, "os_secure_boot")
    flavor_policy = extra_specs.get(SECURE_BOOT_SPEC)
    if (
        image_policy is not None
        and flavor_policy is not None
        and image_policy[1].strip().lower() != str(flavor_policy).strip().lower()
    ):
        problems.append(
            f"flavor extra spec {SECURE_BOOT_SPEC}={flavor_policy} and image property "
            f"os_secure_boot={image_policy[1]} disagree; set one of them, or both alike"
        )
    policy = str(flavor_policy or (image_policy[1] if image_policy else "")).strip().lower()
    firmware = image_property(properties, "hw_firmware_type")
    uefi = firmware is not None and firmware[1].strip().lower() == "uefi"
    if policy == "required" and not uefi:
        source = (
            f"flavor extra spec {SECURE_BOOT_SPEC}"
            if flavor_policy
            else "image property os_secure_boot"
        )
        problems.append(
            f"{source}=required needs UEFI firmware: set image property "
            f"hw_firmware_type=uefi (it is {firmware[1] if firmware else 'unset'})"
        )
    return problems


SERVER_METADATA_SOURCE = "server metadata"
MAX_SERVER_METADATA_ITEMS = 128  # Nova's default metadata_items quota
# Server metadata is free-form (Nova's); these keys mean something and are checked.
SERVER_METADATA_RULES: dict[str, ValueRule] = {
    PROMETHEUS_EXPORTER_PORT_KEY: _integer(*EXPORTER_PORT_RANGE),
    SERVICE_TEMPLATE_KEY: _integer(*SERVICE_TEMPLATE_RANGE),
}


def server_metadata_problems(metadata: Mapping[str, str]) -> list[Problem | str]:
    """Every problem with a server's ``metadata`` (empty when it is all acceptable)."""
    problems: list[Problem | str] = []
    if len(metadata) > MAX_SERVER_METADATA_ITEMS:
        problems.append(
            f"{SERVER_METADATA_SOURCE} has {len(metadata)} items; at most "
            f"{MAX_SERVER_METADATA_ITEMS} are accepted"
        )
    for key, raw in sorted(metadata.items()):
        value = str(raw)
        if not isinstance(key, str) or not _SPEC_KEY.fullmatch(key):
            problems.append(
                Problem(
                    SERVER_METADATA_SOURCE, str(key), value,
                    ("keys of 1-255 characters from a-z A-Z 0-9 _ - : . and space",),
                    reason="has a key that is not accepted",
                )
            )  # fmt: skip
            continue
        if len(value) > MAX_SPEC_VALUE_LENGTH or not value.isprintable():
            problems.append(
                Problem(
                    SERVER_METADATA_SOURCE, key, value,
                    (f"printable values of at most {MAX_SPEC_VALUE_LENGTH} characters",),
                    reason="is not accepted",
                )
            )  # fmt: skip
            continue
        rule = SERVER_METADATA_RULES.get(key)
        if rule is not None and not rule.test(value):
            problems.append(Problem(SERVER_METADATA_SOURCE, key, value, rule.accepted))
    return problems


def integer_setting(value: object, bounds: tuple[int, int]) -> int | None:
    """``value`` as the integer a service property holds, or None when it is not one within
    ``bounds`` (values are checked when saved; one stored before the check is skipped)."""
    return _integer_in(str(value).strip(), bounds)


@functools.lru_cache(maxsize=4096)
def _integer_in(text: str, bounds: tuple[int, int]) -> int | None:
    # Cached: a target list reads the same few flavor and image values for every server.
    return int(text) if _integer(*bounds).test(text) else None


def validate_server_metadata(metadata: Mapping[str, str]) -> None:
    """Raise InvalidSpec naming every unacceptable server metadata item (call when saving)."""
    problems = server_metadata_problems(metadata)
    if problems:
        raise InvalidSpec(problems)


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
