"""Bring up a real libvirtd + virtlogd on this machine without systemd (development only).

Development boxes and CI machines have the libvirt daemon and its QEMU driver
installed (``make setup``) but usually no service manager to start them, and
often not the ``libvirt-daemon-system`` package that creates the accounts the
QEMU driver needs. This module does that one job: when no daemon answers on
``qemu:///system``, create what is missing (run directories, the
``libvirt-qemu`` account exactly as ``libvirt-daemon-system`` would), start
``virtlogd`` and ``libvirtd``, wait until the daemon really answers, and
remember the pids of what it started so that only those are stopped later.

Guests keep running as the unprivileged ``libvirt-qemu`` user, as on a host
installed from packages; we do not write a ``qemu.conf`` with ``user = "root"``
because that would change the permission model the tests are meant to exercise
and would linger in ``/etc`` for whoever installs libvirt properly later. The
price is that files QEMU opens itself (kernel, initrd) must sit in directories
every user can traverse; :mod:`wattvisor.images` takes care of that for the
guest image.

Several processes may share one daemon (a test session, ``wattvisor up``, a
second test session). Every user holds a shared ``flock`` on a lock file while
it relies on the daemon; the process that started the daemon stops it only
when it can take that lock exclusively, i.e. when nobody else still uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

SYSTEM_URI = "qemu:///system"
RUN_DIR = Path("/run/libvirt")
LOG_DIR = Path("/var/log/libvirt")
LIBVIRTD_SOCKET = RUN_DIR / "libvirt-sock"
VIRTLOGD_SOCKET = RUN_DIR / "virtlogd-sock"
LIBVIRTD_PIDFILE = Path("/run/libvirtd.pid")
VIRTLOGD_PIDFILE = Path("/run/virtlogd.pid")
LIBVIRTD_LOG = LOG_DIR / "libvirtd.log"
IPTABLES = Path("/usr/sbin/iptables")
VIRTLOGD_LOG = LOG_DIR / "virtlogd.log"
# Serialises start-up between processes; held only while checking and starting.
_START_LOCK = Path("/run/wattvisor-localvirt.start.lock")
# Shared by every process relying on a daemon started here; see the module docstring.
_USERS_LOCK = Path("/run/wattvisor-localvirt.users.lock")

QEMU_USER = "libvirt-qemu"
QEMU_GROUPS = ("kvm", "libvirt-qemu")
_SETUP_HINT = "run `make setup` (installs libvirt-daemon, libvirt-daemon-driver-qemu)"


class LocalVirtError(RuntimeError):
    """libvirtd could not be brought up; the message says what is missing and what to do."""


@dataclass(frozen=True)
class DaemonProcess:
    """One daemon this module started."""

    name: str
    pid: int


@dataclass
class StartedDaemons:
    """What :func:`ensure_libvirtd` did, and the handle to undo it.

    ``daemons`` lists only processes started by this call (empty when a daemon
    already answered), so :meth:`stop` never touches a daemon someone else runs.
    """

    uri: str
    daemons: tuple[DaemonProcess, ...] = ()
    created: tuple[str, ...] = ()
    already_running: bool = False
    notes: tuple[str, ...] = ()
    users_lock: Path = _USERS_LOCK
    _users_lock_fd: int | None = field(default=None, repr=False)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(d.pid for d in self.daemons)

    def summary(self) -> str:
        """One human-readable paragraph for ``make run`` / the CLI."""
        notes = "".join(f"; note: {note}" for note in self.notes)
        if self.already_running:
            fixed = "".join(f"; set {item}" for item in self.created)
            return f"libvirtd already answers on {self.uri}; nothing started{fixed}{notes}"
        lines = [f"libvirtd answers on {self.uri}"]
        lines.extend(f"created {item}" for item in self.created)
        lines.extend(f"started {d.name} (pid {d.pid})" for d in self.daemons)
        return "; ".join(lines) + notes

    def release(self) -> None:
        """Stop relying on the daemon without stopping it (drops the shared lock)."""
        if self._users_lock_fd is not None:
            os.close(self._users_lock_fd)
            self._users_lock_fd = None

    def stop(self, timeout_s: float = 15.0) -> list[DaemonProcess]:
        """Stop the daemons this call started, unless another process still uses them.

        Returns the daemons actually stopped. libvirtd goes first so that it does
        not lose its log daemon while shutting guests' log files.
        """
        self.release()
        if not self.daemons:
            return []
        fd = os.open(self.users_lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []  # another process still relies on the daemon: leave it running
            stopped: list[DaemonProcess] = []
            order = sorted(self.daemons, key=lambda d: d.name != "libvirtd")
            for daemon in order:
                if _terminate(daemon.pid, daemon.name, timeout_s):
                    stopped.append(daemon)
            self.daemons = tuple(d for d in self.daemons if d not in stopped)
            return stopped
        finally:
            os.close(fd)


def _silence_libvirt_errors() -> None:
    # libvirt prints every error to stderr unless a handler is set; callers get
    # the same information from the raised libvirtError.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def libvirtd_answers(uri: str = SYSTEM_URI) -> bool:
    """True when a libvirt daemon accepts a connection on ``uri`` right now."""
    _silence_libvirt_errors()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    try:
        conn.getVersion()
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def _socket_answers(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def find_daemon_binary(name: str) -> str:
    """Absolute path of a libvirt daemon binary, or LocalVirtError saying how to install it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if found is None:
        raise LocalVirtError(
            f"{name} is not installed (looked in PATH and /usr/sbin); {_SETUP_HINT}"
        )
    return found


