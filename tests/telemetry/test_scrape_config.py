"""Scrape job and file_sd target files for Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wattvisor.telemetry import TargetGroup, prometheus_scrape_job, write_file_sd


def test_file_sd_lists_targets_with_labels(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "wattvisor.json"
    write_file_sd(path, [TargetGroup(("10.0.0.5:9464", "10.0.0.6:9464"), {"region": "eu"})])
    assert json.loads(path.read_text()) == [
        {"targets": ["10.0.0.5:9464", "10.0.0.6:9464"], "labels": {"region": "eu"}}
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == ["wattvisor.json"]


@pytest.mark.parametrize(
    ("group", "message"),
    [
        (TargetGroup(("10.0.0.5",)), "not 'host:port'"),
        (TargetGroup(("h:1",), {"bad-name": "x"}), "label name 'bad-name'"),
        (TargetGroup(("h:1",), {"__address__": "x"}), "label name '__address__'"),
    ],
)
def test_bad_file_sd_input_writes_nothing(tmp_path: Path, group: TargetGroup, message: str) -> None:
    path = tmp_path / "wattvisor.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match=message):
        write_file_sd(path, [group])
    assert path.read_text() == "[]"


def test_scrape_job_keeps_the_vm_instance_label() -> None:
    job = prometheus_scrape_job(["10.0.0.5:8774"], scrape_interval_s=2)
    assert job["honor_labels"] is True
    assert job["static_configs"] == [{"targets": ["10.0.0.5:8774"]}]
    with pytest.raises(ValueError, match="host:port"):
        prometheus_scrape_job([])


def test_scrape_job_sends_the_metrics_token_from_a_file(tmp_path: Path) -> None:
    token = tmp_path / "metrics.token"
    job = prometheus_scrape_job(["10.0.0.5:9464"], credentials_file=token)
    assert job["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    assert "authorization" not in prometheus_scrape_job(["10.0.0.5:9464"])
