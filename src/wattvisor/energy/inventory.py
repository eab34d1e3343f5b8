"""What the energy sampler needs to know about the VMs on this host.

The host driver implements :class:`VMInventory` (``LibvirtVMInventory``); the energy
package never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class VMRecord:
    """One VM this host knows about, running or not.

    ``share_dirs`` are the ``share_local_fs`` roots the VM's guest share lives
    under (``<root>/<domain>/intel-rapl:0/...``); they are written only when
    ``power_metrics`` is on. ``managed`` is false for a domain wattvisor did not
    make (no instance metadata of its own): its energy counts as the host's other
    processes, and it is never reported by name or uuid.
    """

    uuid: str
    domain: str
    project: str = ""
    power_metrics: bool = False
    share_dirs: tuple[Path, ...] = field(default_factory=tuple)
    managed: bool = True


class VMInventory(Protocol):
    """The VMs defined on this host. Called once per sample, so it must be cheap.

    Only the VMs it lists as ``managed`` are VMs to the sampler; it may also list the
    domains it knows are not wattvisor's, so that a counter an older version kept for
    one is dropped.
    """

    def vms(self) -> Sequence[VMRecord]: ...
