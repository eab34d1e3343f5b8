"""The guest-visible counter files, in the layout ``scaphandre --vm`` reads."""

from __future__ import annotations

import gc
import os
import shutil
import threading
from pathlib import Path

import pytest

from wattvisor.energy import guest_share
from wattvisor.energy.guest_share import GuestShareError, GuestShareWriter
from wattvisor.energy.sources import RaplSource, SampleWindow


def test_prepare_writes_the_rapl_layout(tmp_path: Path) -> None:
    writer = GuestShareWriter(max_energy_range_uj=1_000_000_000)
    directory = writer.prepare(tmp_path, "instance-00000001", joules=1.5)
    assert directory == tmp_path / "instance-00000001"
    zone = directory / "intel-rapl:0"
    assert (zone / "energy_uj").read_text() == "1500000\n"
    assert (zone / "max_energy_range_uj").read_text() == "1000000000\n"
    assert (zone / "name").read_text() == "package-0\n"
    assert (directory / "intel-rapl:0:0").is_dir()
    assert list((directory / "intel-rapl:0:0").iterdir()) == []
    assert sorted(p.name for p in zone.iterdir()) == ["energy_uj", "max_energy_range_uj", "name"]


def test_a_rapl_reader_sees_the_guest_share_as_one_package(tmp_path: Path) -> None:
    """What a guest running a RAPL reader sees: a socket whose energy is the VM's."""
    writer = GuestShareWriter()
    writer.prepare(tmp_path, "vm", joules=10.0)
    reader = RaplSource(tmp_path / "vm")
    assert [z.name for z in reader.zones] == ["package-0"]
    reader.read(SampleWindow(2.0, 0.0))
    writer.update(tmp_path, "vm", joules=17.25)
    assert reader.read(SampleWindow(2.0, 0.0)).energy_joules == pytest.approx(7.25)


def test_update_replaces_contents_but_never_the_domain_directory(tmp_path: Path) -> None:
    writer = GuestShareWriter()
    directory = writer.prepare(tmp_path, "vm")
    inode = os.stat(directory).st_ino
    writer.update(tmp_path, "vm", 3.0)
    writer.update(tmp_path, "vm", 4.0)
    assert os.stat(directory).st_ino == inode
    assert (directory / "intel-rapl:0" / "energy_uj").read_text() == "4000000\n"
    leftovers = [p.name for p in (directory / "intel-rapl:0").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_counter_wraps_at_max_range_like_rapl(tmp_path: Path) -> None:
    writer = GuestShareWriter(max_energy_range_uj=10_000_000)
    writer.prepare(tmp_path, "vm", joules=9.0)
    reader = RaplSource(tmp_path / "vm")
    reader.read(SampleWindow(2.0, 0.0))
    writer.update(tmp_path, "vm", joules=12.5)
    assert (tmp_path / "vm" / "intel-rapl:0" / "energy_uj").read_text() == "2500000\n"
    assert reader.read(SampleWindow(2.0, 0.0)).energy_joules == pytest.approx(3.5)


def test_update_recreates_missing_layout_inside_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "vm").mkdir()
    GuestShareWriter().update(tmp_path, "vm", 2.0)
    assert (tmp_path / "vm" / "intel-rapl:0" / "energy_uj").read_text() == "2000000\n"
    assert (tmp_path / "vm" / "intel-rapl:0:0").is_dir()


def test_remove_deletes_everything_it_wrote(tmp_path: Path) -> None:
    writer = GuestShareWriter()
    writer.prepare(tmp_path, "vm", 1.0)
    writer.remove(tmp_path, "vm")
    assert not (tmp_path / "vm").exists()


