"""Names of resource classes and traits: the standard ones come from os-resource-classes
and os-traits, custom ones must be spelled ``CUSTOM_[A-Z0-9_]+``, be at most 255
characters long (as in OpenStack Placement, and the width of the name columns) and be
created first."""

from __future__ import annotations

import re
from functools import cache

import os_resource_classes
import os_traits

from wattvisor.shown_values import shown

CUSTOM_PREFIX = "CUSTOM_"
CUSTOM_NAME = re.compile(r"^CUSTOM_[A-Z0-9_]+$")
MAX_NAME_LENGTH = 255
CUSTOM_NAME_RULE = f"^CUSTOM_[A-Z0-9_]+$, at most {MAX_NAME_LENGTH} characters"


@cache
def standard_traits() -> frozenset[str]:
    return frozenset(os_traits.get_traits())


@cache
def standard_resource_classes() -> frozenset[str]:
    return frozenset(os_resource_classes.STANDARDS)


def is_custom_name(name: str) -> bool:
    """Whether ``name`` is a well-formed custom trait or resource class name."""
    return isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and bool(CUSTOM_NAME.match(name))


def shown_name(name: str, limit: int = 80) -> str:
    """``name`` quoted for an error message, cut (with its length said) when long."""
    return shown(name, limit)
