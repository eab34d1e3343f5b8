"""Host side of a live metadata change: a :class:`MetadataUpdate` applied to what a domain
carries, and the flavor as the metadata states it.

Kept apart from the domain builder so that a rename or a resize changes the parts it
names and keeps everything else the domain was built with (image, shares, creation
time) even when the catalog no longer holds that image.
"""

from __future__ import annotations

import dataclasses

from wattvisor.compute.hostclient import MetadataUpdate, SpawnFlavor
from wattvisor.guest import FlavorMeta, InstanceMetadata


def flavor_meta(flavor: SpawnFlavor) -> FlavorMeta:
    """The ``<flavor>`` element's content for ``flavor``."""
    return FlavorMeta(
        name=flavor.name, id=flavor.id, memory_mib=flavor.ram_mb, disk_gib=flavor.disk_gb,
        swap_mib=flavor.swap_mb, ephemeral_gib=flavor.ephemeral_gb, vcpus=flavor.vcpus,
        extra_specs=dict(flavor.extra_specs),
    )  # fmt: skip


def apply_update(metadata: InstanceMetadata, update: MetadataUpdate) -> InstanceMetadata:
    """``metadata`` with the parts ``update`` names replaced."""
    changes: dict[str, object] = {}
    if update.display_name is not None:
        changes["display_name"] = update.display_name
    if update.flavor is not None:
        changes["flavor"] = flavor_meta(update.flavor)
    return dataclasses.replace(metadata, **changes)  # type: ignore[arg-type]
