"""Can the account QEMU runs as reach the data directory? Checked before ``wattvisor up`` starts.

libvirt's system daemon runs every guest as the ``user`` of ``/etc/libvirt/qemu.conf``
(Debian's default: ``libvirt-qemu``), and QEMU opens the config drives and volumes
under ``data_dir`` itself. A data directory below a directory that account cannot
enter (``mktemp -d`` makes one with mode 0700) lets the service start and then
fails every server with "Permission denied". So the start-up asks the question
the kernel will ask: may that user search every directory from ``/`` down to
``data_dir``? Owner, group and other bits are weighed as the kernel does,
including POSIX ACLs, so an ACL that grants the account access is honoured.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
DEFAULT_QEMU_USER = "libvirt-qemu"  # Debian's build of libvirt (--with-qemu-user)
DEFAULT_QEMU_GROUP = "libvirt-qemu"

_SETTING = re.compile(r'^\s*(user|group)\s*=\s*"([^"]*)"\s*(?:#.*)?$')
_ACL_XATTR = "system.posix_acl_access"
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20,
)  # fmt: skip
_ACL_EXECUTE = 0x01


class DataDirUnreachable(RuntimeError):
    """QEMU's account cannot enter the data directory; the message says what to change."""


@dataclass(frozen=True)
class QemuIdentity:
    """The account libvirt runs QEMU as: user, group, supplementary groups."""

    user: str
    uid: int
    gids: frozenset[int]

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def runs_local_system_qemu(uri: str) -> bool:
    """True for URIs of this machine's system QEMU daemon (``qemu:///system``,
    ``qemu+unix:///system``): only there does QEMU run as the ``qemu.conf`` account."""
    parts = urlsplit(uri)
    driver, _, transport = parts.scheme.partition("+")
    return (
        driver == "qemu"
        and transport in ("", "unix")
        and not parts.hostname
        and parts.path.rstrip("/") == "/system"
    )


def _qemu_conf_settings(qemu_conf: Path) -> dict[str, str]:
    try:
        text = qemu_conf.read_text()
    except FileNotFoundError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _SETTING.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def qemu_identity(qemu_conf: Path = QEMU_CONF) -> QemuIdentity | None:
    """Who QEMU runs as, from ``qemu.conf`` (``user``/``group``, ``+N`` for numeric ids),
    else libvirt's defaults. None when that account does not exist here: libvirt then
    refuses to start guests anyway and says so itself."""
    conf = _qemu_conf_settings(qemu_conf)
    user = conf.get("user", DEFAULT_QEMU_USER)
    group = conf.get("group", DEFAULT_QEMU_GROUP)
    name: str | None
    try:
        if user.startswith("+"):
            uid = int(user[1:])
            try:
                entry = pwd.getpwuid(uid)
                name, primary = entry.pw_name, entry.pw_gid
            except KeyError:
                name, primary = None, None
        else:
            entry = pwd.getpwnam(user)
            name, uid, primary = entry.pw_name, entry.pw_uid, entry.pw_gid
        gid = int(group[1:]) if group.startswith("+") else grp.getgrnam(group).gr_gid
    except (KeyError, ValueError):
        return None
    gids = {gid}
    if name is not None and primary is not None:
        gids.update(os.getgrouplist(name, primary))
    return QemuIdentity(user=user, uid=uid, gids=frozenset(gids))


def _acl_entries(path: Path) -> list[tuple[int, int, int]] | None:
    """The access ACL of ``path`` as (tag, perm, id) entries, or None without one."""
    try:
        raw = os.getxattr(path, _ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    if len(raw) < 4 or (len(raw) - 4) % 8:
        return None
    return [struct.unpack_from("<HHI", raw, offset) for offset in range(4, len(raw), 8)]


def can_search(path: Path, who: QemuIdentity) -> bool:
    """Whether ``who`` may search (enter) the directory ``path``, as the kernel decides."""
    if who.is_root:
        return True
    st = path.stat()
    acl = _acl_entries(path)
    if acl is None:
        if st.st_uid == who.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid in who.gids:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)
    mask = next((perm for tag, perm, _ in acl if tag == _ACL_MASK), 0x07)
    if st.st_uid == who.uid:
        return any(tag == _ACL_USER_OBJ and perm & _ACL_EXECUTE for tag, perm, _ in acl)
    for tag, perm, ident in acl:
        if tag == _ACL_USER and ident == who.uid:
            return bool(perm & mask & _ACL_EXECUTE)
    groups = [
        perm
        for tag, perm, ident in acl
        if (tag == _ACL_GROUP_OBJ and st.st_gid in who.gids)
        or (tag == _ACL_GROUP and ident in who.gids)
    ]
    if groups:
        return any(perm & mask & _ACL_EXECUTE for perm in groups)
    return any(tag == _ACL_OTHER and perm & _ACL_EXECUTE for tag, perm, _ in acl)


def first_unsearchable(path: Path, who: QemuIdentity) -> Path | None:
    """The directory nearest ``/`` on the way to ``path`` that ``who`` cannot enter."""
    resolved = path.resolve()
    for directory in [*reversed(resolved.parents), resolved]:
        if directory.exists() and not can_search(directory, who):
            return directory
    return None


def check_data_dir(data_dir: Path, uri: str, qemu_conf: Path = QEMU_CONF) -> None:
    """Raise :class:`DataDirUnreachable` when QEMU, run by ``uri``'s daemon, could not
    open files under ``data_dir``; do nothing for other drivers or when QEMU runs as root."""
    if not runs_local_system_qemu(uri):
        return
    who = qemu_identity(qemu_conf)
    if who is None or who.is_root:
        return
    blocked = first_unsearchable(data_dir, who)
    if blocked is None:
        return
    st = blocked.stat()
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    raise DataDirUnreachable(
        f"data_dir {str(data_dir)!r} cannot be used with {uri}: QEMU runs as user "
        f"{who.user!r} (the 'user' of {qemu_conf}) and cannot enter {str(blocked)!r} "
        f"(mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}:{group}), so every server "
        f"would fail to open its config drive and volumes. Run `chmod o+x {blocked}` or "
        "choose a data_dir every user can traverse (data_dir / WATTVISOR_DATA_DIR)"
    )
