"""wattvisor: run VMs on libvirt/KVM hosts by capability and make their energy use visible."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wattvisor")
except PackageNotFoundError:  # pragma: no cover - source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
