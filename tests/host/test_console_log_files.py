"""The console log read as one stream over virtlogd's rotated files, and rotated before a start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wattvisor.host.console_log import (
    START_CURSOR,
    CursorError,
    read_console_log,
    rotate_console_log,
)

UUID = "6b1c5a0e-4a55-4d2b-9a3c-0d7c1e2f3a4b"


def _rotate_like_virtlogd(directory: Path, backups: int = 3) -> None:
    """What virtlogd does when console.log reaches its max_size."""
    for n in range(backups - 1, -1, -1):
        old = directory / f"console.log.{n}"
        if old.exists():
            if n + 1 >= backups:
                old.unlink()
            else:
                old.rename(directory / f"console.log.{n + 1}")
    (directory / "console.log").rename(directory / "console.log.0")
    (directory / "console.log").write_bytes(b"")


def test_a_missing_log_is_empty_with_the_start_cursor(tmp_path: Path) -> None:
    log = read_console_log(tmp_path / "nothing", UUID, max_bytes=100)
    assert (log.text, log.next_cursor, log.truncated) == ("", START_CURSOR, False)


def test_rotated_files_are_read_oldest_first_as_one_stream(tmp_path: Path) -> None:
    (tmp_path / "console.log.1").write_bytes(b"one\r\ntw")
    (tmp_path / "console.log.0").write_bytes(b"o\r\nthr")
    (tmp_path / "console.log").write_bytes(b"ee\r\nfour\r\n")
    log = read_console_log(tmp_path, UUID, max_bytes=1000)
    assert log.text == "one\ntwo\nthree\nfour\n"
    assert log.line_count == 4 and not log.truncated


def test_lines_gives_the_last_lines_across_files(tmp_path: Path) -> None:
    (tmp_path / "console.log.0").write_bytes(b"a\nb\nc")
    (tmp_path / "console.log").write_bytes(b"c\nd\n")
    log = read_console_log(tmp_path, UUID, lines=2, max_bytes=1000)
    assert (log.text, log.truncated) == ("cc\nd\n", True)
    everything = read_console_log(tmp_path, UUID, lines=10, max_bytes=1000)
    assert (everything.text, everything.truncated) == ("a\nb\ncc\nd\n", False)


def test_the_size_cap_keeps_the_end_from_a_line_start(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_bytes(b"".join(b"line %04d\n" % i for i in range(1000)))
    log = read_console_log(tmp_path, UUID, max_bytes=95)
    assert log.truncated
    assert log.text.splitlines() == [f"line {i:04d}" for i in range(991, 1000)]


def test_invalid_utf8_and_control_bytes_come_back_as_text(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_bytes(b"ok \xff\xfe \x1b[2J caf\xc3\xa9\n")
    log = read_console_log(tmp_path, UUID, max_bytes=1000)
    assert log.text == "ok \ufffd\ufffd \x1b[2J caf\u00e9\n"


def test_a_follower_gets_each_byte_once_across_a_rotation(tmp_path: Path) -> None:
    current = tmp_path / "console.log"
    current.write_bytes(b"boot 1\n")
    first = read_console_log(tmp_path, UUID, max_bytes=1000)
    with current.open("ab") as f:
        f.write(b"more of boot 1\n")
    _rotate_like_virtlogd(tmp_path)
    with current.open("ab") as f:
        f.write(b"after the rotation\n")
    second = read_console_log(tmp_path, UUID, cursor=first.next_cursor, max_bytes=1000)
    assert second.text == "more of boot 1\nafter the rotation\n" and not second.reset
    third = read_console_log(tmp_path, UUID, cursor=second.next_cursor, max_bytes=1000)
    assert third.text == "" and third.next_cursor == second.next_cursor


def test_a_follower_whose_file_was_rotated_away_restarts_at_the_oldest_kept(
    tmp_path: Path,
) -> None:
    (tmp_path / "console.log").write_bytes(b"gone soon\n")
    cursor = read_console_log(tmp_path, UUID, max_bytes=1000).next_cursor
    for n in range(4):
        _rotate_like_virtlogd(tmp_path)
        (tmp_path / "console.log").write_bytes(b"rotation %d\n" % n)
    log = read_console_log(tmp_path, UUID, cursor=cursor, max_bytes=1000)
    assert log.reset and log.text.startswith("rotation 0\n") and "gone soon" not in log.text


def test_a_read_from_a_cursor_is_capped_and_says_more_follows(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_bytes(b"0123456789\nabcdef\n")
    log = read_console_log(tmp_path, UUID, cursor=START_CURSOR, max_bytes=8)
    assert (log.text, log.more) == ("01234567", True)
    rest = read_console_log(tmp_path, UUID, cursor=log.next_cursor, max_bytes=100)
    assert (rest.text, rest.more) == ("89\nabcdef\n", False)


def test_a_half_written_character_or_crlf_waits_for_the_next_read(tmp_path: Path) -> None:
    current = tmp_path / "console.log"
    current.write_bytes(b"caf\xc3")
    first = read_console_log(tmp_path, UUID, max_bytes=100)
    assert first.text == "caf"
    with current.open("ab") as f:
        f.write(b"\xa9\r")
    second = read_console_log(tmp_path, UUID, cursor=first.next_cursor, max_bytes=100)
    assert second.text == "\u00e9"
    with current.open("ab") as f:
        f.write(b"\n")
    third = read_console_log(tmp_path, UUID, cursor=second.next_cursor, max_bytes=100)
    assert third.text == "\n"


@pytest.mark.parametrize("bad", ["", "12", "zzzzzzzzzzzzzzzz.1", "0" * 16 + ".-1", "x" * 500])
def test_a_cursor_no_answer_gave_is_refused_showing_it_short(tmp_path: Path, bad: str) -> None:
    with pytest.raises(CursorError, match="next_cursor of an earlier answer") as caught:
        read_console_log(tmp_path, UUID, cursor=bad, max_bytes=100)
    assert len(str(caught.value)) < 300


def test_rotation_before_a_start_caps_the_files_and_their_number(tmp_path: Path) -> None:
    current = tmp_path / "console.log"
    for boot in range(6):
        rotate_console_log(tmp_path, max_bytes=100, backups=2)
        with current.open("ab") as f:
            f.write(b"boot %d " % boot + b"x" * 150 + b"\n")
    names = sorted(os.listdir(tmp_path))
    assert names == ["console.log", "console.log.0", "console.log.1"]
    text = read_console_log(tmp_path, UUID, max_bytes=10_000).text
    assert [line.split()[1] for line in text.splitlines()] == ["3", "4", "5"]


def test_rotation_leaves_a_small_log_alone_but_drops_extra_backups(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_bytes(b"small\n")
    for n in range(5):
        (tmp_path / f"console.log.{n}").write_bytes(b"old\n")
    rotate_console_log(tmp_path, max_bytes=100, backups=1)
    assert sorted(os.listdir(tmp_path)) == ["console.log", "console.log.0"]
    assert (tmp_path / "console.log").read_bytes() == b"small\n"
