"""Service metrics of the controller: which servers exist and how they were deployed.

``wattvisor_server_info{instance, name, project, flavor, image, host} 1`` joins any VM
series to the server's names; ``wattvisor_server_service_template{instance}`` is the
server's ``service_template`` id (server metadata, else flavor extra spec), -1 when it
has none: COGNIT's ``opennebula_vm_ut_flavours`` under wattvisor's names. That
compatibility name (label ``one_vm_id``) is an opt-in extra (``energy.compat_series``).

The values are checked when saved, so one bad value can never cost the other
servers' series the way an ``Integer()`` that raises mid-collection does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

NO_SERVICE_TEMPLATE = -1


@dataclass(frozen=True, slots=True)
class ServiceServer:
    """One server as the service metrics show it."""

    uuid: str
    name: str
    project: str
    flavor: str
    image: str
    host: str
    service_template: int | None


class ServiceCollector(Collector):
    """Reads the servers at each scrape (from the store: the same on every controller)."""

    def __init__(
        self, servers: Callable[[], Iterable[ServiceServer]], *, compat_series: bool = False
    ) -> None:
        self._servers = servers
        self._compat = compat_series

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        servers = list(self._servers())
        info = GaugeMetricFamily(
            "wattvisor_server_info",
            "A server known to the controllers (always 1): names to join VM series with.",
            labels=["instance", "name", "project", "flavor", "image", "host"],
        )
        template = GaugeMetricFamily(
            "wattvisor_server_service_template",
            "The service template a server was deployed from (service_template of its "
            "metadata or flavor); -1 when it has none.",
            labels=["instance"],
        )
        for server in servers:
            info.add_metric(
                [server.uuid, server.name, server.project, server.flavor, server.image,
                 server.host],
                1.0,
            )  # fmt: skip
            template.add_metric([server.uuid], float(_template(server)))
        yield info
        yield template
        if self._compat:
            flavours = GaugeMetricFamily(
                "opennebula_vm_ut_flavours",
                "OpenNebula-compatible name of wattvisor_server_service_template.",
                labels=["one_vm_id"],
            )
            for server in servers:
                flavours.add_metric([server.uuid], float(_template(server)))
            yield flavours


def _template(server: ServiceServer) -> int:
    return NO_SERVICE_TEMPLATE if server.service_template is None else server.service_template


def make_service_registry(
    servers: Callable[[], Iterable[ServiceServer]], *, compat_series: bool = False
) -> CollectorRegistry:
    """A registry holding only the service series (no process/GC defaults)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(servers, compat_series=compat_series))
    return registry
