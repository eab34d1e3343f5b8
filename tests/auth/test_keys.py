"""Key files: created private and exclusive, loaded strictly, the admin key bootstrapped once."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from auth_users import NOW
from biscuit_auth import PublicKey

from support.user_registry import UserRegistry
from wattvisor.auth import (
    KeyFileError,
    TokenVerifier,
    admin_user,
    bootstrap_admin,
    create_key_pair,
    ensure_admin_key,
    load_private_key,
    mint_token_from_file,
    public_key_of,
    rotate_admin_key,
)
from wattvisor.config.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_private_key_file_is_0600_and_public_key_beside_it(tmp_path: Path) -> None:
    files = create_key_pair(tmp_path / "keys" / "alice")
    assert _mode(files.private_path) == 0o600
    assert _mode(files.public_path) == 0o644
    assert files.public_path == tmp_path / "keys" / "alice.pub"
    assert files.public_path.read_text().strip() == files.public_key
    assert files.public_key.startswith("ed25519/")
    assert files.private_path.read_text().startswith("ed25519-private/")
    assert public_key_of(load_private_key(files.private_path)) == files.public_key
    PublicKey(files.public_key)


def test_new_key_directory_is_private(tmp_path: Path) -> None:
    create_key_pair(tmp_path / "fresh" / "key")
    assert _mode(tmp_path / "fresh") == 0o700


def test_private_key_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        files = create_key_pair(tmp_path / "key")
    finally:
        os.umask(old)
    assert _mode(files.private_path) == 0o600


def test_existing_key_is_never_overwritten_without_force(tmp_path: Path) -> None:
    first = create_key_pair(tmp_path / "key")
    before = first.private_path.read_bytes()
    with pytest.raises(KeyFileError, match=r"already exists.*--force"):
        create_key_pair(tmp_path / "key")
    assert first.private_path.read_bytes() == before


def test_existing_public_key_alone_blocks_creation_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    (tmp_path / "key.pub").write_text("ed25519/" + "ab" * 32)
    with pytest.raises(KeyFileError, match=r"key\.pub"):
        create_key_pair(tmp_path / "key")
    assert not (tmp_path / "key").exists()


def test_force_replaces_the_key_pair(tmp_path: Path) -> None:
    first = create_key_pair(tmp_path / "key")
    second = create_key_pair(tmp_path / "key", force=True)
    assert second.public_key != first.public_key
    assert _mode(second.private_path) == 0o600
    assert public_key_of(load_private_key(second.private_path)) == second.public_key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "key.pub"]


def test_group_readable_private_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    files = create_key_pair(tmp_path / "key")
    files.private_path.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"mode 0640.*chmod 600"):
        load_private_key(files.private_path)


def test_missing_key_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="wattvisor keys create"):
        load_private_key(tmp_path / "nope")


def test_key_file_with_other_content_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "key"
    secret = "0123456789abcdef" * 3
    path.write_text(secret)
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert secret not in str(info.value)
    assert "ed25519-private/<64 hex digits>" in str(info.value)


def test_admin_key_is_created_once_and_then_reused(tmp_path: Path) -> None:
    first = ensure_admin_key(tmp_path / "admin.key")
    second = ensure_admin_key(tmp_path / "admin.key")
    assert first.created and not second.created
    assert second.public_key == first.public_key
    assert _mode(tmp_path / "admin.key") == 0o600


def test_admin_token_from_the_key_file_verifies_as_admin(tmp_path: Path) -> None:
    files = ensure_admin_key(tmp_path / "admin.key")
    registry = UserRegistry([admin_user(files.public_key)])
    token = mint_token_from_file(files.private_path, "admin", timedelta(hours=1), now=NOW)
    principal = (
        TokenVerifier(registry.lookup, clock=lambda: NOW).verify(token, operation="write").principal
    )
    assert principal.user == "admin" and principal.role == "admin" and principal.is_admin


def test_first_start_creates_the_admin_key_under_the_data_dir_and_says_where(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = bootstrap_admin(settings)
    assert first.files.created
    assert first.files.private_path == tmp_path / "data" / "admin.key"
    assert _mode(first.files.private_path) == 0o600
    # QEMU must still reach config drives kept under the data directory.
    assert _mode(tmp_path / "data") == 0o755
    assert str(first.files.private_path) in first.message and "created" in first.message
    assert (first.user.name, first.user.role) == ("admin", "admin")
    again = bootstrap_admin(settings)
    assert not again.files.created and again.user == first.user
    assert "using" in again.message


def test_rotating_the_admin_key_registers_the_new_key_then_replaces_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "admin.key"
    old = ensure_admin_key(path)
    registered: list[str] = []
    files = rotate_admin_key(path, registered.append)
    assert registered == [files.public_key] != [old.public_key]
    assert public_key_of(load_private_key(path)) == files.public_key
    assert files.public_path.read_text().strip() == files.public_key
    assert _mode(path) == 0o600 and sorted(p.name for p in tmp_path.iterdir()) == [
        "admin.key", "admin.key.pub",
    ]  # fmt: skip


def test_a_rotation_the_store_refuses_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "admin.key"
    ensure_admin_key(path)
    before = (path.read_bytes(), (tmp_path / "admin.key.pub").read_bytes())

    def refuse(public_key: str) -> None:
        raise RuntimeError("store unreachable")

    with pytest.raises(RuntimeError, match="store unreachable"):
        rotate_admin_key(path, refuse)
    assert (path.read_bytes(), (tmp_path / "admin.key.pub").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin.key", "admin.key.pub"]


def test_rotating_without_an_admin_key_says_where_it_comes_from(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="wattvisor up"):
        rotate_admin_key(tmp_path / "admin.key", lambda key: None)
