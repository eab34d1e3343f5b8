"""A host volume deleted by someone else between our lookup and our delete (test driver).

The volume handle the client gets is the real libvirt one; right before its
``delete`` the same volume is deleted for real through another handle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libvirt

from wattvisor.compute import LocalHostClient
from wattvisor.config import HostSettings
from wattvisor.host.driver import HostDriver


class _DeletedFirst:
    def __init__(self, pool: libvirt.virStoragePool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def storageVolLookupByName(self, name: str) -> libvirt.virStorageVol:
        volume = self._pool.storageVolLookupByName(name)
        self._pool.storageVolLookupByName(name).delete(0)  # the other party wins
        return volume


class RacingClient(LocalHostClient):
    racing = False

    def _pool(self) -> libvirt.virStoragePool:
        pool = super()._pool()
        return _DeletedFirst(pool) if self.racing else pool


def test_deleting_a_volume_deleted_meanwhile_succeeds(tmp_path: Path) -> None:
    client = RacingClient(
        HostDriver(HostSettings(virt_type="qemu"), tmp_path, uri="test:///default")
    )
    try:
        path = client.create_volume("5d0c3f8e-0000-4000-8000-000000000001", 1, "raw")
        client.racing = True
        client.delete_volume(path)
        client.racing = False
        assert Path(path).name not in client._pool().listVolumes()
    finally:
        pool = client._pool()
        pool.destroy()
        pool.undefine()
        client.close()
