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


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class _Counter:
    """One guest's ``energy_uj``: where it is, how it is replaced, what it shows now.

    ``dir_fd`` is the zone directory held open (the two names are then relative to
    it) or None (full paths); ``exchange`` says whether to replace by exchange, asked
    once per domain (see :func:`exchange_pays_off`).
    """

    __slots__ = ("dir_fd", "exchange", "path", "tmp", "value")

    def __init__(
        self, path: bytes, tmp: bytes, value: int, exchange: bool, dir_fd: int | None
    ) -> None:
        self.path = path
        self.tmp = tmp
        self.value = value
        self.exchange = exchange
        self.dir_fd = dir_fd


def _close_all(counters: dict[tuple[Path, str], _Counter]) -> None:
    for counter in counters.values():
        if counter.dir_fd is not None:
            with contextlib.suppress(OSError):
                os.close(counter.dir_fd)
            counter.dir_fd = None
    counters.clear()


def _replace_file(path: Path, text: str) -> None:
    _replace(str(path), str(path.with_name(f".{path.name}.tmp")), text.encode("ascii"))


class GuestShareWriter:
    """Writes and removes guest share counters."""

    def __init__(self, max_energy_range_uj: int = 262_143_328_850) -> None:
        if max_energy_range_uj <= 0:
            raise GuestShareError(f"max_energy_range_uj {max_energy_range_uj} must be > 0")
        self.max_energy_range_uj = max_energy_range_uj
        self._written: dict[tuple[Path, str], _Counter] = {}
        self._open_dirs = 0
        weakref.finalize(self, _close_all, self._written)

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
        if self._open_dirs < MAX_OPEN_DIRECTORIES:
            try:
                dir_fd = os.open(zone, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                dir_fd = None
        if dir_fd is not None:
            self._open_dirs += 1
            path, tmp = COUNTER, COUNTER_TMP
        self._written[key] = _Counter(path, tmp, value, exchange, dir_fd)
        return directory

    def update(self, root: Path, domain: str, joules: float) -> None:
        """Publish a VM's new total; a no-op when the visible value would not change.

        Runs for every running guest at every sample, so the usual case (tmpfs, zone
        directory held open) is four system calls and little else: create the
        temporary file relative to the directory, write, close, rename over the
        counter. Anything unusual (a leftover temporary file, a directory that went
        away, an ext4 share) takes the general path.
        """
        value = int(joules * 1_000_000) % self.max_energy_range_uj
        counter = self._written.get((root, domain))
        if counter is None:
            self.prepare(root, domain, joules)
            return
        if counter.value == value:
            return
        dir_fd = counter.dir_fd
        data = b"%d\n" % value
        if dir_fd is not None and not counter.exchange:
            try:
                fd = os.open(COUNTER_TMP, _CREATE, 0o644, dir_fd=dir_fd)
            except OSError:
                pass  # the general path below says why, or copes
            else:
                try:
                    try:
                        os.write(fd, data)
                    finally:
                        os.close(fd)
                    os.rename(COUNTER_TMP, COUNTER, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.unlink(COUNTER_TMP, dir_fd=dir_fd)
                else:
                    counter.value = value
                    return
        try:
            _replace(counter.path, counter.tmp, data, 0o644, counter.exchange, dir_fd)
        except FileNotFoundError:  # the layout went away, or the directory held open did
            self.prepare(root, domain, joules)
            return
        counter.value = value

    def _close(self, key: tuple[Path, str]) -> None:
        counter = self._written.pop(key, None)
        if counter is not None and counter.dir_fd is not None:
            os.close(counter.dir_fd)
            counter.dir_fd = None
            self._open_dirs -= 1

    def remove(self, root: Path, domain: str) -> None:
        """Remove the layout once the domain is deleted; ``<root>/<domain>`` goes if empty."""
        directory = self.domain_dir(root, domain)
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
