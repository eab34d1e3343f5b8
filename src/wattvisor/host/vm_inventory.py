"""The energy layer's view of the guests on this host, read from libvirt.

Each sample asks for the list of domains (one cheap call); a domain's instance
metadata (project, power-metrics shares) is read once, when its UUID first
appears, because it does not change for the life of the guest. A domain without
wattvisor's metadata is listed as not managed: someone else's guest, whose name
and uuid wattvisor's figures never show.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import libvirt

from wattvisor.energy.inventory import VMRecord
from wattvisor.guest import METADATA_NS, GuestXMLError, InstanceMetadata
from wattvisor.host.driver import HostDriver

POWER_METRICS_PURPOSE = "power_metrics"


class LibvirtVMInventory:
    """Implements :class:`wattvisor.energy.VMInventory` for a :class:`HostDriver`."""

    def __init__(self, driver: HostDriver) -> None:
        self.driver = driver
        self._dirs_by_tag = {tag: Path(d) for d, tag in driver.settings.share_local_fs.items()}
        self._cache: dict[str, VMRecord] = {}
        self._lock = threading.Lock()

    def _record(self, dom: libvirt.virDomain) -> VMRecord:
        uuid = dom.UUIDString()
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
            meta: InstanceMetadata | None = InstanceMetadata.from_xml(str(xml))
        except (libvirt.libvirtError, GuestXMLError):
            meta = None
        if meta is None:
            return VMRecord(uuid=uuid, domain=dom.name(), managed=False)
        dirs = tuple(
            self._dirs_by_tag[share.tag]
            for share in meta.shares
            if share.purpose == POWER_METRICS_PURPOSE and share.tag in self._dirs_by_tag
        )
        # Projects are known by their names everywhere power is shown (API paths, metric
        # labels); the uuid beside the name is for systems that outlive a name.
        project = meta.owner.project_name if meta.owner is not None else ""
        return VMRecord(
            uuid=uuid,
            domain=dom.name(),
            project=project or "",
            power_metrics=bool(dirs),
            share_dirs=dirs,
        )

    def vms(self) -> Sequence[VMRecord]:
        domains = self.driver.connection.call(lambda c: c.listAllDomains(0))
        with self._lock:
            current: dict[str, VMRecord] = {}
            for dom in domains:
                try:
                    uuid = dom.UUIDString()
                    current[uuid] = self._cache.get(uuid) or self._record(dom)
                except libvirt.libvirtError:
                    continue  # gone between listing and reading
            self._cache = current
            return tuple(current.values())

    def forget(self, uuid: str) -> None:
        """Re-read a domain's metadata at the next sample (after it was changed)."""
        with self._lock:
            self._cache.pop(uuid, None)
