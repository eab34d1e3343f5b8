"""Names hold printable text only: control, format and bidi characters are refused by the
service layer too (start-up defaults, anything that calls it without the API)."""

from __future__ import annotations

from pathlib import Path

import pytest
from biscuit_auth import KeyPair

from compute.principals import ALICE
from wattvisor.compute import Compute, ImageRecord, InvalidRequest
from wattvisor.compute.names import UnprintableText, check_printable, visible

REFUSED = [
    "\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b",  # C0, DEL, C1 (NEL, CSI)
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",  # bidi embeddings and overrides
    "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f", "\u061c",  # isolates, marks
    "\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad",  # zero-width, word joiner, BOM
    "\u2028", "\u2029", "\ue000", "\U000e0041",  # separators, private use, tag
]  # fmt: skip


@pytest.mark.parametrize("char", REFUSED, ids=lambda c: f"U+{ord(c):04X}")
def test_control_format_and_bidi_characters_are_refused_by_code_point(char: str) -> None:
    with pytest.raises(UnprintableText, match=f"U\\+{ord(char):04X}") as info:
        check_printable(f"web{char}01", "server name")
    assert info.value.index == 3 and "server name" in str(info.value)
    assert char not in visible(f"web{char}01")


def test_ordinary_names_in_any_script_are_accepted() -> None:
    for name in ("web-01", "Zürich db", "東京 cache", "سرور", "café ☕ 🙂", "a b\u00a0c"):
        assert check_printable(name) == name


def test_the_service_layer_refuses_them_and_stores_nothing(
    compute: Compute, kernel_image: ImageRecord, tmp_path: Path
) -> None:
    kernel = tmp_path / "vmlinuz"
    attempts = [
        lambda: compute.servers.create(ALICE, "web\x00", "tiny", kernel_image.id),
        lambda: compute.catalog.create_flavor("big\u202e", 1, 256),
        lambda: compute.catalog.create_flavor("big", 1, 256, extra_specs={"hw:x": "\x1b[2J"}),
        lambda: compute.catalog.create_image("linux\u2066", kernel_path=str(kernel)),
        lambda: compute.catalog.create_image("linux", kernel_path=str(kernel), cmdline="q\x00"),
        lambda: compute.devices.create_volume(ALICE, "data\u200b", 1, "raw"),
        lambda: compute.users.register("carol", "proj\x1b", "member", repr(KeyPair().public_key)),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidRequest, match="U\\+"):
            attempt()
    assert compute.servers.list_all(ALICE) == []
    assert [f.name for f in compute.catalog.flavors()] == ["small", "tiny"]
    assert [i.name for i in compute.catalog.images()] == ["tiny-linux"]
    assert compute.devices.volumes(ALICE) == [] and compute.users.list_all() == []
