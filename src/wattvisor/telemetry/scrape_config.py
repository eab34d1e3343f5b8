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
