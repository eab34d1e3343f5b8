"""Prometheus discovery: every joined agent's ``/metrics``, and exporters inside VMs.

Agents: one target per joined host, written as a ``file_sd`` file
(``history.prometheus_file_sd``) and served for ``http_sd_configs``
(``GET /v1/prometheus/agents``), so one Prometheus scrapes every agent.

VM exporters: a server whose metadata, flavor extra spec or image property sets
``prometheus_exporter_port=<port>`` (first of those that sets it) is a target while it
is ACTIVE, at its first address (IPv4 before IPv6, IPv6 in brackets), labelled with
its ``instance`` uuid, ``name``, ``project`` and ``flavor`` (``host`` for admins only).
The list is read from the store each time, never kept in memory, so it is the same
on every controller and right after a restart; it is written as a ``file_sd`` file
(``history.prometheus_vm_file_sd``) and served at ``GET /v1/prometheus/targets``.

Each file is replaced atomically (temporary file, fsync, rename) and only when its
content changed: Prometheus watches it and re-reads on each change. One controller
of a fleet writes them at a time (the ``prometheus-file-sd`` duty).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Engine, Table, select

from wattvisor.scheduler.image_property_names import (
    EXPORTER_PORT_RANGE,
    PROMETHEUS_EXPORTER_PORT_KEY,
    SERVICE_TEMPLATE_KEY,
    SERVICE_TEMPLATE_RANGE,
)
from wattvisor.scheduler.validation import integer_setting
from wattvisor.store import read_transaction
from wattvisor.store.compute_tables import (
    FlavorRow,
    HostRow,
    ImageRow,
    ServerAddressRow,
    ServerRow,
)
from wattvisor.store.duties import single_duty
from wattvisor.store.trust_tables import HostAgentRow
from wattvisor.telemetry.service_metrics import ServiceServer

log = logging.getLogger(__name__)

_hosts = cast(Table, HostRow.__table__)
_agents = cast(Table, HostAgentRow.__table__)
_servers = cast(Table, ServerRow.__table__)
_flavors = cast(Table, FlavorRow.__table__)
_images = cast(Table, ImageRow.__table__)
_addresses = cast(Table, ServerAddressRow.__table__)
FILE_SD_DUTY = "prometheus-file-sd"


def _target(address: str) -> tuple[str, str] | None:
    """``(host:port, scheme)`` of an agent address such as ``https://h:8775``."""
    try:
        parts = urlsplit(address if "://" in address else f"http://{address}")
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"{host}:{port}", parts.scheme


def agent_targets(engine: Engine) -> list[dict[str, Any]]:
    """The http_sd/file_sd target groups of every joined agent, in a stable order."""
    with read_transaction(engine) as conn:
        rows = conn.execute(
            select(_hosts.c.provider_uuid, _hosts.c.name, _agents.c.addresses)
            .join(_agents, _agents.c.host_uuid == _hosts.c.provider_uuid)
            .order_by(_hosts.c.name, _hosts.c.provider_uuid)
        ).all()
    groups = []
    for uuid, name, addresses in rows:
        for address in addresses or []:
            found = _target(str(address))
            if found is None:
                continue
            target, scheme = found
            groups.append({
                "targets": [target],
                "labels": {
                    "host_name": name, "host_uuid": uuid,
                    "__scheme__": scheme, "__metrics_path__": "/metrics",
                },
            })  # fmt: skip
            break  # one target per host: the first address it can be scraped at
    return groups


def _setting(key: str, bounds: tuple[int, int], *sources: Mapping[str, Any] | None) -> int | None:
    """The value of ``key`` from the first source that sets it (None: unset or unusable)."""
    for source in sources:
        if source and key in source:
            value = integer_setting(source[key], bounds)
            if value is None:
                log.warning("ignoring %s=%r: not an integer in %s", key, source[key], bounds)
            return value
    return None


def exporter_port(
    metadata: Mapping[str, Any] | None,
    extra_specs: Mapping[str, Any] | None,
    properties: Mapping[str, Any] | None,
) -> int | None:
    """The port of the server's exporter: server metadata, else flavor, else image."""
    return _setting(
        PROMETHEUS_EXPORTER_PORT_KEY, EXPORTER_PORT_RANGE, metadata, extra_specs, properties
    )


def service_template(
    metadata: Mapping[str, Any] | None, extra_specs: Mapping[str, Any] | None
) -> int | None:
    """The server's service template id: server metadata, else flavor (None: unset)."""
    return _setting(SERVICE_TEMPLATE_KEY, SERVICE_TEMPLATE_RANGE, metadata, extra_specs)


def _server_rows(engine: Engine, project: str | None, active_only: bool) -> list[Any]:
    query = (
        select(
            _servers.c.uuid, _servers.c.name, _servers.c.project, _servers.c.status,
            _servers.c.server_metadata, _servers.c.flavor_id, _servers.c.image_id,
            _flavors.c.name.label("flavor_name"), _flavors.c.extra_specs,
            _images.c.name.label("image_name"), _images.c.properties,
            _hosts.c.name.label("host_name"),
        )
        .select_from(
            _servers.outerjoin(_flavors, _flavors.c.id == _servers.c.flavor_id)
            .outerjoin(_images, _images.c.id == _servers.c.image_id)
            .outerjoin(_hosts, _hosts.c.provider_uuid == _servers.c.host_uuid)
        )
        .order_by(_servers.c.project, _servers.c.name, _servers.c.uuid)
    )  # fmt: skip
    if active_only:
        query = query.where(_servers.c.status == "ACTIVE")
    else:
        query = query.where(_servers.c.status != "DELETED")
    if project is not None:
        query = query.where(_servers.c.project == project)
    with read_transaction(engine) as conn:
        return list(conn.execute(query).all())


