"""The per-VM energy counter a guest reads through its read-only share.

Layout under ``<share root>/<domain>/`` is what ``scaphandre --vm`` (and any RAPL
reader such as Kepler or CodeCarbon) expects from real hardware::

    intel-rapl:0/energy_uj            cumulative µJ, decimal, wraps at max
    intel-rapl:0/max_energy_range_uj
    intel-rapl:0/name                 package-0
    intel-rapl:0:0/                   empty; makes scaphandre see a socket

``energy_uj`` is replaced atomically (temp file + rename in the same directory,
see :mod:`wattvisor.energy.atomic_file`), so a reader never sees a torn value.
Each sample rewrites every running guest's counter, so the writer keeps each zone
directory open (up to :data:`MAX_OPEN_DIRECTORIES`) and works relative to it.
The ``<domain>`` directory itself is the source of a read-only bind mount set up
by the host, so only its contents are ever created, replaced or removed here —
never the directory inode itself while the domain exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import weakref
from pathlib import Path

from wattvisor.energy.atomic_file import exchange_pays_off, replace_contents

log = logging.getLogger(__name__)

ZONE = "intel-rapl:0"
SUBZONE = "intel-rapl:0:0"
ZONE_NAME = "package-0"


class GuestShareError(ValueError):
    """A domain name that cannot be a directory name; says which and why."""


def _check_domain(domain: str) -> None:
    if not domain or domain in (".", "..") or "/" in domain or "\0" in domain:
        raise GuestShareError(
            f"domain name {domain!r} cannot name a share directory; it must be non-empty, "
            "not '.' or '..', and contain no '/' or NUL"
        )


_replace = replace_contents

COUNTER, COUNTER_TMP = b"energy_uj", b".energy_uj.tmp"

#: Zone directories held open at most, so that a host with many guests cannot run the
#: agent out of file descriptors; counters beyond it are written by full path.
MAX_OPEN_DIRECTORIES = 256


def _close_all(dir_fds: dict[tuple[Path, str], int]) -> None:
    for dir_fd in dir_fds.values():
        with contextlib.suppress(OSError):
            os.close(dir_fd)
    dir_fds.clear()


def _replace_file(path: Path, text: str) -> None:
    _replace(str(path), str(path.with_name(f".{path.name}.tmp")), text.encode("ascii"))


class GuestShareWriter:
    """Writes and removes guest share counters."""

    def __init__(self, max_energy_range_uj: int = 262_143_328_850) -> None:
        if max_energy_range_uj <= 0:
            raise GuestShareError(f"max_energy_range_uj {max_energy_range_uj} must be > 0")
        self.max_energy_range_uj = max_energy_range_uj
        # (root, domain) -> (energy_uj path, its temp path, value last written, whether to
        # replace it by exchange: asked once per domain, as shares usually sit on tmpfs,
        # and the zone directory held open, when it is, the two paths then relative to it)
        self._written: dict[tuple[Path, str], tuple[bytes, bytes, int, bool, int | None]] = {}
        self._dir_fds: dict[tuple[Path, str], int] = {}
        weakref.finalize(self, _close_all, self._dir_fds)

    def counter_uj(self, joules: float) -> int:
        """The guest-visible counter for a VM total: µJ, wrapped like a RAPL package."""
        return int(joules * 1_000_000) % self.max_energy_range_uj

    def domain_dir(self, root: Path, domain: str) -> Path:
        _check_domain(domain)
        return root / domain

    def prepare(self, root: Path, domain: str, joules: float = 0.0) -> Path:
        """Create the full layout (before the domain starts) and return ``<root>/<domain>``."""
        directory = self.domain_dir(root, domain)
        zone = directory / ZONE
        zone.mkdir(parents=True, exist_ok=True)
        (directory / SUBZONE).mkdir(exist_ok=True)
        _replace_file(zone / "name", ZONE_NAME + "\n")
        _replace_file(zone / "max_energy_range_uj", f"{self.max_energy_range_uj}\n")
        value = self.counter_uj(joules)
        key = (root, domain)
        self._close(key)
        path, tmp = os.fsencode(zone / "energy_uj"), os.fsencode(zone / ".energy_uj.tmp")
        exchange = exchange_pays_off(os.fsencode(zone))
        _replace(path, tmp, b"%d\n" % value, 0o644, exchange)
        dir_fd: int | None = None
        if len(self._dir_fds) < MAX_OPEN_DIRECTORIES:
            try:
                dir_fd = os.open(zone, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                dir_fd = None
        if dir_fd is not None:
            self._dir_fds[key] = dir_fd
            path, tmp = COUNTER, COUNTER_TMP
        self._written[key] = (path, tmp, value, exchange, dir_fd)
        return directory

    def update(self, root: Path, domain: str, joules: float) -> None:
        """Publish a VM's new total; a no-op when the visible value would not change."""
        value = int(joules * 1_000_000) % self.max_energy_range_uj
        known = self._written.get((root, domain))
        if known is None:
            self.prepare(root, domain, joules)
            return
        path, tmp, last, exchange, dir_fd = known
        if last == value:
            return
        try:
            _replace(path, tmp, b"%d\n" % value, 0o644, exchange, dir_fd)
        except FileNotFoundError:  # the layout went away, or the directory held open did
            self.prepare(root, domain, joules)
            return
        self._written[(root, domain)] = (path, tmp, value, exchange, dir_fd)

    def _close(self, key: tuple[Path, str]) -> None:
        dir_fd = self._dir_fds.pop(key, None)
        if dir_fd is not None:
            os.close(dir_fd)

    def remove(self, root: Path, domain: str) -> None:
        """Remove the layout once the domain is deleted; ``<root>/<domain>`` goes if empty."""
        directory = self.domain_dir(root, domain)
        self._written.pop((root, domain), None)
        self._close((root, domain))
        for name in (ZONE, SUBZONE):
            try:
                shutil.rmtree(directory / name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("removing the guest counters %s failed: %s", directory / name, exc)
        with contextlib.suppress(OSError):
            directory.rmdir()
