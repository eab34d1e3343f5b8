"""Small MaxMind-format databases made by the tests themselves (``mmdb-writer``): the
City layout (``location.latitude`` / ``location.longitude``) over a few public networks,
IPv4 and IPv6 in one file as GeoLite2-City has them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

from wattvisor.geo import GeoDatabase, Located

LONDON_V4 = "81.2.69.0/24"
LINKOPING_V4 = "89.160.20.0/24"
TOKYO_V6 = "2001:218::/32"
PLACES: dict[str, tuple[float, float]] = {
    LONDON_V4: (51.5142, -0.0931),
    LINKOPING_V4: (58.4167, 15.6167),
    TOKYO_V6: (35.685, 139.7514),
}
"""Network -> (latitude, longitude); the pairs the lookup must give for their addresses."""


def write_geo_database(
    path: Path,
    places: Mapping[str, tuple[float, float]] = PLACES,
    *,
    extra: Mapping[str, object] | None = None,
) -> Path:
    """A City-layout database at ``path`` placing each network of ``places``; ``extra``
    adds networks with records of any shape (a record without a location, say)."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    for network, (latitude, longitude) in places.items():
        writer.insert_network(
            IPSet([network]), {"location": {"latitude": latitude, "longitude": longitude}}
        )
    for network, record in (extra or {}).items():
        writer.insert_network(IPSet([network]), record)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.to_db_file(str(path))
    return path


def pair(network: str) -> str:
    """The ``latitude,longitude`` text the lookup gives for an address of ``network``."""
    latitude, longitude = PLACES[network]
    return f"{latitude!r},{longitude!r}"


class FailingGeoDatabase(GeoDatabase):
    """A database whose every lookup raises: what a bug or an unexpected reader error
    would do. The controller must still register hosts and answer heartbeats."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent/failing.mmdb"))
        self.calls = 0

    def locate(self, addresses: Iterable[str]) -> Located:
        self.calls += 1
        raise RuntimeError("reader exploded")