def test_remove_leaves_foreign_files_and_directory(tmp_path: Path) -> None:
    writer = GuestShareWriter()
    writer.prepare(tmp_path, "vm", 1.0)
    (tmp_path / "vm" / "other").write_text("x")
    writer.remove(tmp_path, "vm")
    assert sorted(p.name for p in (tmp_path / "vm").iterdir()) == ["other"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x\0y"])
def test_unusable_domain_names_are_rejected_without_writing(tmp_path: Path, name: str) -> None:
    with pytest.raises(GuestShareError, match="cannot name a share directory"):
        GuestShareWriter().prepare(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_shares_on_tmpfs_are_replaced_whole_without_leftovers(tmpfs_dir: Path) -> None:
    writer = GuestShareWriter()
    zone = writer.prepare(tmpfs_dir, "vm", 1.0) / "intel-rapl:0"
    inode = os.stat(zone / "energy_uj").st_ino
    writer.update(tmpfs_dir, "vm", 2.0)
    assert (zone / "energy_uj").read_text() == "2000000\n"
    assert os.stat(zone / "energy_uj").st_ino != inode  # a reader's open file stays whole
    assert sorted(p.name for p in zone.iterdir()) == ["energy_uj", "max_energy_range_uj", "name"]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_domain_directory_made_anew_gets_the_counter_again(tmp_path: Path) -> None:
    writer = GuestShareWriter()
    directory = writer.prepare(tmp_path, "vm", 1.0)
    shutil.rmtree(directory)
    directory.mkdir()  # the host made the share source again
    writer.update(tmp_path, "vm", 2.0)
    assert (directory / "intel-rapl:0" / "energy_uj").read_text() == "2000000\n"


def test_directories_held_open_are_bounded_and_closed_on_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guest_share, "MAX_OPEN_DIRECTORIES", 2)
    before = _open_fds()
    writer = GuestShareWriter()
    for index in range(4):
        writer.prepare(tmp_path, f"vm{index}", 0.0)
    assert _open_fds() - before == 2
    for index in range(4):
        writer.update(tmp_path, f"vm{index}", index + 0.5)
        counter = tmp_path / f"vm{index}" / "intel-rapl:0" / "energy_uj"
        assert counter.read_text() == f"{(index + 0.5) * 1_000_000:.0f}\n"
    for index in range(4):
        writer.remove(tmp_path, f"vm{index}")
    assert _open_fds() == before
    writer.prepare(tmp_path, "again", 0.0)
    del writer
    gc.collect()
    assert _open_fds() == before


def test_an_unchanged_counter_is_not_rewritten(tmpfs_dir: Path) -> None:
    writer = GuestShareWriter()
    counter = writer.prepare(tmpfs_dir, "vm", 1.0) / "intel-rapl:0" / "energy_uj"
    writer.update(tmpfs_dir, "vm", 2.0)
    inode = os.stat(counter).st_ino
    writer.update(tmpfs_dir, "vm", 2.0)
    writer.update(tmpfs_dir, "vm", 2.0 + 1e-9)  # below a microjoule: the same visible value
    assert os.stat(counter).st_ino == inode
    assert counter.read_text() == "2000000\n"
    writer.update(tmpfs_dir, "vm", 2.5)
    assert os.stat(counter).st_ino != inode
    assert counter.read_text() == "2500000\n"


def test_a_reader_sees_only_whole_increasing_values_while_counters_change(
    tmpfs_dir: Path,
) -> None:
    """A guest reads at any moment: each read is one of the written values, never part of one."""
    writer = GuestShareWriter(max_energy_range_uj=10**15)  # no wrap in this test
    counter = writer.prepare(tmpfs_dir, "vm", 0.0) / "intel-rapl:0" / "energy_uj"
    written = {"0\n"}
    seen: list[str] = []
    done = threading.Event()

    def read_until_done() -> None:
        for _ in range(200_000):  # bounded; the writer ends far sooner
            seen.append(counter.read_text())
            if done.is_set():
                return

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        joules = 0.0
        for step in range(3_000):
            # Some values repeat (not rewritten), and the length grows (1 to 12 digits).
            joules += 0.0 if step % 3 == 0 else 123.456789 * (step % 7)
            writer.update(tmpfs_dir, "vm", joules)
            written.add(f"{writer.counter_uj(joules)}\n")
    finally:
        done.set()
        reader.join(timeout=60)
    assert not reader.is_alive()
    assert seen and set(seen) <= written
    values = [int(text) for text in seen]
    assert values == sorted(values)


def test_a_leftover_temporary_file_does_not_stop_the_counter(tmpfs_dir: Path) -> None:
    writer = GuestShareWriter()
    zone = writer.prepare(tmpfs_dir, "vm", 1.0) / "intel-rapl:0"
    (zone / ".energy_uj.tmp").write_text("12")  # left by a write interrupted by a crash
    writer.update(tmpfs_dir, "vm", 3.0)
    assert (zone / "energy_uj").read_text() == "3000000\n"
    assert sorted(p.name for p in zone.iterdir()) == ["energy_uj", "max_energy_range_uj", "name"]
