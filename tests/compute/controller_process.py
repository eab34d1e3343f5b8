"""A controller's compute service as a process of its own, for the tests that kill one.

``python controller_process.py SETTINGS_JSON [HANG_AT]`` builds the compute service on
the settings' PostgreSQL store, drives the shared host (a real libvirtd:
``test:///default`` state would be this process's alone), runs the task
worker and the power-sync duty, and prints ``ready``. With ``HANG_AT`` set, every
spawn on this controller stops for good at that point, as a controller killed there
would: ``before`` right before the host call (the host and domain name are recorded),
``after`` right after it (the domain is defined and running), printing
``hung <server uuid>`` so the test knows when to kill. Exits after ``LIFETIME_S``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from wattvisor.compute import Compute, HostClient, LocalHostClient
from wattvisor.compute.hostclient import SpawnRequest, SpawnResult
from wattvisor.config import load_settings
from wattvisor.host.driver import HostDriver
from wattvisor.placement import Placement
from wattvisor.store import make_engine

LIFETIME_S = 300.0
HANG_S = 600.0


class _Hanging:
    """A host client whose spawn stops for good at ``hang_at``."""

    def __init__(self, inner: LocalHostClient, hang_at: str) -> None:
        self._inner = inner
        self._hang_at = hang_at

    def spawn(self, request: SpawnRequest) -> SpawnResult:
        if self._hang_at == "before":
            print(f"hung {request.server_uuid}", flush=True)
            time.sleep(HANG_S)
        result = self._inner.spawn(request)
        print(f"hung {request.server_uuid}", flush=True)
        time.sleep(HANG_S)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def main(raw_settings: str, hang_at: str) -> None:
    settings = load_settings(**json.loads(raw_settings))
    engine = make_engine(settings.store_url)

    compute = Compute.build(engine, Placement(engine), settings)
    # Every controller drives the one shared libvirtd itself (in a fleet it would call
    # the host's agent); the host keeps its provider uuid, so this re-registers it.
    uri = settings.host.libvirt_uri
    client: HostClient = LocalHostClient(HostDriver(settings.host, settings.data_dir, uri=uri))
    if hang_at:
        client = _Hanging(client, hang_at)  # type: ignore[arg-type,assignment]
    compute.hosts.add(client, name="fleet-host")
    compute.servers.recover()
    compute.start(settings.compute.power_sync_interval_s)
    print(f"ready {compute.servers.worker_id}", flush=True)
    time.sleep(LIFETIME_S)
    compute.close()
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
