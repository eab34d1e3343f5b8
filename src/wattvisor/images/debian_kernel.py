"""Fetch Debian's cloud kernel without installing it.

``apt-get install linux-image-*-cloud-amd64`` fails on build hosts without a
working initramfs tool chain and would touch the host's /boot; the guest only
needs ``boot/vmlinuz-*`` and a handful of ``.ko`` files, so we ``apt-get
download`` the package and unpack it with ``dpkg-deb -x`` into a temporary
directory, keeping only those files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

META_PACKAGE = "linux-image-cloud-amd64"
_KERNEL_PACKAGE = re.compile(r"^linux-image-(\d[\w.+-]*-cloud-amd64)$")


class KernelFetchError(RuntimeError):
    """The kernel package could not be resolved, downloaded or unpacked."""


@dataclass(frozen=True)
class KernelPackage:
    """An exact kernel package, e.g. ``linux-image-6.1.0-56-cloud-amd64`` 6.1.192-2."""

    name: str
    version: str

    @property
    def release(self) -> str:
        """The ``uname -r`` of this kernel (and its modules directory name)."""
        match = _KERNEL_PACKAGE.match(self.name)
        if match is None:
            raise KernelFetchError(f"{self.name!r} is not a linux-image-*-cloud-amd64 package")
        return match.group(1)


def _apt(argv: list[str], cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, cwd=cwd, check=False, timeout=600
        )
    except FileNotFoundError as exc:
        raise KernelFetchError(f"{argv[0]} is not available; this needs a Debian host") from exc
    if result.returncode != 0:
        raise KernelFetchError(
            f"`{' '.join(argv)}` failed with exit code {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


def resolve_kernel_package(meta_package: str = META_PACKAGE) -> KernelPackage:
    """The package the meta package currently depends on, with its candidate version.

    A fresh machine (or container) may have no package lists yet; as root we
    fetch them once with ``apt-get update`` rather than fail.
    """
    try:
        return _resolve(meta_package)
    except KernelFetchError:
        if os.geteuid() != 0:
            raise
    _apt(["apt-get", "update", "-q"])
    return _resolve(meta_package)


def _resolve(meta_package: str) -> KernelPackage:
    depends = _apt(["apt-cache", "depends", meta_package])
    names = [
        m.group(1)
        for m in re.finditer(r"^\s*Depends:\s*(\S+)", depends, re.MULTILINE)
        if _KERNEL_PACKAGE.match(m.group(1))
    ]
    if not names:
        raise KernelFetchError(
            f"`apt-cache depends {meta_package}` names no linux-image-*-cloud-amd64 package; "
            "run `apt-get update` (Debian 12 main must be in the apt sources)"
        )
    name = names[0]
    show = _apt(["apt-cache", "show", "--no-all-versions", name])
    version = re.search(r"^Version:\s*(\S+)", show, re.MULTILINE)
    if version is None:
        raise KernelFetchError(f"`apt-cache show {name}` gives no Version")
    return KernelPackage(name=name, version=version.group(1))


def module_dependencies(ko: Path) -> list[str]:
    """Module names from the ``depends=`` entry of a .ko's ``.modinfo`` strings."""
    data = ko.read_bytes()
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    if match is None or not match.group(1):
        return []
    return [name.replace("-", "_") for name in match.group(1).decode().split(",") if name]


