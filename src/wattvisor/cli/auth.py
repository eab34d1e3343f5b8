"""``wattvisor keys ...`` and ``wattvisor token ...``: key pairs and API tokens.

Register with ``app.add_typer(keys_app, name="keys")`` and
``app.add_typer(token_app, name="token")``. Tokens and public keys go to stdout
alone (for scripts: ``TOKEN=$(wattvisor token create --admin)``); everything
else goes to stderr, unwrapped so that paths can be copied. Private keys and
tokens are never written to stderr.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from wattvisor.auth.errors import InvalidTTL, InvalidUserName, KeyFileError
from wattvisor.auth.keys import (
    create_key_pair,
    default_user_key_path,
    mint_token_from_file,
    rotate_admin_key,
)
from wattvisor.auth.tokens import format_ttl, parse_ttl
from wattvisor.auth.users import validate_user_name
from wattvisor.cli.context import err, fail, state

keys_app = typer.Typer(help="Ed25519 key pairs that sign your API tokens.", no_args_is_help=True)
token_app = typer.Typer(help="Biscuit tokens for the wattvisor API.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Private key file (default ~/.config/wattvisor/key)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing key pair (its tokens stop working)."),
    ] = False,
) -> None:
    """Create a key pair; print the public key, which an admin registers for you."""
    path = out or default_user_key_path()
    try:
        files = create_key_pair(path, force=force)
    except KeyFileError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"cannot write key file {str(path)!r}: {exc.strerror}") from exc
    err.print(
        f"private key written to {escape(str(files.private_path))} (mode 0600, keep it secret); "
        f"public key in {escape(str(files.public_path))}. Give the public key below to an admin.",
        soft_wrap=True,
    )
    sys.stdout.write(files.public_key + "\n")


@keys_app.command("rotate-admin")
def keys_rotate_admin() -> None:
    """Replace this controller's admin key pair; the old key's tokens stop working at once.

    Run it on the controller (it writes the admin key file and the store). Every
    controller sharing the store refuses the old key from the moment the store holds
    the new one, running ones included. Prints the new public key.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from wattvisor.compute import ComputeError, UserStore
    from wattvisor.store import make_engine, migrate

    settings = state.settings()
    path = settings.admin_key_path
    auth = settings.auth
    try:
        engine = make_engine(settings.store_url)
    except (ValueError, SQLAlchemyError) as exc:
        raise fail(f"cannot open the store {settings.store.url or 'in data_dir'}: {exc}") from exc
    try:
        migrate(engine)
        users = UserStore(engine)
        files = rotate_admin_key(
            path,
            lambda public_key: users.register(
                auth.admin_user, auth.admin_project, "admin", public_key, replace=True
            ),
        )
    except KeyFileError as exc:
        raise fail(str(exc)) from exc
    except ComputeError as exc:
        raise fail(exc.message) from exc
    except SQLAlchemyError as exc:
        raise fail(f"the store cannot be updated, so the admin key is unchanged: {exc}") from exc
    except OSError as exc:
        raise fail(f"cannot write next to {str(path)!r}: {exc.strerror}; nothing changed") from exc
    else:
        # Whoever held the old key may have made admins of their own: name them.
        others = [
            u.name for u in users.list_all() if u.role == "admin" and u.name != auth.admin_user
        ]
    finally:
        engine.dispose()
    err.print(
        f"admin key of user {escape(auth.admin_user)} replaced: {escape(str(files.private_path))} "
        "(mode 0600). Tokens signed with the old key are refused from now on, by running "
        "controllers too; mint a new one with `wattvisor token create --admin`.",
        soft_wrap=True,
    )
    if others:
        err.print(
            f"other users with role admin: {escape(', '.join(others))}; remove any you do not "
            "know (`wattvisor user delete NAME`), their keys are not affected by this rotation",
            soft_wrap=True,
        )
    sys.stdout.write(files.public_key + "\n")


