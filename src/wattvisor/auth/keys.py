"""Ed25519 key files: create them safely, load them strictly, mint tokens from them.

A private key file holds one line, ``ed25519-private/<64 hex>`` (the form
biscuit-python prints and parses); its public half sits next to it in
``<file>.pub`` as ``ed25519/<64 hex>``. Private key files are created 0600 with
``O_EXCL`` (so two processes never both "create" one key) and are refused when
other users can read them, like ssh does. Neither key nor token is ever logged.

The admin key: on first start the controller calls :func:`ensure_admin_key`,
which creates ``<data_dir>/admin.key`` if missing; the server registers its
public key as the admin user (:func:`admin_user`). Whoever can read that file
on the controller machine is the admin (``wattvisor token create --admin``), so
the key can be replaced (:func:`rotate_admin_key`, ``wattvisor keys rotate-admin``):
from then on the old key's tokens are refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from biscuit_auth import KeyPair, PrivateKey

from wattvisor.auth.errors import KeyFileError
from wattvisor.auth.tokens import mint_token
from wattvisor.auth.users import RegisteredUser
from wattvisor.config.settings import Settings

PRIVATE_PREFIX = "ed25519-private/"
_PRIVATE_BODY = re.compile(r"[0-9a-fA-F]{64}")
ADMIN_USER = "admin"
ADMIN_PROJECT = "admin"


@dataclass(frozen=True)
class KeyFiles:
    """Where a key pair was written (or found) and its public key text."""

    private_path: Path
    public_path: Path
    public_key: str
    created: bool


def public_key_path(private_path: Path) -> Path:
    """``<private>.pub``: where the public half of a key file lives."""
    return private_path.with_name(private_path.name + ".pub")


def default_user_key_path() -> Path:
    """``$XDG_CONFIG_HOME/wattvisor/key`` (``~/.config/wattvisor/key``): a user's own key."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "wattvisor" / "key"


def create_key_pair(private_path: Path, *, force: bool = False, dir_mode: int = 0o700) -> KeyFiles:
    """Write a new key pair to ``private_path`` (0600) and ``<private_path>.pub`` (0644).

    An existing key is never overwritten unless ``force``: losing a private key
    locks its owner out. With ``force`` the old files are replaced atomically.
    A missing parent directory is created with ``dir_mode``.
    """
    public_path = public_key_path(private_path)
    if not force:
        for existing in (private_path, public_path):
            if existing.exists() or existing.is_symlink():
                raise KeyFileError(
                    f"key file {str(existing)!r} already exists; refusing to overwrite it "
                    "(pass --force to replace the key pair, which invalidates its tokens)"
                )
    if not private_path.parent.exists():
        private_path.parent.mkdir(parents=True, mode=dir_mode)
    pair = KeyPair()
    private_text = repr(pair.private_key) + "\n"
    public_text = repr(pair.public_key)
    if force:
        _replace_file(private_path, private_text, 0o600)
    else:
        _create_exclusive(private_path, private_text, 0o600)
    try:
        _replace_file(public_path, public_text + "\n", 0o644)
    except OSError:
        if not force:
            private_path.unlink(missing_ok=True)
        raise
    return KeyFiles(private_path, public_path, public_text, created=True)