def _ensure_accounts() -> list[str]:
    """Create the account libvirt's QEMU driver runs guests as, like libvirt-daemon-system.

    Debian builds libvirt with ``qemu_user = qemu_group = libvirt-qemu``; its
    postinst creates the system groups ``kvm`` and ``libvirt-qemu`` and a system
    user ``libvirt-qemu`` (home /var/lib/libvirt, no login) in both.
    """
    created: list[str] = []
    for group in QEMU_GROUPS:
        try:
            grp.getgrnam(group)
        except KeyError:
            _run(["groupadd", "--system", group])
            created.append(f"group {group}")
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        _run(
            [
                "useradd",
                "--system",
                "--gid",
                "libvirt-qemu",
                "--groups",
                "kvm",
                "--home-dir",
                "/var/lib/libvirt",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "Libvirt Qemu",
                QEMU_USER,
            ]
        )
        created.append(f"user {QEMU_USER}")
    return created


def _ensure_kvm_device_access() -> list[str]:
    """Give /dev/kvm the owner and mode udev gives it on Debian (root:kvm 0660).

    Without udev the node stays root-only. libvirt then finds KVM when it probes
    QEMU (as root) but not when it checks access as ``libvirt-qemu``, declares its
    capability cache outdated on every lookup and re-probes QEMU about ten times
    per domain start: 40 s instead of 0.2 s, even for ``<domain type='qemu'>``.
    """
    kvm = Path("/dev/kvm")
    try:
        st = kvm.stat()
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        return []
    if st.st_gid == kvm_gid and st.st_mode & 0o060 == 0o060:
        return []
    os.chown(kvm, -1, kvm_gid)
    os.chmod(kvm, (st.st_mode & 0o7777) | 0o660)
    return ["access for group kvm on /dev/kvm (root:kvm 0660, as udev would)"]


def _ensure_dirs() -> list[str]:
    created: list[str] = []
    for directory in (RUN_DIR, LOG_DIR, Path("/var/lib/libvirt")):
        if not directory.is_dir():
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            created.append(f"directory {directory}")
    return created


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalVirtError(
            f"`{' '.join(argv)}` failed with exit code {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}"
        )


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _terminate(pid: int, name: str, timeout_s: float) -> bool:
    if not _pid_alive(pid) or not _is_process(pid, name):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


def process_started_before(pid: int, path: Path) -> bool:
    """True when process ``pid`` started before ``path`` (or the file it links to) last
    changed, e.g. a daemon running since before a package installed that program.

    The start time is worked out from whole-second boot time, so it errs early: a
    file changed after the process started is always seen as such.
    """
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        changed = max(path.lstat().st_ctime, path.stat().st_ctime)
    except (OSError, IndexError, ValueError, StopIteration):
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") < changed


def _firewall_notes() -> tuple[str, ...]:
    """libvirtd picks its firewall backend when it starts; a daemon older than iptables
    fails to start every libvirt network until it is restarted."""
    pid = _read_pid(LIBVIRTD_PIDFILE)
    if pid is None or not _is_process(pid, "libvirtd") or not IPTABLES.exists():
        return ()
    if not process_started_before(pid, IPTABLES):
        return ()
    return (
        f"libvirtd (pid {pid}) started before {IPTABLES} was installed, so libvirt networks "
        "fail to start until it is restarted: stop it, then run `wattvisor dev libvirtd-up`",
    )


