"""User device aliases: libvirt's ``ua-`` rule."""

from __future__ import annotations

import uuid

import pytest

from wattvisor.guest import (
    ALIAS_PATTERN,
    InvalidAliasError,
    alias_identifier,
    is_user_alias,
    make_alias,
    validate_alias,
)


def test_alias_is_ua_prefix_and_the_stable_id() -> None:
    volume = str(uuid.UUID("0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9"))
    assert make_alias(volume) == f"ua-{volume}"
    assert alias_identifier(make_alias(volume)) == volume
    assert alias_identifier("virtio-disk0") == "virtio-disk0"


@pytest.mark.parametrize("identifier", ["", "a b", "vol.1", "vol/1", "é", "x\n", None])
def test_an_identifier_libvirt_would_reject_raises_with_the_rule(identifier: object) -> None:
    with pytest.raises(InvalidAliasError) as info:
        make_alias(identifier)  # type: ignore[arg-type]
    assert "A-Z" in str(info.value)


@pytest.mark.parametrize("alias", ["ua-", "virtio-disk0", "UA-x", "ua-x\n", "ua-x y", " ua-x"])
def test_validate_alias_names_the_alias_and_the_accepted_pattern(alias: str) -> None:
    assert not is_user_alias(alias)
    with pytest.raises(InvalidAliasError) as info:
        validate_alias(alias)
    assert repr(alias) in str(info.value) and ALIAS_PATTERN in str(info.value)


def test_valid_user_aliases_pass_unchanged() -> None:
    for alias in ["ua-0", "ua-my_Disk-1", "ua-" + str(uuid.uuid4())]:
        assert validate_alias(alias) == alias and is_user_alias(alias)
