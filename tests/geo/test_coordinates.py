"""Admin-given pairs: checked, made canonical, refused naming the value."""

from __future__ import annotations

import pytest

from wattvisor.geo.coordinates import MAX_PAIRS, InvalidPair, format_pair, parse_pairs


def test_valid_pairs_are_kept_canonical_and_once() -> None:
    assert parse_pairs(["48.8566, 2.3522", "-33.8688,151.2093", "48.85660,2.3522"]) == [
        "48.8566,2.3522",
        "-33.8688,151.2093",
    ]
    assert parse_pairs(["90,180", "-90,-180", "0,0"]) == ["90,180", "-90,-180", "0,0"]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("90.5,10", "latitude 90.5 is not accepted"),
        ("-91,10", "latitude -91 is not accepted"),
        ("10,180.01", "longitude 180.01 is not accepted"),
        ("10,-181", "longitude -181 is not accepted"),
        ("north,10", "latitude 'north' is not a number"),
        ("10,nan", "longitude 'nan' is not a number"),
        ("inf,10", "latitude 'inf' is not a number"),
        ("10", "two numbers, one comma"),
        ("1,2,3", "two numbers, one comma"),
        (",", "latitude '' is not a number"),
        (48.8, "give a text 'latitude,longitude'"),
        (["48", "2"], "give a text 'latitude,longitude'"),
    ],
)
def test_a_bad_pair_is_refused_naming_it(value: object, words: str) -> None:
    with pytest.raises(InvalidPair) as raised:
        parse_pairs([value])
    assert words in str(raised.value)
    assert repr(value)[:20].strip("'\"[]") in str(raised.value)


def test_too_many_pairs_are_refused() -> None:
    with pytest.raises(InvalidPair, match=f"at most {MAX_PAIRS}"):
        parse_pairs(["1,1"] * (MAX_PAIRS + 1))


def test_format_keeps_six_places_without_trailing_zeros() -> None:
    assert format_pair(51.5142, -0.0931) == "51.5142,-0.0931"
    assert format_pair(1.23456789, -0.0000001) == "1.234568,0"
    assert format_pair(35.0, 139.75) == "35,139.75"