def _index_modules(modules_root: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for ko in modules_root.rglob("*.ko*"):
        name = ko.name.split(".ko")[0].replace("-", "_")
        index[name] = ko
    return index


def load_order(wanted: list[str], modules_root: Path) -> list[tuple[str, Path]]:
    """``wanted`` plus everything they depend on, dependencies first.

    Names already built into the kernel (listed in ``modules.builtin``) are skipped.
    """
    index = _index_modules(modules_root / "kernel")
    builtin_file = modules_root / "modules.builtin"
    builtin = set()
    if builtin_file.exists():
        builtin = {
            Path(line).name.split(".ko")[0].replace("-", "_")
            for line in builtin_file.read_text().split()
        }
    ordered: list[tuple[str, Path]] = []
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name in builtin:
            return
        if name in visiting:
            raise KernelFetchError(f"module dependency cycle through {name!r}")
        ko = index.get(name)
        if ko is None:
            raise KernelFetchError(
                f"kernel module {name!r} is neither built in nor shipped as a .ko under "
                f"{modules_root}"
            )
        visiting.add(name)
        for dep in module_dependencies(ko):
            visit(dep)
        visiting.discard(name)
        done.add(name)
        ordered.append((name, ko))

    for name in wanted:
        visit(name)
    return ordered


@dataclass(frozen=True)
class UnpackedKernel:
    """The files of a kernel package the guest image needs, copied into ``directory``."""

    package: KernelPackage
    directory: Path
    vmlinuz: Path
    config: Path
    modules: tuple[tuple[str, Path], ...]


def _decompress_module(src: Path, dest: Path) -> None:
    # Debian 12's cloud kernel ships plain .ko; later ones compress them, and
    # busybox insmod reads only plain ELF.
    if src.suffix == ".ko":
        shutil.copyfile(src, dest)
    elif src.suffix == ".xz":
        import lzma

        dest.write_bytes(lzma.decompress(src.read_bytes()))
    elif src.suffix == ".gz":
        import gzip

        dest.write_bytes(gzip.decompress(src.read_bytes()))
    else:
        raise KernelFetchError(
            f"kernel module {src.name!r} is compressed in a format this build cannot read; "
            "accepted: .ko, .ko.xz, .ko.gz"
        )


def fetch_kernel(package: KernelPackage, wanted_modules: list[str], into: Path) -> UnpackedKernel:
    """Download and unpack ``package``; keep vmlinuz, its config and the wanted modules.

    ``into`` is filled atomically: the files are assembled next to it and renamed
    into place, so an interrupted fetch leaves nothing half-written behind.
    """
    into.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=into.parent) as tmp_name:
        tmp = Path(tmp_name)
        download = tmp / "download"
        download.mkdir()
        # The _apt sandbox user cannot write into a root-owned temporary directory.
        _apt(
            [
                "apt-get",
                "download",
                "-q",
                "-o",
                "APT::Sandbox::User=root",
                f"{package.name}={package.version}",
            ],
            cwd=download,
        )
        debs = list(download.glob("*.deb"))
        if len(debs) != 1:
            raise KernelFetchError(f"apt-get download of {package.name} gave {debs}")
        unpacked = tmp / "root"
        _apt(["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
        release = package.release
        vmlinuz = unpacked / "boot" / f"vmlinuz-{release}"
        config = unpacked / "boot" / f"config-{release}"
        modules_root = unpacked / "lib" / "modules" / release
        for needed in (vmlinuz, config, modules_root):
            if not needed.exists():
                raise KernelFetchError(f"{package.name} has no {needed.relative_to(unpacked)}")
        order = load_order(wanted_modules, modules_root)
        staged = tmp / "kernel"
        (staged / "modules").mkdir(parents=True)
        shutil.copyfile(vmlinuz, staged / "vmlinuz")
        shutil.copyfile(config, staged / "config")
        kept: list[tuple[str, Path]] = []
        for name, ko in order:
            _decompress_module(ko, staged / "modules" / f"{name}.ko")
            kept.append((name, into / "modules" / f"{name}.ko"))
        (staged / "modules" / "load-order").write_text("".join(f"{n}\n" for n, _ in order))
        (staged / "package").write_text(f"{package.name} {package.version}\n")
        for path in [staged, *staged.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        if into.exists():
            shutil.rmtree(into)
        staged.rename(into)
    return UnpackedKernel(
        package=package,
        directory=into,
        vmlinuz=into / "vmlinuz",
        config=into / "config",
        modules=tuple(kept),
    )


def read_unpacked(package: KernelPackage, directory: Path) -> UnpackedKernel | None:
    """A previously fetched kernel in ``directory``, or None when absent or incomplete."""
    order_file = directory / "modules" / "load-order"
    try:
        recorded = (directory / "package").read_text().split()
        names = order_file.read_text().split()
    except OSError:
        return None
    if recorded != [package.name, package.version]:
        return None
    modules = tuple((n, directory / "modules" / f"{n}.ko") for n in names)
    if not (directory / "vmlinuz").exists() or not all(p.exists() for _, p in modules):
        return None
    return UnpackedKernel(
        package=package,
        directory=directory,
        vmlinuz=directory / "vmlinuz",
        config=directory / "config",
        modules=modules,
    )
