"""A volume request that fails half-way leaves nothing behind on the host or in the store.

The store is made to refuse a write with a trigger (real SQLite and PostgreSQL); the
host is libvirt's test driver, whose storage pools keep their volumes in memory.
"""

from __future__ import annotations

import threading

import libvirt
import pytest
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

from compute.principals import ALICE
from compute.store_faults import MESSAGE, refused_writes
from wattvisor.compute import Compute, LocalHostClient
from wattvisor.compute.devices import CREATING
from wattvisor.store import write_transaction
from wattvisor.store.compute_tables import VolumeRow


def _client(compute: Compute) -> LocalHostClient:
    client = compute.hosts.client(compute.hosts.default_host())
    assert isinstance(client, LocalHostClient)
    return client


def _host_volumes(compute: Compute) -> set[str]:
    client = _client(compute)
    conn = libvirt.open(client.uri)
    try:
        pool = conn.storagePoolLookupByName(client.volume_pool)
        pool.refresh(0)
        return set(pool.listVolumes())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return set()
        raise
    finally:
        conn.close()


def _rows(compute: Compute) -> int:
    from sqlalchemy import func, select

    with compute.devices.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(VolumeRow)).scalar_one())


def test_a_volume_whose_row_cannot_be_written_is_never_made_on_the_host(
    compute: Compute,
) -> None:
    before = _host_volumes(compute)
    with (
        refused_writes(compute.devices.engine, "volumes", "INSERT", "1 = 1"),
        pytest.raises(DBAPIError, match=MESSAGE),
    ):
        compute.devices.create_volume(ALICE, "data", 1, "qcow2")
    assert _host_volumes(compute) == before
    assert _rows(compute) == 0


def test_a_volume_whose_row_cannot_be_completed_is_removed_from_the_host(
    compute: Compute,
) -> None:
    before = _host_volumes(compute)
    with (
        refused_writes(compute.devices.engine, "volumes", "UPDATE", "NEW.status = 'available'"),
        pytest.raises(DBAPIError, match=MESSAGE),
    ):
        compute.devices.create_volume(ALICE, "data", 1, "raw")
    assert _host_volumes(compute) == before
    assert _rows(compute) == 0
    assert compute.devices.volumes(ALICE) == []


def test_a_volume_create_interrupted_by_a_restart_is_cleaned_up_at_start(
    compute: Compute,
) -> None:
    """A crash between the row and the end of the create: the host volume may exist."""
    volume_id = "0b7c4a9e-6d0e-4b9e-9f1e-7a3c2d1e0f00"
    client = _client(compute)
    before = _host_volumes(compute)
    path = client.create_volume(volume_id, 1, "qcow2")
    from datetime import UTC, datetime

    with write_transaction(compute.devices.engine) as conn:
        conn.execute(
            insert(VolumeRow).values(
                id=volume_id, name="half", project=ALICE.project, size_gb=1, format="qcow2",
                status=CREATING, host_uuid=compute.hosts.default_host(),
                path=f"{volume_id}.qcow2", server_uuid=None, created_at=datetime.now(UTC),
            )
        )  # fmt: skip
    assert compute.devices.volumes(ALICE) == []  # a volume being made is never shown
    assert path.endswith(f"{volume_id}.qcow2") and _host_volumes(compute) > before

    notes = compute.devices.recover()

    assert notes == [f"volume {volume_id}: create interrupted by a restart, removed"]
    assert _host_volumes(compute) == before
    assert _rows(compute) == 0


def test_delete_of_a_volume_waits_for_whoever_holds_the_volume(compute: Compute) -> None:
    """attach, detach and delete of one volume take the same lock."""
    volume = compute.devices.create_volume(ALICE, "data", 1)
    done = threading.Event()

    def delete() -> None:
        compute.devices.delete_volume(ALICE, volume.id)
        done.set()

    with compute.devices.lock_for_volume(volume.id):
        worker = threading.Thread(target=delete)
        worker.start()
        assert not done.wait(0.5)  # cannot finish while the volume is held
        assert [v.id for v in compute.devices.volumes(ALICE)] == [volume.id]
    worker.join(30)
    assert done.is_set()
    assert compute.devices.volumes(ALICE) == []
