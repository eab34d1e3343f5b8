"""Read-only share views: real bind mounts in scratch directories (needs root)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.availability import require_root
from wattvisor.host.shares import (
    LIBVIRT_READONLY_VIRTIOFS,
    ShareError,
    ShareManager,
    bind_mount_readonly,
    is_readonly_mounted,
    mount_table,
    top_mount,
    unmount_all,
)

LIBVIRT_9 = 9_000_000


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    require_root("bind-mounting share views")
    yield tmp_path
    for entry in reversed(mount_table()):
        if entry.mount_point.is_relative_to(tmp_path):
            unmount_all(entry.mount_point)


@pytest.fixture
def share_dir(scratch: Path) -> Path:
    path = scratch / "shares" / "scaphandre"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def manager(scratch: Path, share_dir: Path) -> ShareManager:
    return ShareManager({str(share_dir): "scaphandre"}, scratch / "data", LIBVIRT_9)


def _mounts_at(path: Path) -> int:
    real = Path(os.path.realpath(path))
    return sum(1 for e in mount_table() if e.mount_point == real)


def test_old_libvirt_as_root_uses_bind_mounts(manager: ShareManager) -> None:
    assert manager.readonly_mode() == "bind"
    assert manager.unavailable_reason is None


def test_version_may_be_given_as_a_tuple(scratch: Path, share_dir: Path) -> None:
    manager = ShareManager({str(share_dir): "scaphandre"}, scratch / "data", (11, 0, 0))
    assert manager.libvirt_version == LIBVIRT_READONLY_VIRTIOFS
    assert manager.readonly_mode() == "flag"


def test_libvirt_11_uses_the_readonly_flag_without_mounting(scratch: Path, share_dir: Path) -> None:
    manager = ShareManager(
        {str(share_dir): "scaphandre"}, scratch / "data", LIBVIRT_READONLY_VIRTIOFS
    )
    [share] = manager.prepare("instance-00000001")
    assert manager.readonly_mode() == "flag"
    assert share.readonly_flag is True
    assert share.source_dir == share.data_dir == share_dir / "instance-00000001"
    assert manager.mounted_views() == []


def test_host_that_cannot_mount_offers_no_readonly_mode(share_dir: Path) -> None:
    manager = ShareManager({str(share_dir): "scaphandre"}, Path("/proc/wattvisor-test"), LIBVIRT_9)
    assert manager.readonly_mode() is None
    assert manager.unavailable_reason is not None
    assert "needs 11.0" in manager.unavailable_reason
    with pytest.raises(ShareError, match="cannot share read-only"):
        manager.prepare("instance-00000001")
    assert list(share_dir.iterdir()) == []


def test_prepare_makes_data_dir_and_readonly_view_outside_share_dir(
    manager: ShareManager, share_dir: Path, scratch: Path
) -> None:
    [share] = manager.prepare("instance-00000001")
    assert share.mount_tag == "scaphandre"
    assert share.data_dir == share_dir / "instance-00000001"
    assert share.data_dir.stat().st_mode & 0o7777 == 0o755
    assert share.readonly_flag is False
    assert share.source_dir == scratch / "data" / "shares" / "scaphandre" / "instance-00000001"
    assert not share.source_dir.is_relative_to(share_dir)
    assert is_readonly_mounted(share.source_dir)
    assert not is_readonly_mounted(share.data_dir)


def test_view_shows_host_writes_and_refuses_writes_even_from_root(manager: ShareManager) -> None:
    [share] = manager.prepare("instance-00000001")
    (share.data_dir / "energy_uj").write_text("123\n")
    assert (share.source_dir / "energy_uj").read_text() == "123\n"
    (share.data_dir / "energy_uj").write_text("456\n")
    assert (share.source_dir / "energy_uj").read_text() == "456\n"
    for attempt in (
        lambda: (share.source_dir / "new").touch(),
        lambda: (share.source_dir / "energy_uj").write_text("guest\n"),
        lambda: (share.source_dir / "dir").mkdir(),
        lambda: (share.source_dir / "energy_uj").unlink(),
    ):
        with pytest.raises(OSError) as raised:
            attempt()
        assert raised.value.errno == errno.EROFS
    assert sorted(p.name for p in share.data_dir.iterdir()) == ["energy_uj"]
    assert (share.data_dir / "energy_uj").read_text() == "456\n"


def test_prepare_twice_does_not_stack_mounts(manager: ShareManager) -> None:
    first = manager.prepare("instance-00000001")
    second = manager.prepare("instance-00000001")
    assert first == second
    assert _mounts_at(first[0].source_dir) == 1


def test_prepare_turns_a_leftover_writable_view_readonly(manager: ShareManager) -> None:
    [share] = manager.prepare("instance-00000001")
    unmount_all(share.source_dir)
    subprocess.run(["mount", "--bind", str(share.data_dir), str(share.source_dir)], check=True)
    assert top_mount(share.source_dir) is not None
    assert not is_readonly_mounted(share.source_dir)
    manager.prepare("instance-00000001")
    assert is_readonly_mounted(share.source_dir)
    assert _mounts_at(share.source_dir) == 1


def test_prepare_refuses_a_view_path_holding_a_foreign_mount(
    manager: ShareManager, scratch: Path
) -> None:
    other = scratch / "other"
    other.mkdir()
    target = manager.mount_point("instance-00000001", "scaphandre")
    target.mkdir(parents=True)
    bind_mount_readonly(other, target)
    with pytest.raises(ShareError, match="something other than"):
        manager.prepare("instance-00000001")
    assert _mounts_at(target) == 1


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../escape", "x\0y", "n" * 256])
def test_domain_names_that_escape_the_share_dir_are_refused_and_nothing_is_created(
    manager: ShareManager, share_dir: Path, scratch: Path, name: str
) -> None:
    with pytest.raises(ShareError) as raised:
        manager.prepare(name)
    assert repr(name) in str(raised.value)
    assert "accepted" in str(raised.value)
    assert list(share_dir.iterdir()) == []
    assert not (scratch / "data" / "shares" / "scaphandre").exists()
    assert manager.mounted_views() == []


def test_share_dir_outside_the_configured_ones_is_refused(
    manager: ShareManager, share_dir: Path, scratch: Path
) -> None:
    elsewhere = scratch / "elsewhere"
    with pytest.raises(ShareError) as raised:
        manager.prepare("instance-00000001", share_dirs=[elsewhere])
    assert repr(str(elsewhere)) in str(raised.value)
    assert repr(str(share_dir)) in str(raised.value)
    assert not elsewhere.exists()
    assert list(share_dir.iterdir()) == []


def test_nested_share_dirs_are_refused(scratch: Path, share_dir: Path) -> None:
    inner = share_dir / "guests"
    with pytest.raises(ShareError, match="inside"):
        ShareManager({str(share_dir): "outer", str(inner): "inner"}, scratch / "data", LIBVIRT_9)


def test_a_planted_symlink_is_not_followed_into_the_guest(
    manager: ShareManager, share_dir: Path, scratch: Path
) -> None:
    secret = scratch / "secret"
    secret.mkdir()
    (share_dir / "instance-00000001").symlink_to(secret)
    with pytest.raises(ShareError, match="symbolic link"):
        manager.prepare("instance-00000001")
    assert manager.mounted_views() == []


def test_mount_root_inside_a_share_dir_is_refused(share_dir: Path) -> None:
    with pytest.raises(ShareError, match="where a guest could see it"):
        ShareManager({str(share_dir): "scaphandre"}, share_dir, LIBVIRT_9)


@pytest.mark.parametrize("tag", [".", ".."])
def test_dot_mount_tags_are_refused(share_dir: Path, scratch: Path, tag: str) -> None:
    with pytest.raises(ShareError, match=repr(tag)):
        ShareManager({str(share_dir): tag}, scratch / "data", LIBVIRT_9)


def test_release_unmounts_and_keeps_the_data_for_the_energy_layer(manager: ShareManager) -> None:
    [share] = manager.prepare("instance-00000001")
    (share.data_dir / "energy_uj").write_text("1\n")
    manager.release("instance-00000001")
    assert top_mount(share.source_dir) is None
    assert not share.source_dir.exists()
    assert (share.data_dir / "energy_uj").read_text() == "1\n"
    manager.release("instance-00000001")  # idempotent


def test_discard_data_only_after_release(manager: ShareManager) -> None:
    [share] = manager.prepare("instance-00000001")
    with pytest.raises(ShareError, match="release it first"):
        manager.discard_data("instance-00000001")
    assert share.data_dir.is_dir()
    manager.release("instance-00000001")
    manager.discard_data("instance-00000001")
    assert not share.data_dir.exists()


def test_reestablish_remounts_after_reboot_and_removes_what_no_domain_owns(
    manager: ShareManager,
) -> None:
    [kept] = manager.prepare("instance-00000001")
    [gone] = manager.prepare("instance-00000002")
    [other] = manager.prepare("instance-00000003")
    unmount_all(kept.source_dir)  # as after a reboot
    restored = manager.reestablish(["instance-00000001"], keep=["instance-00000003"])
    assert restored.established == ["instance-00000001"] and restored.problems == []
    assert is_readonly_mounted(kept.source_dir)
    assert _mounts_at(kept.source_dir) == 1
    assert top_mount(gone.source_dir) is None and not gone.source_dir.exists()
    assert not gone.data_dir.exists()
    assert set(restored.removed) == {gone.source_dir, gone.data_dir}
    assert is_readonly_mounted(other.source_dir)  # another domain's: left as it is
    again = manager.reestablish(["instance-00000001"], keep=["instance-00000003"])
    assert _mounts_at(kept.source_dir) == 1 and again.removed == []


def test_reestablish_reports_a_domain_it_cannot_share_and_goes_on(
    manager: ShareManager, share_dir: Path, scratch: Path
) -> None:
    (share_dir / "instance-00000009").symlink_to(scratch)
    restored = manager.reestablish(["instance-00000009", "instance-00000001"])
    assert restored.established == ["instance-00000001"]
    [problem] = restored.problems
    assert "instance-00000009" in problem and "symbolic link" in problem
    assert (share_dir / "instance-00000009").is_symlink()  # its own: not removed


def test_leftovers_are_removed_without_following_symbolic_links(
    manager: ShareManager, share_dir: Path, scratch: Path
) -> None:
    precious = scratch / "precious"
    precious.mkdir()
    (precious / "file").write_text("keep")
    (share_dir / "instance-00000007").symlink_to(precious)
    restored = manager.reestablish([])
    assert share_dir / "instance-00000007" in restored.removed
    assert (precious / "file").read_text() == "keep"


def test_paths_with_spaces_are_recognised_in_mountinfo(scratch: Path) -> None:
    share_dir = scratch / "my shares" / "power\tmetrics"
    share_dir.mkdir(parents=True)
    manager = ShareManager({str(share_dir): "scaphandre"}, scratch / "data dir", LIBVIRT_9)
    [share] = manager.prepare("instance 1")
    assert is_readonly_mounted(share.source_dir)
    manager.release("instance 1")
    assert manager.mounted_views() == []


def test_release_detaches_a_view_still_in_use(manager: ShareManager) -> None:
    """virtiofsd may still hold files open when a domain stops; release must not fail."""
    [share] = manager.prepare("instance-00000001")
    (share.data_dir / "energy_uj").write_text("5\n")
    with (share.source_dir / "energy_uj").open() as held:
        manager.release("instance-00000001")
        assert top_mount(share.source_dir) is None
        assert held.read() == "5\n"


def test_domain_data_dir_is_a_size_capped_tmpfs_seen_read_only(scratch: Path) -> None:
    tmp_path = scratch
    share_dir = tmp_path / "scaphandre"
    share_dir.mkdir()
    manager = ShareManager(
        {str(share_dir): "scaph"}, tmp_path / "data", (9, 0, 0), tmpfs_size_kib=64
    )
    [prepared] = manager.prepare("instance-00000001")
    try:
        entry = top_mount(prepared.data_dir)
        assert entry is not None and entry.fs_type == "tmpfs"
        (prepared.data_dir / "energy_uj").write_text("1")
        assert (prepared.source_dir / "energy_uj").read_text() == "1"
        with pytest.raises(OSError):
            (prepared.data_dir / "big").write_bytes(b"\0" * (128 * 1024))
        # Idempotent: a second prepare stacks nothing.
        manager.prepare("instance-00000001")
        assert sum(1 for e in mount_table() if e.mount_point == prepared.data_dir) == 1
    finally:
        manager.release("instance-00000001")
        manager.discard_data("instance-00000001")
    assert not prepared.data_dir.exists()
    assert top_mount(prepared.data_dir) is None
