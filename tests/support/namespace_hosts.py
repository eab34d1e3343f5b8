"""Several libvirt "hosts" on this one machine, for fleet tests: namespaces, not VMs.

A :class:`NamespaceHost` is a network namespace plus a private mount namespace (and
a UTS namespace, for a host name of its own) in which a libvirtd and a virtlogd of
its own run, reached over
``qemu+tcp://<address>/system``. The root filesystem stays shared, so kernels,
images and serial logs sit at the same paths on every host, like shared storage;
only libvirt's own directories (``/run/libvirt``, ``/var/lib/libvirt``,
``/etc/libvirt``, ``/var/log/libvirt``, ``/var/cache/libvirt``) are bind-mounted
per host, so each daemon has its own domains, sockets, pid files and host UUID.

Network: every host of a session hangs off one bridge in the root namespace
(``wvb-<hex>``), through a veth pair whose root end is named like the host
(``wvh-<hex>``). One bridge rather than a routed /30 per host because hosts must
reach each other directly (live migration streams from one QEMU to the other)
without turning on IP forwarding for the whole machine; the bridge holds the
session's first address so the tests, in the root namespace, reach every host
too. Each session takes a free /24 of 198.18.0.0/15 (the benchmarking range,
never routed off this machine). ``link_down`` takes the host's root-side veth
down: the host drops off the network as if its cable were pulled.

Namespaces are entered with ``nsenter`` and never ``ip netns exec``, which
remounts ``/sys`` and hides the cgroup mounts libvirt needs.

Clean-up is by identity, never by guess. Before anything is created, a marker
file under :data:`STATE_DIR` names what will be (namespace, links, directory)
and which process owns it (pid and start time). Tearing a host down stops its
guests through its own libvirtd, then ends every process whose network
namespace is the host's (the anchor, both daemons, QEMU, anything ``popen``
started) and removes the libvirt cgroups those QEMUs lived in, deletes the
namespace and its link, and the directory; the private mounts vanish with the
last process of the mount namespace. A session starts by sweeping what earlier
sessions left behind, but only those whose owning process is gone, so test runs
side by side never touch each other's hosts.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import libvirt
import pytest

from support.availability import unavailable
from support.session_owner import Owner
from support.session_owner import start_ticks_of as _start_ticks
from wattvisor.host.binaries import BINARIES

STATE_DIR = Path("/run/wattvisor-nshosts")
"""Markers and per-host directories (the sockets of a host's libvirtd live here too)."""
HOST_PREFIX = "wvh-"
BRIDGE_PREFIX = "wvb-"
NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
SUBNET_PREFIX = 24
LIBVIRTD_TCP_PORT = 16509
NETNS_DIR = Path("/run/netns")
OWNER_FILE = "owner.json"
HOST_FILE = "host.json"

IP = "ip"
NSENTER = "nsenter"
UNSHARE = "unshare"
SLEEP = "sleep"
MOUNT = "mount"
HOSTNAME = "hostname"
VIRTLOGD = "virtlogd"
LIBVIRTD = "libvirtd"

# Host directory name -> where it is bind-mounted inside the host.
LIBVIRT_DIRS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "etc": "/etc/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}
# Only configuration is copied from the machine's /etc/libvirt: persistent domains,
# networks, pools and secrets there belong to the machine's own daemon.
_COPIED_CONFIG = ("libvirt.conf", "libvirt-admin.conf", "qemu.conf", "nwfilter")
_EMPTY_CONFIG_DIRS = ("qemu", "qemu/networks", "storage", "secrets")

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class NamespaceHostError(RuntimeError):
    """A namespace host could not be made or reached; the message says which and why."""


# --- processes -------------------------------------------------------------------------


def _netns_inode(name: str) -> int | None:
    try:
        return (NETNS_DIR / name).stat().st_ino
    except OSError:
        return None


def processes_in_netns(inode: int) -> list[int]:
    """Every process whose network namespace is the one with ``inode``."""
    wanted = f"net:[{inode}]"
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "ns" / "net") == wanted:
                found.append(int(entry.name))
    return found


