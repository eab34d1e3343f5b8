"""Telemetry: the Prometheus exporter of wattvisor's energy figures and its listener."""

from __future__ import annotations

from wattvisor.telemetry.exporter import (
    EnergyCollector,
    SnapshotProvider,
    make_metrics_registry,
)
from wattvisor.telemetry.host_info import HOST_INFO, HostInfoCollector, HostPlace
from wattvisor.telemetry.listener import (
    MetricsListener,
    MetricsListenerError,
    make_metrics_wsgi_app,
    read_bearer_token,
    serve_metrics,
)
from wattvisor.telemetry.scrape_config import TargetGroup, prometheus_scrape_job, write_file_sd

__all__ = [
    "HOST_INFO",
    "EnergyCollector",
    "HostInfoCollector",
    "HostPlace",
    "MetricsListener",
    "MetricsListenerError",
    "SnapshotProvider",
    "TargetGroup",
    "make_metrics_registry",
    "make_metrics_wsgi_app",
    "prometheus_scrape_job",
    "read_bearer_token",
    "serve_metrics",
    "write_file_sd",
]
