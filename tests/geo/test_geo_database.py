"""Lookups in a MaxMind-format database the test writes itself (mmdb-writer)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.geo_databases import (
    LINKOPING_V4,
    LONDON_V4,
    PLACES,
    TOKYO_V6,
    pair,
    write_geo_database,
)
from wattvisor.geo import GeoDatabase
from wattvisor.geo.database import NO_DATABASE, NO_PUBLIC_ADDRESS, NOT_IN_DATABASE


@pytest.fixture
def database(tmp_path: Path) -> GeoDatabase:
    return GeoDatabase(write_geo_database(tmp_path / "city.mmdb"))


def test_public_addresses_of_both_families_get_one_pair_each(database: GeoDatabase) -> None:
    located = database.locate(["10.0.0.5", "81.2.69.142", "fe80::1", "2001:218::9", "::1"])
    assert located.pairs == (pair(LONDON_V4), pair(TOKYO_V6))
    assert located.reason is None
    assert located.public == ("81.2.69.142", "2001:218::9")


def test_two_addresses_in_one_place_give_one_pair(database: GeoDatabase) -> None:
    located = database.locate(["81.2.69.1", "81.2.69.2", "89.160.20.112"])
    assert located.pairs == (pair(LONDON_V4), pair(LINKOPING_V4))


def test_private_only_addresses_are_not_looked_up(database: GeoDatabase) -> None:
    located = database.locate(["10.0.0.5", "198.18.0.2", "100.64.1.1", "fd00::1", "2001:db8::1"])
    assert located.pairs == () and located.reason == NO_PUBLIC_ADDRESS


def test_a_public_address_the_database_does_not_know_says_so(database: GeoDatabase) -> None:
    located = database.locate(["8.8.8.8", "10.0.0.5"])
    assert located.pairs == () and located.reason == NOT_IN_DATABASE
    assert located.public == ("8.8.8.8",)


def test_a_known_and_an_unknown_address_give_the_known_pair(database: GeoDatabase) -> None:
    assert database.locate(["8.8.8.8", "81.2.69.7"]).pairs == (pair(LONDON_V4),)


def test_without_a_database_nothing_is_looked_up() -> None:
    located = GeoDatabase(None).locate(["81.2.69.142"])
    assert located.pairs == () and located.reason == NO_DATABASE


def test_a_missing_database_file_is_a_failed_lookup_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.mmdb"
    located = GeoDatabase(missing).locate(["81.2.69.142"])
    assert located.pairs == ()
    assert located.reason is not None and located.reason.startswith("lookup failed: ")
    assert str(missing) in located.reason and "cannot be read" in located.reason


def test_a_corrupt_database_is_a_failed_lookup_not_an_exception(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"\x00not a maxmind database\xff" * 64)
    database = GeoDatabase(corrupt)
    for _ in range(2):  # the failure is remembered for that file, and answered again
        located = database.locate(["81.2.69.142"])
        assert located.pairs == ()
        assert located.reason is not None
        assert located.reason.startswith("lookup failed: ") and "not a MaxMind DB" in located.reason


def test_a_replaced_database_is_read_again_without_a_restart(tmp_path: Path) -> None:
    path = write_geo_database(tmp_path / "city.mmdb", {LONDON_V4: PLACES[LONDON_V4]})
    database = GeoDatabase(path)
    assert database.locate(["89.160.20.1"]).reason == NOT_IN_DATABASE
    fresh = write_geo_database(tmp_path / "new.mmdb")
    os.replace(fresh, path)
    assert database.locate(["89.160.20.1"]).pairs == (pair(LINKOPING_V4),)
    # And a corrupt update is a reason, recovered from by the next good file.
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"garbage" * 100)
    os.replace(broken, path)
    assert str(database.locate(["89.160.20.1"]).reason).startswith("lookup failed")
    os.replace(write_geo_database(tmp_path / "again.mmdb"), path)
    assert database.locate(["89.160.20.1"]).pairs == (pair(LINKOPING_V4),)
    database.close()


def test_records_without_a_usable_location_count_as_not_found(tmp_path: Path) -> None:
    path = write_geo_database(
        tmp_path / "odd.mmdb",
        {},
        extra={
            "1.1.1.0/24": {"country": {"iso_code": "AU"}},
            "1.0.0.0/24": {"location": {"latitude": 95.0, "longitude": 10.0}},
            "9.9.9.0/24": {"location": {"latitude": "north", "longitude": 10.0}},
        },
    )
    located = GeoDatabase(path).locate(["1.1.1.1", "1.0.0.1", "9.9.9.9"])
    assert located.pairs == () and located.reason == NOT_IN_DATABASE
