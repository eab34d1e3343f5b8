"""Bring domains defined before wattvisor named its devices up to date.

``upgrade_domain_xml`` gives every *attachable* device that has no user alias a
``ua-`` alias, and changes nothing else in the document:

- Attachable kinds (``ATTACHABLE_KINDS``): disk, interface, filesystem, hostdev,
  redirdev, rng and shmem, the devices wattvisor (or an operator) attaches and
  detaches one at a time and so must be able to name. Controllers, consoles,
  video, input and the like belong to the guest's fixed shape and are left alone.
- The alias is derived, never random, so the same document always gets the same
  aliases: a disk whose ``<serial>`` is a volume id (a UUID) gets ``ua-<serial>``;
  otherwise the alias is ``ua-`` + uuid5(domain uuid, kind and a device key):
  the disk's serial or target dev, the interface's MAC, the filesystem's target
  (mount tag), the hostdev's source address, else the device's position among its
  kind. A clash with an alias already in the domain picks the next derived value.
- An existing ``ua-`` alias is never replaced. An alias without the prefix
  (``virtio-disk0``) is libvirt's name for the running device, reassigned on every
  start and dropped from the persistent definition, so, like Nova, the upgrade
  treats the device as having no user alias and replaces it (the change records
  the old name).
- Running the upgrade on its own output changes nothing.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import dataclass, field

from wattvisor.guest.aliases import ALIAS_PREFIX, make_alias
from wattvisor.guest.devices import device_alias, device_from_element
from wattvisor.guest.domain import Domain
from wattvisor.guest.xmlmodel import Element

ATTACHABLE_KINDS: tuple[str, ...] = (
    "disk", "interface", "filesystem", "hostdev", "redirdev", "rng", "shmem",
)  # fmt: skip
# Fixed namespace for uuid5-derived aliases; changing it would rename every device.
ALIAS_UUID_NAMESPACE = uuidlib.UUID("5b0c2f0e-3d1a-5f8e-9b6a-77a7e1f0c0de")
_VOLUME_ID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class AliasChange:
    """One device that gets an alias: which device, the alias, and any alias it replaces."""

    device: str
    key: str
    alias: str
    previous: str | None = None

    def describe(self) -> str:
        """One line for a person: ``disk (target=vda): alias ua-... (was virtio-disk0)``."""
        was = f" (replaces libvirt alias {self.previous})" if self.previous else ""
        return f"{self.device} ({self.key}): add alias {self.alias}{was}"


@dataclass(frozen=True)
class UpgradeResult:
    """The upgraded document and what changed (the input text itself when nothing did)."""

    xml: str
    changes: list[AliasChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _text(element: Element, tag: str, attr: str | None = None) -> str | None:
    node = next(element.iterchildren(tag), None)
    if node is None:
        return None
    value = node.get(attr) if attr is not None else (node.text or "").strip()
    return value or None


def _source_key(element: Element) -> str | None:
    source = next(element.iterchildren("source"), None)
    if source is None:
        return None
    parts = [
        str(node.tag)
        + "["
        + ",".join("=".join(map(str, kv)) for kv in sorted(node.attrib.items()))
        + "]"
        for node in source.iter()
        if isinstance(node.tag, str)
    ]
    return f"{element.get('type', '')}:{'/'.join(parts)}"


def _device_key(element: Element, position: int) -> tuple[str, str | None]:
    """What identifies the device (``key``), and a real stable id usable as alias."""
    kind = element.tag
    if kind == "disk":
        serial = _text(element, "serial")
        if serial is not None:
            return f"serial={serial}", serial if _VOLUME_ID.fullmatch(serial) else None
        target = _text(element, "target", "dev")
        if target is not None:
            return f"target={target}", None
    elif kind == "interface":
        mac = _text(element, "mac", "address")
        if mac is not None:
            return f"mac={mac.lower()}", None
    elif kind == "filesystem":
        target = _text(element, "target", "dir")
        if target is not None:
            return f"target={target}", None
    elif kind == "hostdev":
        source = _source_key(element)
        if source is not None:
            return f"source={source}", None
    return f"position={position}", None


def _derived_alias(base: str, kind: str, key: str, attempt: int) -> str:
    name = f"{base}/{kind}/{key}" + (f"#{attempt}" if attempt else "")
    return make_alias(str(uuidlib.uuid5(ALIAS_UUID_NAMESPACE, name)))


def upgrade_domain(domain: Domain) -> list[AliasChange]:
    """Give ``domain``'s attachable devices missing user aliases, in place; list them."""
    devices = next(domain.element.iterchildren("devices"), None)
    if devices is None:
        return []
    elements = [e for e in devices.iterchildren() if isinstance(e.tag, str)]
    used = {a for e in elements if (a := device_alias(e)) is not None}
    base = (domain.uuid or domain.name or "").strip().lower()
    positions: dict[str, int] = {}
    changes: list[AliasChange] = []
    for element in elements:
        kind = str(element.tag)
        if kind not in ATTACHABLE_KINDS:
            continue
        position = positions.get(kind, 0)
        positions[kind] = position + 1
        previous = device_alias(element)
        if previous is not None and previous.startswith(ALIAS_PREFIX):
            continue
        key, real_id = _device_key(element, position)
        alias = make_alias(real_id) if real_id is not None else None
        attempt = 0
        while alias is None or alias in used:
            alias = _derived_alias(base, kind, key, attempt)
            attempt += 1
        used.add(alias)
        device_from_element(element).alias = alias
        changes.append(AliasChange(kind, key, alias, previous))
    return changes


def upgrade_domain_xml(xml: str | bytes) -> UpgradeResult:
    """Upgrade domain XML text; the result's ``xml`` is the input unchanged when no
    device needed an alias (so an up-to-date document is never rewritten)."""
    domain = Domain.parse(xml)
    changes = upgrade_domain(domain)
    if not changes:
        if isinstance(xml, str):
            return UpgradeResult(xml, [])
        try:
            return UpgradeResult(bytes(xml).decode("utf-8"), [])
        except UnicodeDecodeError:
            return UpgradeResult(domain.to_xml(pretty=False), [])
    return UpgradeResult(domain.to_xml(pretty=False), changes)