def _libvirt_cgroups(pid: int) -> list[Path]:
    """The cgroup directories libvirt made for QEMU ``pid`` (``machine/qemu-N-x.libvirt-qemu``).

    Read before the process is killed, removed after: a daemon that died first
    cannot remove them itself.
    """
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _hier, controllers, path = line.split(":", 2)
            if ".libvirt-qemu" not in path:
                continue
            if controllers == "":
                mount = "unified"
            elif controllers.startswith("name="):
                mount = controllers.removeprefix("name=")
            else:
                mount = controllers.split(",")[0]
            base = Path("/sys/fs/cgroup") / mount
            parts = Path(path.lstrip("/")).parts
            cut = next(i for i, p in enumerate(parts) if p.endswith(".libvirt-qemu"))
            found.append(base.joinpath(*parts[: cut + 1]))
    return found


def _remove_cgroup(directory: Path, timeout_s: float = 5.0) -> None:
    """rmdir a cgroup and its children (``emulator``, ``vcpu0``, ...), deepest first.

    Only empty cgroups can go. A killed QEMU's main thread turns zombie while its
    vCPU threads are still leaving their cgroup, so this retries for a bounded time;
    a cgroup still held after that stays, and the caller's check sees it.
    """
    deadline = time.monotonic() + timeout_s
    while directory.is_dir():
        children = sorted(
            (p for p in directory.rglob("*") if p.is_dir()),
            key=lambda p: len(p.parts),
            reverse=True,
        )
        for child in [*children, directory]:
            with contextlib.suppress(OSError):
                child.rmdir()
        if not directory.is_dir() or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _kill_all(pids: Sequence[int], timeout_s: float) -> list[int]:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns the pids still there after that."""
    ticks = {pid: _start_ticks(pid) for pid in pids}
    live = [pid for pid, t in ticks.items() if t is not None]
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while live and time.monotonic() < deadline:
            live = [p for p in live if _start_ticks(p) == ticks[p] and not _zombie(p)]
            if live:
                time.sleep(0.05)
        if not live:
            return []
    return live


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([IP, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NamespaceHostError(
            f"`ip {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def _link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def _log_tail(path: Path, lines: int = 10) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _silence_libvirt_errors() -> None:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def routed_to_a_host_bridge(address: str) -> bool:
    """True when packets to ``address`` go out through a namespace hosts' bridge.

    Once a session's bridge is gone its addresses fall to the default route and
    would leave this machine; checked before every connection made here.
    """
    result = _ip("-j", "route", "get", address, check=False)
    with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
        return str(json.loads(result.stdout)[0]["dev"]).startswith(BRIDGE_PREFIX)
    return False


def tcp_answers(address: str, port: int = LIBVIRTD_TCP_PORT, timeout_s: float = 1.0) -> bool:
    """True when a TCP connection to ``address:port`` opens within ``timeout_s``.

    Without a host bridge on the way there is no host to answer: no packet is sent.
    """
    if not routed_to_a_host_bridge(address):
        return False
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _bounded(call: Callable[[], None], timeout_s: float) -> bool:
    """Run ``call`` in a daemon thread; False when it did not finish in time.

    A libvirt RPC to a hung daemon blocks without limit; tear-down must not.
    """
    done = threading.Event()

    def target() -> None:
        with contextlib.suppress(Exception):
            call()
        done.set()

    threading.Thread(target=target, daemon=True, name="nshost-bounded").start()
    return done.wait(timeout_s)


# --- records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HostRecord:
    """What one host is made of, written before any of it is created."""

    name: str
    address: str
    prefix: int
    bridge: str
    directory: str
    host_uuid: str

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    def save(self) -> None:
        Path(self.directory, HOST_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> HostRecord:
        return cls(**json.loads(path.read_text()))


def teardown_host(record: HostRecord, graceful: bool = True) -> None:
    """Remove everything ``record`` names; safe to repeat and on half-made hosts.

    Guests are destroyed through the host's libvirtd first, so that libvirt
    removes their cgroups and state itself; a crashed or hung daemon only costs
    the bounded wait, after which every process of the namespace is killed.
    """
    if not record.name.startswith(HOST_PREFIX):
        raise NamespaceHostError(f"refusing to tear down {record.name!r}: not a namespace host")
    inode = _netns_inode(record.name)
    if graceful and inode is not None and _link_exists(record.name):
        _ip("link", "set", "dev", record.name, "up", check=False)
        if tcp_answers(record.address):
            _bounded(lambda: _destroy_domains(record.uri), STOP_TIMEOUT_S)
    if inode is not None:
        pids = processes_in_netns(inode)
        cgroups = [c for pid in pids for c in _libvirt_cgroups(pid)]
        left = _kill_all(pids, timeout_s=5.0)
        if left:
            raise NamespaceHostError(f"processes {left} of host {record.name} do not end")
        for directory in dict.fromkeys(cgroups):
            _remove_cgroup(directory)
    # The veth first: deleting it is synchronous, while the kernel removes the links
    # of a deleted namespace later, in the background.
    if _link_exists(record.name):
        _ip("link", "delete", "dev", record.name, check=False)
    if inode is not None:
        _ip("netns", "delete", record.name, check=False)
    shutil.rmtree(record.directory, ignore_errors=True)


def _destroy_domains(uri: str) -> None:
    _silence_libvirt_errors()
    conn = libvirt.open(uri)
    try:
        for domain in conn.listAllDomains():
            with contextlib.suppress(libvirt.libvirtError):
                if domain.isActive():
                    domain.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                domain.undefine()
    finally:
        conn.close()


# --- one host ----------------------------------------------------------------------------


class NamespaceHost:
    """One libvirt host in namespaces of its own; see the module docstring."""

    def __init__(self, record: HostRecord) -> None:
        self.record = record
        self.anchor_pid: int | None = None
        self._children: list[subprocess.Popen[bytes]] = []
        self._anchor: subprocess.Popen[bytes] | None = None
        self._stopped = False

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def address(self) -> str:
        return self.record.address

    @property
    def uri(self) -> str:
        """Where the host's libvirtd answers, from the root namespace and from other hosts."""
        return self.record.uri

    @property
    def host_uuid(self) -> str:
        return self.record.host_uuid

    @property
    def directory(self) -> Path:
        return Path(self.record.directory)

    def __repr__(self) -> str:
        return f"NamespaceHost({self.name}, {self.address})"

    # Bring-up ------------------------------------------------------------------------

    def start(self) -> None:
        """Make the namespaces, the link and the daemons; on failure undo all of it."""
        try:
            self._prepare_directories()
            self._make_network()
            self._start_anchor()
            self._bind_libvirt_dirs()
            self._start_daemons()
            self._wait_until_answers()
        except BaseException:
            self.stop()
            raise

    def _prepare_directories(self) -> None:
        base = self.directory
        for sub in LIBVIRT_DIRS:
            (base / sub).mkdir(parents=True, exist_ok=True)
            (base / sub).chmod(0o755)
        etc = base / "etc"
        machine_etc = Path("/etc/libvirt")
        for item in _COPIED_CONFIG:
            source = machine_etc / item
            if source.is_dir():
                shutil.copytree(source, etc / item, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, etc / item)
        for sub in _EMPTY_CONFIG_DIRS:
            (etc / sub).mkdir(parents=True, exist_ok=True)
        (etc / "libvirtd.conf").write_text(
            "listen_tls = 0\n"
            "listen_tcp = 1\n"
            'auth_tcp = "none"\n'
            f'listen_addr = "{self.address}"\n'
            f'host_uuid = "{self.host_uuid}"\n'
        )
        # QEMU's capabilities do not differ between hosts of one machine; reusing the
        # machine daemon's cache spares each host a QEMU probe (libvirt re-validates it).
        cached = Path("/var/cache/libvirt/qemu/capabilities")
        if cached.is_dir():
            shutil.copytree(cached, base / "cache/qemu/capabilities", dirs_exist_ok=True)

    def _make_network(self) -> None:
        name = self.name
        _ip("netns", "add", name)
        _ip("link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("link", "set", "dev", name, "master", self.record.bridge, "up")
        _ip("-n", name, "link", "set", "dev", "lo", "up")
        _ip("-n", name, "addr", "add", f"{self.address}/{self.record.prefix}", "dev", "eth0")
        _ip("-n", name, "link", "set", "dev", "eth0", "up")

    def _start_anchor(self) -> None:
        """A process holding the private mount and UTS namespaces; its pid is how we enter them."""
        anchor = subprocess.Popen(
            [NSENTER, f"--net={NETNS_DIR / self.name}", UNSHARE, "--mount", "--uts",
             "--propagation", "private", SLEEP, "infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self._children.append(anchor)
        self._anchor = anchor
        self.anchor_pid = anchor.pid
        own = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10.0
        # nsenter and unshare exec in place: the pid becomes `sleep` once unshared.
        while time.monotonic() < deadline:
            if anchor.poll() is not None:
                err = anchor.stderr.read().decode(errors="replace") if anchor.stderr else ""
                raise NamespaceHostError(f"anchor of {self.name} exited: {err.strip()}")
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{anchor.pid}/comm").read_text().strip()
                if comm == SLEEP and os.readlink(f"/proc/{anchor.pid}/ns/mnt") != own:
                    return
            time.sleep(0.02)
        raise NamespaceHostError(f"anchor of {self.name} did not enter its namespaces in 10 s")

    def _enter(self) -> list[str]:
        if self.anchor_pid is None:
            raise NamespaceHostError(f"host {self.name} is not started")
        return ["--target", str(self.anchor_pid), "--net", "--mount", "--uts"]

    def _bind_libvirt_dirs(self) -> None:
        # Its own host name too, so that libvirt's getHostname tells hosts apart.
        self.run([HOSTNAME, self.name], check=True)
        for sub, target in LIBVIRT_DIRS.items():
            self.run([MOUNT, "--bind", str(self.directory / sub), target], check=True)

    def _start_daemons(self) -> None:
        log = self.directory / "log"
        for daemon in (VIRTLOGD, LIBVIRTD):
            env = {**os.environ, "LIBVIRT_LOG_OUTPUTS": f"3:file:/var/log/libvirt/{daemon}.log"}
            argv = [daemon, "--daemon", "--pid-file", str(self.directory / f"{daemon}.pid")]
            if daemon == LIBVIRTD:
                argv.append("--listen")
            result = self.run(argv, env=env)
            if result.returncode != 0:
                raise NamespaceHostError(
                    f"{daemon} of host {self.name} exited with {result.returncode}: "
                    f"{result.stderr.strip()}\n{_log_tail(log / f'{daemon}.log')}"
                )

    def _wait_until_answers(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if tcp_answers(self.address, timeout_s=0.5):
                with contextlib.suppress(libvirt.libvirtError), self.connect() as conn:
                    conn.getVersion()
                    return
            if self.daemon_pid(LIBVIRTD) is None:
                break  # it crashed: say so now rather than after the timeout
            time.sleep(0.1)
        raise NamespaceHostError(
            f"libvirtd of host {self.name} does not answer on {self.uri}; last lines of "
            f"its log:\n{_log_tail(self.directory / 'log' / 'libvirtd.log')}"
        )

    def daemon_pid(self, daemon: str) -> int | None:
        """The pid of the host's ``libvirtd`` or ``virtlogd`` while it runs."""
        try:
            pid = int((self.directory / f"{daemon}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        inode = _netns_inode(self.name)
        if inode is None or pid not in processes_in_netns(inode):
            return None
        return pid

    # Use -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self) -> Iterator[libvirt.virConnect]:
        """A libvirt connection to this host, closed on the way out."""
        _silence_libvirt_errors()
        if not routed_to_a_host_bridge(self.address):
            raise NamespaceHostError(
                f"host {self.name} ({self.address}) is not on a host bridge any more"
            )
        conn = libvirt.open(self.uri)
        try:
            yield conn
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def run(
        self,
        cmd: Sequence[str],
        env: dict[str, str] | None = None,
        check: bool = False,
        timeout_s: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the host's network and mount namespaces and wait for it."""
        result = subprocess.run(
            [NSENTER, *self._enter(), "--", *cmd],
            capture_output=True, text=True, env=env, check=False, timeout=timeout_s,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise NamespaceHostError(
                f"`{' '.join(cmd)}` in host {self.name} failed ({result.returncode}): "
                f"{result.stderr.strip()}"
            )
        return result

    def popen(
        self, cmd: Sequence[str], env: dict[str, str] | None = None, **kwargs: object
    ) -> subprocess.Popen[bytes]:
        """Start a long-running ``cmd`` inside the host; it ends when the host stops."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            [NSENTER, *self._enter(), "--", *cmd], env=env, **kwargs
        )
        self._children.append(proc)
        return proc

    def link_down(self) -> None:
        """Cut the host off the network (its root-side veth goes down); guests keep running."""
        _ip("link", "set", "dev", self.name, "down")

    def link_up(self) -> None:
        _ip("link", "set", "dev", self.name, "up")

    def stop(self) -> None:
        """Stop everything the host runs and remove it; repeatable."""
        if self._stopped:
            return
        for child in self._children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.terminate()
        teardown_host(self.record)
        for child in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5.0)
        if self._anchor is not None and self._anchor.stderr is not None:
            self._anchor.stderr.close()
        self._stopped = True


# --- the session's fleet ---------------------------------------------------------------


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    STATE_DIR.chmod(0o755)
    fd = os.open(STATE_DIR / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _session_dirs() -> list[Path]:
    if not STATE_DIR.is_dir():
        return []
    return sorted(p for p in STATE_DIR.iterdir() if p.name.startswith(BRIDGE_PREFIX))


def _read_owner(session: Path) -> Owner | None:
    try:
        data = json.loads((session / OWNER_FILE).read_text())
        return Owner(int(data["pid"]), data["start_ticks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sweep_leftovers() -> list[str]:
    """Remove what sessions whose owner process is gone left behind; returns their names.

    A session directory without a readable owner is being written right now
    (owner.json is the first file) or was never used: left alone.
    """
    swept: list[str] = []
    with _state_lock():
        for session in _session_dirs():
            owner = _read_owner(session)
            if owner is None or owner.alive():
                continue
            for marker in sorted(session.glob(f"{HOST_PREFIX}*/{HOST_FILE}")):
                with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
                    record = HostRecord.load(marker)
                    teardown_host(record)
                    swept.append(record.name)
            _delete_bridge(session.name)
            shutil.rmtree(session, ignore_errors=True)
            swept.append(session.name)
    return swept


def _delete_bridge(name: str) -> None:
    if name.startswith(BRIDGE_PREFIX) and _link_exists(name):
        _ip("link", "delete", "dev", name, check=False)


def _subnets_in_use() -> set[ipaddress.IPv4Network]:
    used: set[ipaddress.IPv4Network] = set()
    for session in _session_dirs():
        with contextlib.suppress(OSError, ValueError, KeyError):
            used.add(
                ipaddress.IPv4Network(json.loads((session / OWNER_FILE).read_text())["subnet"])
            )
    routes = json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
    addrs = json.loads(_ip("-j", "-4", "addr", "show").stdout or "[]")
    for route in routes:
        dst = route.get("dst", "")
        with contextlib.suppress(ValueError):
            if dst and dst != "default":
                used.add(ipaddress.IPv4Network(dst, strict=False))
    for link in addrs:
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                used.add(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", False))
    return used


class NamespaceFleet:
    """One session's hosts: a bridge, a /24 of 198.18.0.0/15, and the hosts on it."""

    def __init__(self) -> None:
        self.bridge = f"{BRIDGE_PREFIX}{secrets.token_hex(3)}"
        self.directory = STATE_DIR / self.bridge
        self.subnet: ipaddress.IPv4Network | None = None
        self.hosts: list[NamespaceHost] = []
        self._addresses: Iterator[ipaddress.IPv4Address] = iter(())
        self._lock = threading.Lock()

    def start(self) -> None:
        sweep_leftovers()
        with _state_lock():
            used = _subnets_in_use()
            free = (
                s for s in NETWORK.subnets(new_prefix=SUBNET_PREFIX)
                if not any(s.overlaps(u) for u in used)
            )  # fmt: skip
            subnet = next(free, None)
            if subnet is None:
                raise NamespaceHostError(f"no free /{SUBNET_PREFIX} left in {NETWORK}")
            self.directory.mkdir(mode=0o755)
            owner = Owner.me()
            (self.directory / OWNER_FILE).write_text(
                json.dumps({"pid": owner.pid, "start_ticks": owner.start_ticks,
                            "subnet": str(subnet)})
            )  # fmt: skip
            self.subnet = subnet
        hosts = subnet.hosts()
        gateway = next(hosts)
        self._addresses = hosts
        try:
            _ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
            _ip("addr", "add", f"{gateway}/{SUBNET_PREFIX}", "dev", self.bridge)
            _ip("link", "set", "dev", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add_host(self) -> NamespaceHost:
        """A new running host on the session's bridge."""
        with self._lock:
            address = next(self._addresses, None)
            if address is None:
                raise NamespaceHostError(f"subnet {self.subnet} has no address left")
            name = self._free_name()
            record = HostRecord(
                name=name, address=str(address), prefix=SUBNET_PREFIX, bridge=self.bridge,
                directory=str(self.directory / name), host_uuid=str(uuid.uuid4()),
            )  # fmt: skip
            Path(record.directory).mkdir(mode=0o755)
            record.save()
            host = NamespaceHost(record)
            self.hosts.append(host)
        host.start()
        return host

    def _free_name(self) -> str:
        for _ in range(100):
            name = f"{HOST_PREFIX}{secrets.token_hex(3)}"
            if not (NETNS_DIR / name).exists() and not _link_exists(name):
                return name
        raise NamespaceHostError("no free host name after 100 tries")

    def add_hosts(self, count: int) -> list[NamespaceHost]:
        """``count`` hosts started side by side (libvirtd takes seconds to answer)."""
        if count < 1:
            raise ValueError(f"count={count!r}: at least one host")
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="nshost") as pool:
            futures = [pool.submit(self.add_host) for _ in range(count)]
            errors = [f.exception() for f in futures]
        started = [f.result() for f, e in zip(futures, errors, strict=True) if e is None]
        failed = [e for e in errors if e is not None]
        if failed:
            for host in started:
                self.remove_host(host)
            raise failed[0]
        return started

    def remove_host(self, host: NamespaceHost) -> None:
        host.stop()
        with self._lock:
            if host in self.hosts:
                self.hosts.remove(host)

    def close(self) -> None:
        """Stop every host (side by side), then the bridge and the state directory.

        When a host cannot be removed the error is raised and the session's markers
        stay, so that the next session's sweep finishes the job.
        """
        errors: list[BaseException] = []
        if self.hosts:
            with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
                for future in [pool.submit(h.stop) for h in list(self.hosts)]:
                    if future.exception() is not None:
                        errors.append(future.exception())  # type: ignore[arg-type]
        self.hosts.clear()
        _delete_bridge(self.bridge)
        if not errors:
            shutil.rmtree(self.directory, ignore_errors=True)
        if errors:
            raise errors[0]


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def namespace_fleet(libvirt_system: libvirt.virConnect) -> Iterator[NamespaceFleet]:
    """The session's bridge and subnet; hosts made on it are all removed at the end.

    Depends on ``libvirt_system`` because that fixture checks what every host needs
    too (root, the QEMU driver, the ``libvirt-qemu`` account, /dev/kvm access).
    """
    needed = {IP, NSENTER, UNSHARE, HOSTNAME, MOUNT, SLEEP}
    for binary in BINARIES:
        if binary.name in needed and binary.location() is None:
            unavailable(f"namespace hosts cannot be made: {binary.missing_message()}")
    fleet = NamespaceFleet()
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="session")
def two_hosts(namespace_fleet: NamespaceFleet) -> tuple[NamespaceHost, NamespaceHost]:
    """Hosts A and B, up for the whole session (started side by side).

    Shared by every test of the session: a test that cuts a link or stops a daemon
    takes hosts of its own from ``make_namespace_hosts`` instead.
    """
    a, b = namespace_fleet.add_hosts(2)
    return a, b


@pytest.fixture
def make_namespace_hosts(
    namespace_fleet: NamespaceFleet,
) -> Iterator[Callable[[int], list[NamespaceHost]]]:
    """``make(n)`` gives ``n`` fresh hosts that are removed when the test ends."""
    made: list[NamespaceHost] = []

    def make(count: int) -> list[NamespaceHost]:
        hosts = namespace_fleet.add_hosts(count)
        made.extend(hosts)
        return hosts

    yield make
    for host in made:
        namespace_fleet.remove_host(host)
