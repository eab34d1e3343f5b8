"""The Prometheus scrape job for wattvisor exporters, and ``file_sd`` target files.

VM series carry ``instance`` = the VM's UUID, which collides with the label
Prometheus attaches to every target. Without ``honor_labels: true`` Prometheus
renames the exporter's label to ``exported_instance``, so the job must set it;
host-level series have no ``instance`` of their own and still get the target's.
JSON is valid YAML, so the result can be written as a config file or a
``file_sd`` entry without a YAML library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wattvisor.energy.atomic_file import replace_contents

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def prometheus_scrape_job(
    targets: Sequence[str],
    *,
    job_name: str = "wattvisor",
    scrape_interval_s: float = 2.0,
    metrics_path: str = "/metrics",
    labels: Mapping[str, str] | None = None,
    credentials_file: Path | None = None,
) -> dict[str, Any]:
    """One ``scrape_configs`` entry for the given ``host:port`` targets.

    ``credentials_file`` is the file holding the token of ``metrics.bearer_token_file``
    (a copy Prometheus' user can read); Prometheus sends it as ``Authorization: Bearer``.
    """
    if not targets:
        raise ValueError("a scrape job needs at least one 'host:port' target")
    seconds = f"{scrape_interval_s:g}s"
    static: dict[str, Any] = {"targets": list(targets)}
    if labels:
        static["labels"] = dict(labels)
    job: dict[str, Any] = {
        "job_name": job_name,
        "honor_labels": True,
        "scrape_interval": seconds,
        "scrape_timeout": seconds,
        "metrics_path": metrics_path,
        "static_configs": [static],
    }
    if credentials_file is not None:
        job["authorization"] = {"type": "Bearer", "credentials_file": str(credentials_file)}
    return job


@dataclass(frozen=True, slots=True)
class TargetGroup:
    """One ``file_sd`` entry: exporters (``host:port``) and labels added to their series."""

    targets: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)


def write_file_sd(path: Path, groups: Sequence[TargetGroup]) -> None:
    """Write a Prometheus ``file_sd_configs`` file atomically (Prometheus rereads it on change).

    Label names must be valid Prometheus label names; a bad one raises before
    anything is written.
    """
    for group in groups:
        for target in group.targets:
            if ":" not in target:
                raise ValueError(f"file_sd target {target!r} is not 'host:port'")
        for name in group.labels:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(
                    f"file_sd label name {name!r} is not accepted; use [a-zA-Z_][a-zA-Z0-9_]* "
                    "without a leading '__'"
                )
    data = [{"targets": list(g.targets), "labels": dict(g.labels)} for g in groups]
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_contents(
        str(path), str(path.with_name(f".{path.name}.tmp")), json.dumps(data, indent=1).encode()
    )


@dataclass(frozen=True, slots=True)
class Deployment:
    """What a Prometheus needs to know to scrape one wattvisor deployment."""

    api_url: str
    """The controllers' API (behind one address), e.g. ``http://ctl:8774``."""
    token_file: Path
    """Where Prometheus reads the API token (an admin's, or a member's with ``member``)."""
    member: bool = False
    metrics_token_file: Path | None = None
    """Where Prometheus reads the token of the agents' ``/metrics`` (None: none asked)."""
    agent_ca_file: Path | None = None
    """The CA bundle the agents' HTTPS certificates are checked against."""
    local_metrics: str | None = None
    """``host:port`` of ``wattvisor up``'s own ``/metrics`` (None: a fleet, no such job)."""
    scrape_interval_s: float = 15.0
    refresh_interval_s: float = 30.0


def _seconds(value: float) -> str:
    return f"{value:g}s"


def deployment_scrape_config(deployment: Deployment) -> dict[str, Any]:
    """A complete Prometheus configuration for ``deployment``.

    Jobs: ``wattvisor-agents`` (every joined agent's ``/metrics``, found through the
    API), ``wattvisor-local`` (``wattvisor up``'s listener), ``wattvisor-service`` (the
    controllers' service metrics) and ``wattvisor-vm-exporters`` (exporters inside
    ACTIVE VMs). A member's configuration has only the last: the API lists that
    member's own project's targets. The VM job keeps ``honor_labels`` off, so a guest
    cannot claim another server's ``instance`` or ``project``: the target's labels win.
    """
    parts = urlsplit(deployment.api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"API address {deployment.api_url!r} is not accepted; give http(s)://host:port"
        )
    base = deployment.api_url.rstrip("/")
    interval = _seconds(deployment.scrape_interval_s)
    timeout = _seconds(min(deployment.scrape_interval_s, 10.0))
    api_auth = {"type": "Bearer", "credentials_file": str(deployment.token_file)}

    def discovery(path: str) -> list[dict[str, Any]]:
        return [{
            "url": f"{base}{path}", "refresh_interval": _seconds(deployment.refresh_interval_s),
            "authorization": dict(api_auth),
        }]  # fmt: skip

    jobs: list[dict[str, Any]] = []
    if not deployment.member:
        agents: dict[str, Any] = {
            "job_name": "wattvisor-agents", "honor_labels": True,
            "scrape_interval": interval, "scrape_timeout": timeout,
            "http_sd_configs": discovery("/v1/prometheus/agents"),
        }  # fmt: skip
        if deployment.metrics_token_file is not None:
            agents["authorization"] = {
                "type": "Bearer", "credentials_file": str(deployment.metrics_token_file)
            }  # fmt: skip
        if deployment.agent_ca_file is not None:
            agents["tls_config"] = {"ca_file": str(deployment.agent_ca_file)}
        jobs.append(agents)
        if deployment.local_metrics is not None:
            jobs.append(
                prometheus_scrape_job(
                    [deployment.local_metrics], job_name="wattvisor-local",
                    scrape_interval_s=deployment.scrape_interval_s,
                    credentials_file=deployment.metrics_token_file,
                )
            )  # fmt: skip
            jobs[-1]["scrape_timeout"] = timeout
        jobs.append({
            "job_name": "wattvisor-service", "honor_labels": True,
            "scrape_interval": interval, "scrape_timeout": timeout,
            "scheme": parts.scheme,
            "metrics_path": f"{parts.path.rstrip('/')}/v1/prometheus/metrics",
            "authorization": dict(api_auth),
            "static_configs": [{"targets": [parts.netloc]}],
        })  # fmt: skip
    jobs.append({
        "job_name": "wattvisor-vm-exporters", "honor_labels": False,
        "scrape_interval": interval, "scrape_timeout": timeout,
        "http_sd_configs": discovery("/v1/prometheus/targets"),
    })  # fmt: skip
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": timeout},
        "scrape_configs": jobs,
    }


def render_config(config: Mapping[str, Any], comments: Sequence[str] = ()) -> str:
    """``config`` as Prometheus reads it: JSON (a subset of YAML) under ``#`` comments."""
    head = "".join(f"# {line}\n" for line in comments)
    return head + json.dumps(config, indent=2) + "\n"
