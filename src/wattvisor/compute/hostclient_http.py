"""The controller's side of the seam for a host run by ``wattvisor agent``: HTTP(S).

Each call is ``POST <agent>/v1/host/<method>`` (:mod:`wattvisor.compute.hostclient_wire`)
signed with the cluster's controller token (``Authorization: Bearer``), over one
pooled connection per agent. Failures come back as the host error the agent raised
(same type, same message); an agent that cannot be reached, or answers out of turn,
is a :class:`~wattvisor.host.driver.HostError` naming the agent's URL.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from wattvisor.compute.hostclient import (
    HostFacts,
    HostOutcomeUnknown,
    IncomingShares,
    InterfaceAttachment,
    MetadataUpdate,
    MigrationEndpoint,
    SpawnFlavor,
    SpawnRequest,
    SpawnResult,
    VolumeAttachment,
)
from wattvisor.compute.hostclient_wire import (
    HOST_ERROR_STATUS,
    WIRE_TABLE,
    WireError,
    decode_error,
)
from wattvisor.energy.snapshot import EnergySnapshot, PowerPoint
from wattvisor.host.console_log import ConsoleLog
from wattvisor.host.driver import HostError
from wattvisor.host.live_migration import MigrationOrder, MigrationProgress, MigrationResult
from wattvisor.host.networks import NetworkSpec
from wattvisor.host.tunnels import TunnelSpec, TunnelState

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
STATE_TIMEOUT_S = 5.0
"""``state`` answers the host listing: a host that does not answer soon is down."""


_tls_contexts: dict[Path | None, ssl.SSLContext] = {}
_tls_lock = threading.Lock()


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """One TLS context per CA file for every agent client of the process: making one
    loads the whole CA bundle (about 60 ms of CPU measured here), which at a thousand
    hosts was a minute of a controller's CPU spent opening their clients. A context is
    safe to share between connections and threads once made; the CA file is read once
    per process (a new bundle takes a restart)."""
    with _tls_lock:
        context = _tls_contexts.get(ca_file)
        if context is None:
            context = (
                ssl.create_default_context(cafile=str(ca_file))
                if ca_file is not None
                else httpx.create_ssl_context()
            )
            _tls_contexts[ca_file] = context
        return context


class HttpHostClient:
    """Implements :class:`wattvisor.compute.hostclient.HostClient` by calling an agent."""

    def __init__(
        self,
        url: str,
        token: Callable[[], str],
        *,
        timeout_s: float = 120.0,
        ca_file: Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=self.url,
            verify=tls_context(ca_file),
            timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
            transport=transport,
            headers={"Content-Type": "application/json"},
        )

    @property
    def uri(self) -> str:
        return self.url

    @property
    def pushes_energy(self) -> bool:
        """An agent pushes its samples to the controllers (``wattvisor.agent.energy_push``)."""
        return True

    def _call(self, method: str, *, within_s: float | None = None, **kwargs: Any) -> Any:
        wire = WIRE_TABLE[method]
        if within_s is None:
            extra = kwargs.get(wire.timeout_extra_s, 0.0) if wire.timeout_extra_s else 0.0
            within_s = self.timeout_s + float(extra)
        try:
            body = wire.encode_arguments(kwargs)
            response = self._http.post(
                f"/v1/host/{method}",
                content=body,
                headers={"Authorization": f"Bearer {self._token()}"},
                timeout=httpx.Timeout(within_s, connect=CONNECT_TIMEOUT_S),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # No connection, so the request never reached the agent: nothing was done.
            raise HostError(
                f"host agent {self.url} did not answer {method} "
                f"({type(exc).__name__}: {exc or 'no detail'})"
            ) from exc
        except httpx.HTTPError as exc:
            raise HostOutcomeUnknown(
                f"host agent {self.url} gave no answer to {method}, which it may have "
                f"carried out in part or in full ({type(exc).__name__}: {exc or 'no detail'})"
            ) from exc
        if response.status_code == 200:
            try:
                return wire.decode_result(response.content)
            except WireError as exc:
                raise HostError(f"host agent {self.url}: {exc}") from exc
        try:
            error = json.loads(response.content).get("error")
        except (ValueError, AttributeError):
            error = None
        if response.status_code == HOST_ERROR_STATUS and error is not None:
            raise decode_error(error, self.url)
        message = error.get("message") if isinstance(error, dict) else None
        raise HostError(
            f"host agent {self.url} refused {method} with HTTP {response.status_code}: "
            f"{message if isinstance(message, str) else response.text[:300]}"
        )

    # -- the protocol --------------------------------------------------------------------

    def facts(self) -> HostFacts:
        result: HostFacts = self._call("facts")
        return result

    def state(self) -> str:
        """``up`` when the agent answers and its libvirt does; else ``down: <why>``."""
        try:
            answer: str = self._call("state", within_s=STATE_TIMEOUT_S)
        except HostError as exc:
            log.warning("%s", exc)
            return "down: agent does not answer"
        return answer

    def domain_exists(self, domain_name: str) -> bool:
        result: bool = self._call("domain_exists", domain_name=domain_name)
        return result

    def domain_states(self) -> dict[str, str]:
        result: dict[str, str] = self._call("domain_states")
        return result

    def spawn(self, request: SpawnRequest) -> SpawnResult:
        result: SpawnResult = self._call("spawn", request=request)
        return result

    def stop(self, domain_name: str, timeout_s: float) -> None:
        self._call("stop", domain_name=domain_name, timeout_s=timeout_s)

    def start(self, domain_name: str) -> None:
        self._call("start", domain_name=domain_name)

    def update_metadata(self, domain_name: str, update: MetadataUpdate) -> None:
        self._call("update_metadata", domain_name=domain_name, update=update)

    def resize(self, domain_name: str, flavor: SpawnFlavor, stop_timeout_s: float) -> str:
        result: str = self._call(
            "resize", domain_name=domain_name, flavor=flavor, stop_timeout_s=stop_timeout_s
        )
        return result

    def delete(self, server_uuid: str, domain_name: str) -> None:
        self._call("delete", server_uuid=server_uuid, domain_name=domain_name)

    def create_volume(self, volume_id: str, size_gb: int, fmt: str) -> str:
        result: str = self._call("create_volume", volume_id=volume_id, size_gb=size_gb, fmt=fmt)
        return result

    def delete_volume(self, path: str) -> None:
        self._call("delete_volume", path=path)

    def attach_volume(self, domain_name: str, volume: VolumeAttachment) -> None:
        self._call("attach_volume", domain_name=domain_name, volume=volume)

    def attach_interface(self, domain_name: str, interface: InterfaceAttachment) -> None:
        self._call("attach_interface", domain_name=domain_name, interface=interface)

    def detach_by_alias(self, domain_name: str, alias: str) -> None:
        self._call("detach_by_alias", domain_name=domain_name, alias=alias)

    def console_log(
        self, server_uuid: str, *, lines: int | None, cursor: str | None, max_bytes: int
    ) -> ConsoleLog:
        result: ConsoleLog = self._call(
            "console_log", server_uuid=server_uuid, lines=lines, cursor=cursor,
            max_bytes=max_bytes,
        )  # fmt: skip
        return result

    def energy_source(self) -> str:
        result: str = self._call("energy_source")
        return result

    def energy_snapshot(self) -> EnergySnapshot | None:
        result: EnergySnapshot | None = self._call("energy_snapshot")
        return result

    def vm_history(self, server_uuid: str) -> list[PowerPoint]:
        result: list[PowerPoint] = self._call("vm_history", server_uuid=server_uuid)
        return result

    def project_history(self, project: str) -> list[PowerPoint]:
        result: list[PowerPoint] = self._call("project_history", project=project)
        return result

    def host_history(self) -> list[PowerPoint]:
        result: list[PowerPoint] = self._call("host_history")
        return result

    def migration_endpoint(self) -> MigrationEndpoint:
        result: MigrationEndpoint = self._call("migration_endpoint")
        return result

    def prepare_incoming(self, network: NetworkSpec | None) -> None:
        self._call("prepare_incoming", network=network)

    def prepare_incoming_shares(self, shares: IncomingShares) -> None:
        self._call("prepare_incoming_shares", shares=shares)

    def plug_incoming_shares(self, shares: IncomingShares) -> list[str]:
        result: list[str] = self._call("plug_incoming_shares", shares=shares)
        return result

    def release_incoming_shares(self, domain_name: str) -> None:
        self._call("release_incoming_shares", domain_name=domain_name)

    def tunnel_up(self, spec: TunnelSpec) -> TunnelState:
        result: TunnelState = self._call("tunnel_up", spec=spec)
        return result

    def tunnel_down(self, migration_id: str) -> TunnelState | None:
        result: TunnelState | None = self._call("tunnel_down", migration_id=migration_id)
        return result

    def tunnels(self) -> list[TunnelState]:
        result: list[TunnelState] = self._call("tunnels")
        return result

    def migrate_out(self, order: MigrationOrder, timeout_s: float) -> MigrationResult:
        result: MigrationResult = self._call("migrate_out", order=order, timeout_s=timeout_s)
        return result

    def migration_progress(self, domain_name: str) -> MigrationProgress | None:
        result: MigrationProgress | None = self._call(
            "migration_progress", domain_name=domain_name, within_s=STATE_TIMEOUT_S
        )
        return result

    def abort_migration(self, domain_name: str) -> bool:
        result: bool = self._call("abort_migration", domain_name=domain_name)
        return result

    def close(self) -> None:
        self._http.close()
