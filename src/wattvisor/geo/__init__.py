"""Host geolocation: which of a host's addresses are public, and where a local
MaxMind-format database places them. Nothing here sends an address anywhere."""

from __future__ import annotations

from wattvisor.geo.coordinates import InvalidPair, format_pair, parse_pairs
from wattvisor.geo.database import GeoDatabase, Located
from wattvisor.geo.public_ranges import EXCLUDED_RANGES, excluded_range, public_addresses

__all__ = [
    "EXCLUDED_RANGES",
    "GeoDatabase",
    "InvalidPair",
    "Located",
    "excluded_range",
    "format_pair",
    "parse_pairs",
    "public_addresses",
]
