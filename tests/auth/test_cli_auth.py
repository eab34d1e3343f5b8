"""``wattvisor keys create`` and ``wattvisor token create`` as a user and an admin run them."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from support.user_registry import UserRegistry
from wattvisor.auth import (
    RegisteredUser,
    TokenCheckFailed,
    TokenVerifier,
    admin_user,
    ensure_admin_key,
)
from wattvisor.cli.auth import keys_app, token_app
from wattvisor.cli.context import state

runner = CliRunner()


def _app() -> typer.Typer:
    """The two sub-apps mounted as the main command mounts them."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        state.config_file = None
        state._settings = None

    app.add_typer(keys_app, name="keys")
    app.add_typer(token_app, name="token")
    return app


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTVISOR_")}
    env.update(
        {"WATTVISOR_DATA_DIR": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    )
    env.update(extra)
    return env


def test_user_creates_keys_and_a_token_the_server_accepts(tmp_path: Path) -> None:
    env = _env(tmp_path)
    created = runner.invoke(_app(), ["keys", "create"], env=env)
    assert created.exit_code == 0, created.output
    public_key = created.stdout.strip()
    assert public_key.startswith("ed25519/") and "\n" not in public_key
    key_file = tmp_path / "config" / "wattvisor" / "key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert str(key_file) in created.stderr
    assert "ed25519-private" not in created.output

    minted = runner.invoke(_app(), ["token", "create", "--user", "alice", "--ttl", "30m"], env=env)
    assert minted.exit_code == 0, minted.output
    token = minted.stdout.strip()
    assert token and "\n" not in token and token not in minted.stderr
    registry = UserRegistry(
        [RegisteredUser(name="alice", project="p", role="member", public_key=public_key)]
    )
    verified = TokenVerifier(registry.lookup).verify(token, operation="write")
    assert verified.principal.user == "alice"
    remaining = verified.expires - verified.expires.now(verified.expires.tzinfo)
    assert timedelta(minutes=28) < remaining <= timedelta(minutes=30)


def test_keys_create_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = tmp_path / "k"
    first = runner.invoke(_app(), ["keys", "create", "--out", str(out)], env=env)
    assert first.exit_code == 0
    before = out.read_bytes()
    again = runner.invoke(_app(), ["keys", "create", "--out", str(out)], env=env)
    assert again.exit_code == 1
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert out.read_bytes() == before
    forced = runner.invoke(_app(), ["keys", "create", "--out", str(out), "--force"], env=env)
    assert forced.exit_code == 0 and out.read_bytes() != before


def test_read_only_token_cannot_write(tmp_path: Path) -> None:
    env = _env(tmp_path)
    public_key = runner.invoke(_app(), ["keys", "create"], env=env).stdout.strip()
    minted = runner.invoke(_app(), ["token", "create", "--user", "alice", "--read-only"], env=env)
    assert minted.exit_code == 0, minted.output
    registry = UserRegistry(
        [RegisteredUser(name="alice", project="p", role="member", public_key=public_key)]
    )
    verifier = TokenVerifier(registry.lookup)
    token = minted.stdout.strip()
    assert verifier.verify(token, operation="read").principal.user == "alice"
    with pytest.raises(TokenCheckFailed):
        verifier.verify(token, operation="write")


def test_admin_token_is_printed_alone_and_verifies_as_admin(tmp_path: Path) -> None:
    env = _env(tmp_path)
    files = ensure_admin_key(tmp_path / "data" / "admin.key")
    minted = runner.invoke(_app(), ["token", "create", "--admin"], env=env)
    assert minted.exit_code == 0, minted.output
    lines = minted.stdout.splitlines()
    assert len(lines) == 1
    verifier = TokenVerifier(UserRegistry([admin_user(files.public_key)]).lookup)
    assert verifier.verify(lines[0], operation="write").principal.is_admin


def test_admin_token_without_admin_key_says_where_it_looked(tmp_path: Path) -> None:
    result = runner.invoke(_app(), ["token", "create", "--admin"], env=_env(tmp_path))
    assert result.exit_code == 1
    assert str(tmp_path / "data" / "admin.key") in result.stderr.replace("\n", "")
    assert result.stdout == ""


@pytest.mark.parametrize("ttl", ["1 hour", "-1h", "0m", "h", "1y"])
def test_bad_ttl_names_the_value_and_the_accepted_forms(tmp_path: Path, ttl: str) -> None:
    result = runner.invoke(
        _app(), ["token", "create", "--user", "alice", "--ttl", ttl], env=_env(tmp_path)
    )
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert repr(ttl) in text
    assert "30m" in text and "7d" in text


def test_ttl_above_the_server_maximum_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path, WATTVISOR_AUTH__MAX_TOKEN_TTL_S=str(86400))
    result = runner.invoke(_app(), ["token", "create", "--user", "alice", "--ttl", "2d"], env=env)
    assert result.exit_code == 2
    assert "maximum of 1d" in " ".join(result.stderr.split())


def test_token_without_user_says_how_to_name_one(tmp_path: Path) -> None:
    result = runner.invoke(_app(), ["token", "create"], env=_env(tmp_path))
    assert result.exit_code == 2
    assert "--user" in result.stderr and "WATTVISOR_USER" in result.stderr


def test_token_with_a_loose_key_file_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path)
    runner.invoke(_app(), ["keys", "create", "--out", str(tmp_path / "k")], env=env)
    (tmp_path / "k").chmod(0o644)
    result = runner.invoke(
        _app(), ["token", "create", "--user", "a", "--key", str(tmp_path / "k")], env=env
    )
    assert result.exit_code == 1
    assert "chmod 600" in " ".join(result.stderr.split())
    assert result.stdout == ""
