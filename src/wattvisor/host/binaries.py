"""Every program wattvisor, its tests and its benchmarks run, and the Debian package of each.

``scripts/setup.sh`` installs the packages named here and nothing else decides
what a machine needs, so one list says it all: a fresh machine set up from it
can run every command and every test. ``tests/host/test_binaries.py`` checks
that each program is present and that the sources run no program missing here.

Some programs are run by libvirt on wattvisor's behalf rather than by our code
(``qemu-img`` for qcow2 volumes, ``iptables`` and ``dnsmasq`` for libvirt
networks); they are listed because the product fails without them just the same.

This file imports nothing but the standard library: ``setup.sh`` runs it with the
system Python before any virtualenv exists (``python3 binaries.py`` prints the
package names).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from typing import Literal

Role = Literal["host", "image", "dev", "tests"]
"""Who needs the program: ``host`` (``wattvisor up`` and libvirt on a host), ``image``
(``wattvisor image build``), ``dev`` (``wattvisor dev libvirtd-up``), ``tests`` (the
test suite and the benchmarks)."""

ROLES: tuple[Role, ...] = ("host", "image", "dev", "tests")


@dataclass(frozen=True)
class Binary:
    """One program: the name code runs it by, where it lives if not on ``PATH``, its package."""

    name: str
    package: str
    role: Role
    purpose: str
    path: str | None = None
    # False for a file a program loads rather than runs (firmware): readable is enough.
    executable: bool = True

    def location(self) -> str | None:
        """Where the program is on this machine, or None when it is missing."""
        if self.path is not None:
            mode = os.X_OK if self.executable else os.R_OK
            return self.path if os.access(self.path, mode) else None
        return shutil.which(self.name) or shutil.which(self.name, path="/usr/sbin:/sbin")

    def missing_message(self) -> str:
        """A sentence naming the program, what fails without it and how to install it."""
        return (
            f"{self.path or self.name} is not installed ({self.purpose}); install the Debian "
            f"package {self.package} (`make setup` does)"
        )


BINARIES: tuple[Binary, ...] = (
    Binary("qemu-system-x86_64", "qemu-system-x86", "host", "libvirt runs every guest with it"),
    Binary("qemu-img", "qemu-utils", "host",
           "server disks are qcow2 overlays made with it; libvirt creates qcow2 volumes with it"),
    Binary("mkfs.ext4", "e2fsprogs", "host", "formats the blank base of ephemeral disks",
           path="/usr/sbin/mkfs.ext4"),
    Binary("mkswap", "util-linux", "host", "formats the blank base of swap disks",
           path="/usr/sbin/mkswap"),
    Binary(
        "virtiofsd", "qemu-system-common", "host",
        "libvirt serves read-only power-metrics shares with it (host.virtiofsd_path)",
        path="/usr/lib/qemu/virtiofsd",
    ),
    Binary("libvirtd", "libvirt-daemon", "host", "the libvirt daemon behind qemu:///system"),
    Binary(
        "OVMF_CODE_4M.fd", "ovmf", "host",
        "UEFI firmware QEMU loads for hw_firmware_type=uefi guests (libvirt picks it)",
        path="/usr/share/OVMF/OVMF_CODE_4M.fd", executable=False,
    ),
    Binary("virtlogd", "libvirt-daemon", "host", "libvirtd starts no guest without it"),
    Binary(
        "iptables", "iptables", "host",
        "libvirt networks (host.network mode nat, compute.interface_network) cannot start "
        "without it",
        path="/usr/sbin/iptables",
    ),
    Binary(
        "dnsmasq", "dnsmasq-base", "host",
        "libvirt networks serve DNS (host.network nat and isolated) and DHCP with it",
        path="/usr/sbin/dnsmasq",
    ),
    Binary("busybox", "busybox-static", "image", "the built-in guest's userland",
           path="/bin/busybox"),
    Binary("apt-get", "apt", "image", "downloads the guest kernel package"),
    Binary("apt-cache", "apt", "image", "resolves the guest kernel package"),
    Binary("dpkg-deb", "dpkg", "image", "unpacks the guest kernel package"),
    Binary("groupadd", "passwd", "dev", "creates the groups libvirt runs QEMU in"),
    Binary("useradd", "passwd", "dev", "creates the account libvirt runs QEMU as"),
    Binary("prometheus", "prometheus", "tests", "scrapes /metrics and VM exporters in tests",
           path="/usr/bin/prometheus"),
    Binary("promtool", "prometheus", "tests", "checks the scrape configs tests write",
           path="/usr/bin/promtool"),
    Binary("chromium", "chromium", "tests", "the browser the dashboard tests and bench drive",
           path="/usr/bin/chromium"),
    Binary("node", "nodejs", "dev", "runs the dashboard's build (Vite)", path="/usr/bin/node"),
    Binary("npm", "npm", "dev", "installs the dashboard's build tools from package-lock.json",
           path="/usr/bin/npm"),
    Binary("initdb", "postgresql", "tests", "creates the tests' PostgreSQL cluster",
           path="/usr/lib/postgresql/15/bin/initdb"),
    Binary("pg_ctl", "postgresql", "tests", "starts and stops the tests' PostgreSQL",
           path="/usr/lib/postgresql/15/bin/pg_ctl"),
    Binary("postgres", "postgresql", "tests", "the PostgreSQL server pg_ctl starts",
           path="/usr/lib/postgresql/15/bin/postgres"),
    Binary("runuser", "util-linux", "tests", "runs PostgreSQL as its own user"),
    Binary("blkid", "util-linux", "tests", "checks the config drive's label"),
    Binary("ip", "iproute2", "tests", "checks the gateway address on a network's bridge"),
    Binary("virt-admin", "libvirt-clients", "tests", "drops libvirt client connections"),
    Binary("cpio", "cpio", "tests", "reads back the initramfs archives"),
    Binary("gzip", "gzip", "tests", "unpacks the initramfs"),
    Binary("mount", "mount", "tests", "bind-mounts in the share tests"),
    Binary("umount", "mount", "tests", "undoes a mount a test made"),
    Binary("sleep", "coreutils", "tests", "a harmless process to signal"),
    Binary("make", "make", "tests", "runs the Makefile's targets in the strict-mode test"),
    Binary("ip", "iproute2", "tests", "makes the namespaces, veths and bridge of test hosts"),
    Binary("nsenter", "util-linux", "tests", "runs commands and daemons inside a test host"),
    Binary("unshare", "util-linux", "tests", "gives each test host its own mounts and name"),
    Binary("hostname", "hostname", "tests", "names each test host (libvirt's getHostname)"),
    Binary("openssl", "openssl", "tests", "makes the agent TLS test's certificates"),
)  # fmt: skip


def binaries(*roles: Role) -> tuple[Binary, ...]:
    """The programs of ``roles`` (all of them when none is given)."""
    return tuple(b for b in BINARIES if not roles or b.role in roles)


def debian_packages(*roles: Role) -> list[str]:
    """The Debian packages providing the programs of ``roles``, each once, sorted."""
    return sorted({b.package for b in binaries(*roles)})


def missing(*roles: Role) -> list[Binary]:
    """The programs of ``roles`` that are not installed on this machine."""
    return [b for b in binaries(*roles) if b.location() is None]


if __name__ == "__main__":
    # `python3 binaries.py [ROLE...]`: the packages to install, one per line.
    wanted = sys.argv[1:]
    unknown = [r for r in wanted if r not in ROLES]
    if unknown:
        sys.exit(f"unknown role(s) {unknown}; accepted: {', '.join(ROLES)}")
    print("\n".join(debian_packages(*(r for r in ROLES if r in wanted))))