@keys_app.command("rotate-cluster")
def keys_rotate_cluster() -> None:
    """Replace the cluster key, which signs join tokens and the controllers' calls to agents.

    Run it on a controller (it writes the cluster key file and the store). The previous
    key stays accepted for auth.cluster_key_grace_s, by the controllers for join tokens
    and by the agents, which learn the new key with their next heartbeat. Copy the new
    key file to every other controller of the cluster within that time. Prints the new
    public key.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from wattvisor.auth.cluster_keys import rotate_cluster_key
    from wattvisor.compute import ComputeError
    from wattvisor.compute.host_trust import ClusterKeys
    from wattvisor.store import make_engine, migrate

    settings = state.settings()
    path = settings.cluster_key_path
    grace = timedelta(seconds=settings.auth.cluster_key_grace_s)
    try:
        engine = make_engine(settings.store_url)
    except (ValueError, SQLAlchemyError) as exc:
        raise fail(f"cannot open the store {settings.store.url or 'in data_dir'}: {exc}") from exc
    try:
        migrate(engine)
        cluster = ClusterKeys(engine)
        files = rotate_cluster_key(path, lambda public_key: cluster.rotate(public_key, grace))
        cluster_id = cluster.require().cluster_id
    except KeyFileError as exc:
        raise fail(str(exc)) from exc
    except ComputeError as exc:
        raise fail(exc.message) from exc
    except SQLAlchemyError as exc:
        raise fail(f"the store cannot be updated, so the cluster key is unchanged: {exc}") from exc
    except OSError as exc:
        raise fail(f"cannot write next to {str(path)!r}: {exc.strerror}; nothing changed") from exc
    finally:
        engine.dispose()
    err.print(
        f"cluster key of cluster {escape(cluster_id)} replaced: {escape(str(path))} (mode "
        f"0600). The previous key stays accepted for {format_ttl(grace) if grace else '0s'}; "
        "copy the new file to every other controller of the cluster before then.",
        soft_wrap=True,
    )
    sys.stdout.write(files.public_key + "\n")


@token_app.command("create")
def token_create(
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 90s, 30m, 1h, 7d, 2w.")] = "1h",
    read_only: Annotated[
        bool,
        typer.Option("--read-only", help='Only GET/HEAD requests: check if operation("read").'),
    ] = False,
    admin: Annotated[
        bool, typer.Option("--admin", help="Sign with this machine's admin key as the admin user.")
    ] = False,
    key: Annotated[
        Path | None,
        typer.Option("--key", "-k", help="Private key file (default ~/.config/wattvisor/key)."),
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", "-u", envvar="WATTVISOR_USER", help="Your user name.")
    ] = None,
) -> None:
    """Mint a token and print it alone on stdout."""
    settings = state.settings()
    maximum = timedelta(seconds=settings.auth.max_token_ttl_s)
    try:
        lifetime = parse_ttl(ttl, maximum=maximum)
    except InvalidTTL as exc:
        raise fail(str(exc), 2) from exc
    if admin:
        if user is not None and user != settings.auth.admin_user:
            raise fail(
                f"--admin signs as the admin user {settings.auth.admin_user!r}; "
                f"drop --user {user!r} or drop --admin",
                2,
            )
        name = settings.auth.admin_user
        key_path = key or settings.admin_key_path
        if not key_path.exists():
            raise fail(
                f"no admin key at {str(key_path)!r}; it is created when the controller first "
                "starts (`wattvisor up`) on this machine, with the same data_dir"
            )
    else:
        if user is None:
            raise fail(
                "no user name: pass --user NAME (or set WATTVISOR_USER), or --admin for the "
                "admin key of this machine",
                2,
            )
        name = user
        key_path = key or default_user_key_path()
    try:
        validate_user_name(name)
        token = mint_token_from_file(key_path, name, lifetime, read_only=read_only)
    except (KeyFileError, InvalidUserName) as exc:
        raise fail(str(exc)) from exc
    err.print(
        f"token for {escape(name)}, valid {format_ttl(lifetime)}"
        + (", read-only" if read_only else ""),
        soft_wrap=True,
    )
    sys.stdout.write(token + "\n")
