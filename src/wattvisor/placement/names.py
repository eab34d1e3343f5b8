"""Names of resource classes and traits: the standard ones come from os-resource-classes
and os-traits, custom ones must be spelled ``CUSTOM_[A-Z0-9_]+`` and be created first."""

from __future__ import annotations

import re
from functools import cache

import os_resource_classes
import os_traits

CUSTOM_NAME = re.compile(r"^CUSTOM_[A-Z0-9_]+$")


@cache
def standard_traits() -> frozenset[str]:
    return frozenset(os_traits.get_traits())


@cache
def standard_resource_classes() -> frozenset[str]:
    return frozenset(os_resource_classes.STANDARDS)


def is_custom_name(name: str) -> bool:
    return bool(CUSTOM_NAME.match(name))
