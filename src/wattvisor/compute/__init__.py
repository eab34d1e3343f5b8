"""The compute service: users, flavors, images, servers, volumes, interfaces, hosts, power.

It sits between the API and the rest: it validates requests (a rejected request
changes nothing), keeps state in the store, asks the scheduler for a host and talks
to hosts only through :class:`HostClient` (in-process: :class:`LocalHostClient`).
Everything it returns is a frozen dataclass from :mod:`wattvisor.compute.records`;
every error a :class:`ComputeError` carrying an HTTP status and a stable code.
"""

from wattvisor.compute.catalog import Catalog
from wattvisor.compute.devices import DeviceService
from wattvisor.compute.errors import (
    ComputeError,
    Conflict,
    HostOperationFailed,
    InvalidRequest,
    NotFound,
)
from wattvisor.compute.hostclient import (
    HostClient,
    HostFacts,
    InterfaceAttachment,
    SpawnFlavor,
    SpawnImage,
    SpawnRequest,
    SpawnResult,
    VolumeAttachment,
)
from wattvisor.compute.hosts import HostClientFactory, HostRegistry, placement_inventories
from wattvisor.compute.local_host import LocalHostClient
from wattvisor.compute.power import PowerService
from wattvisor.compute.records import (
    FlavorRecord,
    HostRecord,
    ImageRecord,
    InterfaceRecord,
    PowerView,
    ServerAddress,
    ServerRecord,
    UserRecord,
    VolumeRecord,
)
from wattvisor.compute.servers import ServerService
from wattvisor.compute.service import DEFAULT_FLAVORS, READY_IMAGE_NAME, Compute
from wattvisor.compute.users import UserStore

__all__ = [
    "DEFAULT_FLAVORS",
    "READY_IMAGE_NAME",
    "Catalog",
    "Compute",
    "ComputeError",
    "Conflict",
    "DeviceService",
    "FlavorRecord",
    "HostClient",
    "HostClientFactory",
    "HostFacts",
    "HostOperationFailed",
    "HostRecord",
    "HostRegistry",
    "ImageRecord",
    "InterfaceAttachment",
    "InterfaceRecord",
    "InvalidRequest",
    "LocalHostClient",
    "NotFound",
    "PowerService",
    "PowerView",
    "ServerAddress",
    "ServerRecord",
    "ServerService",
    "SpawnFlavor",
    "SpawnImage",
    "SpawnRequest",
    "SpawnResult",
    "UserRecord",
    "UserStore",
    "VolumeAttachment",
    "VolumeRecord",
    "placement_inventories",
]