def _is_process(pid: int, name: str) -> bool:
    """Guard against pid reuse: only signal a process that is still the daemon we started."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm == name


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _start_daemon(name: str, pidfile: Path, logfile: Path) -> DaemonProcess:
    binary = find_daemon_binary(name)
    env = dict(os.environ)
    # Daemonised, both log to nowhere by default; keep errors where a user can read them.
    env["LIBVIRT_LOG_OUTPUTS"] = f"3:file:{logfile}"
    result = subprocess.run(
        [binary, "--daemon", "--pid-file", str(pidfile)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise LocalVirtError(
            f"{binary} --daemon exited with code {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}\nlast lines of {logfile}:\n"
            f"{_log_tail(logfile)}"
        )
    pid = _read_pid(pidfile)
    if pid is None:
        raise LocalVirtError(f"{binary} started but wrote no pid to {pidfile}")
    return DaemonProcess(name=name, pid=pid)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _hold_users_lock() -> int | None:
    try:
        fd = os.open(_USERS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None  # not root and no lock file yet: nobody here can stop the daemon anyway
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def ensure_libvirtd(
    uri: str = SYSTEM_URI, timeout_s: float = 60.0, hold: bool = True
) -> StartedDaemons:
    """Make sure a libvirt daemon answers on ``uri``; start one if none does.

    Idempotent: when a daemon already answers, nothing is created or started.
    With ``hold`` the returned object keeps a shared lock that stops another
    process from shutting the daemon down underneath us (see :meth:`StartedDaemons.stop`).
    Only ``qemu:///system`` can be started here; other URIs are only probed.
    """
    if libvirtd_answers(uri):
        # A daemon started elsewhere may still suffer the /dev/kvm slowdown; fixing
        # the node is harmless and idempotent.
        fixed = tuple(_ensure_kvm_device_access()) if os.geteuid() == 0 else ()
        return StartedDaemons(
            uri=uri,
            already_running=True,
            created=fixed,
            notes=_firewall_notes(),
            _users_lock_fd=_hold_users_lock() if hold else None,
        )
    if uri != SYSTEM_URI:
        raise LocalVirtError(
            f"no libvirt daemon answers on {uri!r} and only {SYSTEM_URI!r} can be started here"
        )
    if os.geteuid() != 0:
        raise LocalVirtError(
            f"no libvirt daemon answers on {uri} and starting one needs root (euid is "
            f"{os.geteuid()}); run as root or start libvirtd yourself"
        )
    find_daemon_binary("libvirtd")
    find_daemon_binary("virtlogd")
    if not _qemu_driver_present():
        raise LocalVirtError(f"libvirt's QEMU driver is not installed; {_SETUP_HINT}")
    with _exclusive(_START_LOCK):
        # Someone may have started it while we waited for the lock, or be starting it
        # right now without our lock (libvirtd takes seconds to answer the first time).
        existing = _read_pid(LIBVIRTD_PIDFILE)
        if existing is not None and _pid_alive(existing) and _is_process(existing, "libvirtd"):
            _wait_until_answers(uri, timeout_s, [])
        if libvirtd_answers(uri):
            return StartedDaemons(
                uri=uri,
                already_running=True,
                _users_lock_fd=_hold_users_lock() if hold else None,
            )
        created = _ensure_dirs() + _ensure_accounts() + _ensure_kvm_device_access()
        started: list[DaemonProcess] = []
        users_fd = _hold_users_lock() if hold else None
        try:
            if not _socket_answers(VIRTLOGD_SOCKET):
                started.append(_start_daemon("virtlogd", VIRTLOGD_PIDFILE, VIRTLOGD_LOG))
            started.append(_start_daemon("libvirtd", LIBVIRTD_PIDFILE, LIBVIRTD_LOG))
            _wait_until_answers(uri, timeout_s, started)
        except BaseException:
            for daemon in reversed(started):
                _terminate(daemon.pid, daemon.name, 5.0)
            if users_fd is not None:
                os.close(users_fd)
            raise
        return StartedDaemons(
            uri=uri, daemons=tuple(started), created=tuple(created), _users_lock_fd=users_fd
        )


def _qemu_driver_present() -> bool:
    return any(Path("/usr/lib").glob("*/libvirt/connection-driver/libvirt_driver_qemu.so"))


def _wait_until_answers(uri: str, timeout_s: float, started: list[DaemonProcess]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if libvirtd_answers(uri):
            return
        for daemon in started:
            if not _pid_alive(daemon.pid):
                log = LIBVIRTD_LOG if daemon.name == "libvirtd" else VIRTLOGD_LOG
                raise LocalVirtError(
                    f"{daemon.name} (pid {daemon.pid}) exited during start-up; last lines of "
                    f"{log}:\n{_log_tail(log)}"
                )
        time.sleep(0.2)
    raise LocalVirtError(
        f"libvirtd did not answer on {uri} within {timeout_s:.0f} s; last lines of "
        f"{LIBVIRTD_LOG}:\n{_log_tail(LIBVIRTD_LOG)}"
    )


def libvirtd_up_summary(uri: str = SYSTEM_URI, timeout_s: float = 60.0) -> str:
    """Ensure a daemon for ``make run`` / ``wattvisor dev libvirtd-up`` and describe it.

    The daemons started here are meant to outlive the command, so no lock is held.
    """
    return ensure_libvirtd(uri, timeout_s=timeout_s, hold=False).summary()
