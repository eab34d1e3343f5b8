"""The interface every server gets on its host's network.

Kept apart from :mod:`wattvisor.compute.guest_build` so the NIC has one small home:
its alias, its model (from the image, as Nova reads ``hw_vif_model``), its MAC and
its source all come from the spawn request.
"""

from __future__ import annotations

from wattvisor.compute.hostclient import SpawnImage, SpawnRequest
from wattvisor.compute.image_properties import DEFAULT_VIF_MODEL as DEFAULT_VIF_MODEL
from wattvisor.compute.image_properties import vif_model_for
from wattvisor.guest import Interface, make_alias

SERVER_NIC_ALIAS = make_alias("server-nic")
"""The alias of the interface a server is built with (attached ports carry ``ua-<port id>``)."""

"""Nova's default NIC model on KVM/QEMU when the image names none."""


def vif_model(image: SpawnImage) -> str:
    """The NIC model the image asks for with ``hw_vif_model`` (validated when scheduled)."""
    return vif_model_for(image.properties)


def server_interface(request: SpawnRequest) -> Interface | None:
    """The server's ``<interface>``, or None when the controller gave it no network."""
    network = request.network
    if network is None:
        return None
    spec = network.spec
    return Interface(
        type=spec.interface_type,
        source_network=spec.interface_source if spec.interface_type == "network" else None,
        source_bridge=spec.interface_source if spec.interface_type == "bridge" else None,
        mac=network.mac,
        model=vif_model(request.image),
        alias=SERVER_NIC_ALIAS,
    )
