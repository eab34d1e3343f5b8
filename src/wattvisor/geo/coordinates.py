"""``latitude,longitude`` pairs: the one text form a host's geolocation is kept, shown,
set by an admin and exported in."""

from __future__ import annotations

import math
from collections.abc import Iterable

MAX_PAIRS = 64
EXAMPLE = "'48.8566,2.3522'"


class InvalidPair(ValueError):
    """A pair that is not ``latitude,longitude`` in range; the message names it."""

    def __init__(self, message: str, value: object) -> None:
        super().__init__(message)
        self.value = value


def format_pair(latitude: float, longitude: float) -> str:
    """Decimal degrees, at most six places (about 0.1 m), no trailing zeros."""
    return f"{_degrees(latitude)},{_degrees(longitude)}"


def _degrees(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def check_coordinates(latitude: float, longitude: float, shown: object) -> None:
    """Refuse values outside -90..90 / -180..180 (and NaN, infinities)."""
    if not math.isfinite(latitude) or not -90.0 <= latitude <= 90.0:
        raise InvalidPair(
            f"geolocation pair {shown!r}: latitude {latitude:g} is not accepted; it must be "
            f"a number from -90 to 90 (decimal degrees, e.g. {EXAMPLE})",
            shown,
        )
    if not math.isfinite(longitude) or not -180.0 <= longitude <= 180.0:
        raise InvalidPair(
            f"geolocation pair {shown!r}: longitude {longitude:g} is not accepted; it must "
            f"be a number from -180 to 180 (decimal degrees, e.g. {EXAMPLE})",
            shown,
        )


def parse_pair(text: object) -> str:
    """``text`` as a canonical pair; InvalidPair names the value and what is accepted."""
    if not isinstance(text, str):
        raise InvalidPair(
            f"geolocation pair {text!r} is not accepted; give a text 'latitude,longitude' "
            f"in decimal degrees, e.g. {EXAMPLE}",
            text,
        )
    parts = text.split(",")
    if len(parts) != 2:
        raise InvalidPair(
            f"geolocation pair {text[:100]!r} is not accepted; give 'latitude,longitude' "
            f"(two numbers, one comma) in decimal degrees, e.g. {EXAMPLE}",
            text,
        )
    numbers = []
    for part, what in zip(parts, ("latitude", "longitude"), strict=True):
        try:
            # float() alone takes "nan", "inf" and "1_0": only plain decimals are degrees.
            stripped = part.strip()
            if not stripped or any(c not in "0123456789.+-eE" for c in stripped):
                raise ValueError(stripped)
            numbers.append(float(stripped))
        except ValueError:
            raise InvalidPair(
                f"geolocation pair {text[:100]!r}: {what} {part.strip()[:40]!r} is not a "
                f"number; give 'latitude,longitude' in decimal degrees, e.g. {EXAMPLE}",
                text,
            ) from None
    check_coordinates(numbers[0], numbers[1], text)
    return format_pair(numbers[0], numbers[1])


def parse_pairs(values: Iterable[object]) -> list[str]:
    """Every pair checked and made canonical, repeats kept once, in the order given."""
    listed = list(values)
    if len(listed) > MAX_PAIRS:
        raise InvalidPair(
            f"{len(listed)} geolocation pairs are not accepted; give at most {MAX_PAIRS}",
            len(listed),
        )
    return list(dict.fromkeys(parse_pair(v) for v in listed))
