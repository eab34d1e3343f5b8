"""Prometheus discovery of the fleet's agents: one target per joined host's ``/metrics``.

The same list is written as a ``file_sd`` file (``history.prometheus_file_sd``) and
served for ``http_sd_configs`` (``GET /v1/prometheus/agents``), so one Prometheus
scrapes every agent. The file is replaced atomically (temporary file, fsync, rename)
and only when its content changed: Prometheus watches it and re-reads on each change.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Engine, Table, select

from wattvisor.store import read_transaction
from wattvisor.store.compute_tables import HostRow
from wattvisor.store.trust_tables import HostAgentRow

_hosts = cast(Table, HostRow.__table__)
_agents = cast(Table, HostAgentRow.__table__)


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


def write_file_sd(engine: Engine, path: Path) -> bool:
    """Write the target list to ``path`` if it changed; True when the file was replaced."""
    text = json.dumps(agent_targets(engine), indent=2, sort_keys=True) + "\n"
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
