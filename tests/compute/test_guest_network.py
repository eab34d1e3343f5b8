"""The interface a server is built with: its alias, model, MAC and source."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from wattvisor.compute.guest_network import SERVER_NIC_ALIAS, server_interface, vif_model
from wattvisor.compute.hostclient import SpawnFlavor, SpawnImage, SpawnRequest
from wattvisor.config import HostNetworkSettings
from wattvisor.guest import Domain, validate_domain_xml
from wattvisor.host.networks import GuestAddress, GuestNetwork, NetworkSpec

MAC = "fa:16:3e:12:34:56"


def _request(network: GuestNetwork | None, **properties: str) -> SpawnRequest:
    return SpawnRequest(
        server_uuid="6f1c2a9e-0b7d-4c1e-9a55-2f3c4d5e6f70", display_name="web",
        domain_name="wvtest-nic", project="p", user="u",
        flavor=SpawnFlavor("f", "tiny", 1, 256, 0, 0, 0),
        image=SpawnImage("i", "img", properties=properties, kernel_path="/boot/vmlinuz"),
        power_metrics=False, created_at=datetime.now(UTC),
        user_uuid=str(uuid.uuid4()), project_uuid=str(uuid.uuid4()), network=network,
    )  # fmt: skip


def _network(**settings: str) -> GuestNetwork:
    spec = NetworkSpec.from_settings(HostNetworkSettings.model_validate(settings))
    return GuestNetwork(spec, MAC, (GuestAddress(4, "10.251.0.2", 20, "10.251.0.1"),))


def test_the_nic_is_on_the_libvirt_network_with_alias_mac_and_virtio_by_default() -> None:
    nic = server_interface(_request(_network(mode="isolated", name="wvnet")))
    assert nic is not None
    assert (nic.type, nic.source_network, nic.source_bridge) == ("network", "wvnet", None)
    assert (nic.alias, nic.mac, nic.model) == (SERVER_NIC_ALIAS, MAC, "virtio")
    assert SERVER_NIC_ALIAS == "ua-server-nic"


@pytest.mark.parametrize("model", ["e1000", "rtl8139", "virtio"])
def test_the_nic_model_follows_the_images_hw_vif_model(model: str) -> None:
    request = _request(_network(mode="nat"), hw_vif_model=model)
    assert vif_model(request.image) == model
    nic = server_interface(request)
    assert nic is not None and nic.model == model


def test_on_a_bridge_the_nic_plugs_into_the_host_bridge() -> None:
    nic = server_interface(_request(_network(mode="bridge", bridge="br0")))
    assert nic is not None
    assert (nic.type, nic.source_bridge, nic.source_network) == ("bridge", "br0", None)


def test_a_server_without_network_gets_no_nic() -> None:
    assert server_interface(_request(None)) is None


def test_the_nic_xml_is_valid_in_a_domain() -> None:
    nic = server_interface(_request(_network(mode="isolated", name="wvnet")))
    assert nic is not None
    domain = Domain(name="wvtest-nic", memory_mib=256, vcpus=1, virt_type="qemu")
    domain.add_device(nic)
    xml = domain.to_xml()
    validate_domain_xml(xml)
    assert f'<mac address="{MAC}"/>' in xml.replace("'", '"')
    assert '<alias name="ua-server-nic"/>' in xml.replace("'", '"')
