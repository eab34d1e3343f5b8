"""Atomic replacement of small counter files, with and without RENAME_EXCHANGE."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wattvisor.energy import atomic_file
from wattvisor.energy.atomic_file import replace_contents


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "plain-rename"])
def test_replacement_leaves_only_the_new_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(atomic_file, "_exchange_works", False)
    target, tmp = tmp_path / "energy_uj", tmp_path / ".energy_uj.tmp"
    replace_contents(str(target), str(tmp), b"1\n")
    first_inode = os.stat(target).st_ino
    replace_contents(str(target), str(tmp), b"22\n")
    assert target.read_bytes() == b"22\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["energy_uj"]
    assert os.stat(target).st_ino != first_inode  # a reader holding the old file keeps it whole


def test_leftover_temp_file_from_a_crash_is_replaced(tmp_path: Path) -> None:
    target, tmp = tmp_path / "state.json", tmp_path / ".state.json.tmp"
    tmp.write_bytes(b"half-writ")
    replace_contents(str(target), str(tmp), b"{}")
    assert target.read_bytes() == b"{}"
    assert not tmp.exists()


def test_failed_write_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "energy_uj"
    target.write_bytes(b"5\n")
    with pytest.raises(OSError):
        replace_contents(str(target), str(tmp_path / "missing-dir" / ".tmp"), b"6\n")
    assert target.read_bytes() == b"5\n"


def test_exchange_is_skipped_on_tmpfs_only(tmpfs_dir: Path) -> None:
    assert not atomic_file.exchange_pays_off(str(tmpfs_dir))
    assert atomic_file.exchange_pays_off("/no/such/directory")  # unsure: the safe answer


def test_plain_rename_never_calls_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(tmp: object, path: object) -> bool:
        raise AssertionError("exchange used")

    monkeypatch.setattr(atomic_file, "_exchange", refuse)
    target, tmp = tmp_path / "energy_uj", tmp_path / ".energy_uj.tmp"
    replace_contents(str(target), str(tmp), b"1\n", exchange=False)
    inode = os.stat(target).st_ino
    replace_contents(str(target), str(tmp), b"2\n", exchange=False)
    assert target.read_bytes() == b"2\n" and os.stat(target).st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["energy_uj"]