def _first_addresses(engine: Engine, uuids: list[str], family: str) -> dict[str, str]:
    """Each server's scrape host on its first network: the address of ``family``
    (``ipv4`` or ``ipv6``), else the other one; IPv6 in brackets."""
    found: dict[str, str] = {}
    with read_transaction(engine) as conn:
        for start in range(0, len(uuids), 500):
            rows = conn.execute(
                select(_addresses.c.server_uuid, _addresses.c.ipv4, _addresses.c.ipv6)
                .where(_addresses.c.server_uuid.in_(uuids[start : start + 500]))
                .order_by(_addresses.c.network, _addresses.c.slot)
            ).all()
            for uuid, ipv4, ipv6 in rows:
                if uuid in found:
                    continue
                v4 = str(ipv4) if ipv4 else None
                v6 = f"[{ipv6}]" if ipv6 else None
                chosen = (v6 or v4) if family == "ipv6" else (v4 or v6)
                if chosen is not None:
                    found[uuid] = chosen
    return found


def vm_targets(
    engine: Engine, *, project: str | None = None, admin: bool = False, family: str = "ipv4"
) -> list[dict[str, Any]]:
    """The http_sd/file_sd target groups of every ACTIVE server with an exporter port.

    ``project`` limits the list to one project (a member's view); ``admin`` adds the
    ``host`` label; ``family`` picks the address (``history.prometheus_vm_address``).
    A server without an address cannot be scraped and is left out.
    """
    wanted: list[tuple[Any, int]] = []
    for row in _server_rows(engine, project, active_only=True):
        port = exporter_port(row.server_metadata, row.extra_specs, row.properties)
        if port is not None:
            wanted.append((row, port))
    hosts = _first_addresses(engine, [row.uuid for row, _port in wanted], family)
    groups = []
    for row, port in wanted:
        host = hosts.get(row.uuid)
        if host is None:
            continue
        labels = {
            "instance": row.uuid, "name": row.name, "project": row.project,
            "flavor": row.flavor_name or row.flavor_id,
        }  # fmt: skip
        if admin:
            labels["host"] = row.host_name or ""
        groups.append({"targets": [f"{host}:{port}"], "labels": labels})
    return groups


def service_servers(engine: Engine) -> list[ServiceServer]:
    """What the service metrics say about every server that is not deleted."""
    return [
        ServiceServer(
            uuid=row.uuid, name=row.name, project=row.project,
            flavor=row.flavor_name or row.flavor_id, image=row.image_name or row.image_id,
            host=row.host_name or "",
            service_template=service_template(row.server_metadata, row.extra_specs),
        )
        for row in _server_rows(engine, None, active_only=False)
    ]  # fmt: skip


def write_file_sd(engine: Engine, path: Path) -> bool:
    """Write the agents' target list to ``path`` if it changed; True when replaced."""
    return _write_if_changed(path, agent_targets(engine))


def write_vm_file_sd(engine: Engine, path: Path, family: str = "ipv4") -> bool:
    """Write the VM exporters' target list (admin view) to ``path`` if it changed."""
    return _write_if_changed(path, vm_targets(engine, admin=True, family=family))


def write_file_sd_once(
    engine: Engine, agents_path: Path | None, vms_path: Path | None, family: str = "ipv4"
) -> bool | None:
    """Write both files if this process holds the duty (None: another controller does)."""
    with single_duty(engine, FILE_SD_DUTY) as duty:
        if not duty:
            return None
        changed = False
        if agents_path is not None:
            changed |= write_file_sd(engine, agents_path)
        if vms_path is not None:
            changed |= write_vm_file_sd(engine, vms_path, family)
        return changed


class FileSdWriter:
    """Keeps the file_sd files current: a thread that rewrites them every ``interval_s``.

    Derived from the store at each round, so a server that became ACTIVE, stopped or
    was deleted on any controller shows in the file within one interval.
    """

    def __init__(
        self,
        engine: Engine,
        agents_path: Path | None,
        vms_path: Path | None,
        interval_s: float,
        *,
        family: str = "ipv4",
        on_round: Callable[[bool | None], None] | None = None,
    ) -> None:
        self.engine = engine
        self.family = family
        self.agents_path = agents_path
        self.vms_path = vms_path
        self.interval_s = interval_s
        self._on_round = on_round
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None or (self.agents_path is None and self.vms_path is None):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wattvisor-file-sd", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            result: bool | None = None
            try:
                result = write_file_sd_once(
                    self.engine, self.agents_path, self.vms_path, self.family
                )
            except Exception:
                log.exception("writing the Prometheus file_sd files failed; retrying")
            if self._on_round is not None:
                self._on_round(result)
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


def _write_if_changed(path: Path, groups: list[dict[str, Any]]) -> bool:
    text = json.dumps(groups, indent=2, sort_keys=True) + "\n"
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True
