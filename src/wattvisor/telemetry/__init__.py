"""Telemetry: the Prometheus exporter of wattvisor's energy figures."""

from __future__ import annotations

from wattvisor.telemetry.exporter import (
    EnergyCollector,
    MetricsApp,
    MetricsServer,
    SnapshotProvider,
    make_metrics_app,
    make_metrics_registry,
    make_metrics_wsgi_app,
    serve_metrics,
)
from wattvisor.telemetry.scrape_config import TargetGroup, prometheus_scrape_job, write_file_sd

__all__ = [
    "EnergyCollector",
    "MetricsApp",
    "MetricsServer",
    "SnapshotProvider",
    "TargetGroup",
    "make_metrics_app",
    "make_metrics_registry",
    "make_metrics_wsgi_app",
    "prometheus_scrape_job",
    "serve_metrics",
    "write_file_sd",
]