def load_private_key(path: Path) -> PrivateKey:
    """The private key in ``path``; refused if the file is readable by other users."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise KeyFileError(
            f"key file {str(path)!r} does not exist; create one with `wattvisor keys create`"
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"key file {str(path)!r} cannot be opened: {exc.strerror}") from exc
    with os.fdopen(fd, "r", encoding="ascii", errors="replace") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {str(path)!r} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"key file {str(path)!r} has mode {mode:04o}, readable by other users; "
                f"private keys must be 0600 (run: chmod 600 {path})"
            )
        text = handle.read(4096).strip()
    body = text[len(PRIVATE_PREFIX) :] if text.startswith(PRIVATE_PREFIX) else text
    if not _PRIVATE_BODY.fullmatch(body):
        raise KeyFileError(
            f"key file {str(path)!r} does not hold an Ed25519 private key; expected one "
            f"line '{PRIVATE_PREFIX}<64 hex digits>' as written by `wattvisor keys create`"
        )
    try:
        return PrivateKey(PRIVATE_PREFIX + body.lower())
    except ValueError as exc:
        raise KeyFileError(f"key file {str(path)!r} holds an unusable private key") from exc


def public_key_of(private_key: PrivateKey) -> str:
    """``ed25519/<hex>`` of the public half of ``private_key``."""
    return repr(KeyPair.from_private_key(private_key).public_key)


def ensure_admin_key(path: Path) -> KeyFiles:
    """The admin key pair at ``path``, created on first start (``created`` says which).

    Safe when several processes start at once: creation is exclusive, and a
    process that loses the race loads the winner's key.
    """
    try:
        # The data directory also holds files QEMU must reach (config drives), so a
        # directory created here stays traversable; the key file itself is 0600.
        return create_key_pair(path, dir_mode=0o755)
    except KeyFileError:
        if not path.exists():
            raise
    except FileExistsError:
        pass
    key = load_private_key(path)
    public = public_key_of(key)
    pub_path = public_key_path(path)
    if not pub_path.exists():
        _replace_file(pub_path, public + "\n", 0o644)
    return KeyFiles(path, pub_path, public, created=False)


def rotate_admin_key(path: Path, register: Callable[[str], object]) -> KeyFiles:
    """Replace the admin key pair at ``path``; tokens signed with the old key stop working.

    ``register(public_key)`` makes the new key the admin's registered key in the store;
    from that commit on every controller sharing the store refuses the old key's
    tokens (see :func:`rotate_key_file` for the order of the steps).
    """
    return rotate_key_file(
        path, register, what="admin key",
        missing="it is created when the controller first starts (`wattvisor up`) on this "
        "machine, with the same data_dir",
    )  # fmt: skip


def rotate_key_file(
    path: Path, register: Callable[[str], object], *, what: str, missing: str
) -> KeyFiles:
    """Replace the key pair whose private half is the file at ``path`` (every key file of
    wattvisor is rotated this way: 0600, synced, atomic).

    The order keeps the key's users able to get in whatever fails: the new private key
    is written (0600, synced) beside the old one first, then ``register(public_key)``
    records it in the store, and only then it is moved over the old file. A failure
    before the store changed leaves all as it was; a failure after it names the file
    that holds the new key. ``what`` names the key in errors; ``missing`` says where a
    missing file comes from.
    """
    if not path.exists():
        raise KeyFileError(f"no {what} at {str(path)!r}; {missing}")
    pair = KeyPair()
    public = repr(pair.public_key)
    staged = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
    _create_exclusive(staged, repr(pair.private_key) + "\n", 0o600)
    try:
        register(public)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    try:
        os.replace(staged, path)
        _sync_directory(path.parent)
        _replace_file(public_key_path(path), public + "\n", 0o644)
    except OSError as exc:
        raise KeyFileError(
            f"the store now holds the new {what}, but {str(path)!r} could not be "
            f"replaced ({exc.strerror}); the new private key is in {str(staged)!r}: move it "
            f"to {str(path)!r}"
        ) from exc
    return KeyFiles(path, public_key_path(path), public, created=True)


@dataclass(frozen=True)
class AdminBootstrap:
    """The admin key pair at start-up and the user to register for it."""

    files: KeyFiles
    user: RegisteredUser

    @property
    def message(self) -> str:
        """What start-up tells the operator (where the key is, how to get a token)."""
        verb = "created" if self.files.created else "using"
        return (
            f"admin key {verb}: {self.files.private_path} (mode 0600); admin user "
            f"{self.user.name!r}; mint a token on this machine with "
            "`wattvisor token create --admin`"
        )


def bootstrap_admin(settings: Settings) -> AdminBootstrap:
    """Create (first start) or load the admin key and describe the admin user for the registry.

    The caller registers ``.user`` in its user store (replacing an older admin key
    if the file was recreated) and prints ``.message``.
    """
    files = ensure_admin_key(settings.admin_key_path)
    user = admin_user(
        files.public_key, name=settings.auth.admin_user, project=settings.auth.admin_project
    )
    return AdminBootstrap(files, user)


def admin_user(
    public_key: str, *, name: str = ADMIN_USER, project: str = ADMIN_PROJECT
) -> RegisteredUser:
    """The registry entry for the holder of the admin key file."""
    return RegisteredUser(name=name, project=project, role="admin", public_key=public_key)


def mint_token_from_file(
    key_path: Path,
    user: str,
    ttl: timedelta,
    *,
    read_only: bool = False,
    now: datetime | None = None,
) -> str:
    """A token for ``user`` signed with the private key in ``key_path``."""
    return mint_token(load_private_key(key_path), user, ttl, read_only=read_only, now=now)


def _create_exclusive(path: Path, text: str, mode: int) -> None:
    """Create ``path`` only if absent; a failed write leaves no file behind."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _sync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_file(path: Path, text: str, mode: int) -> None:
    """Atomically put ``text`` at ``path`` (temp file created with ``mode``, then rename)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    _create_exclusive(tmp, text, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
