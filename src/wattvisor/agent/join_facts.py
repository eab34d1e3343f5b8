"""What a host tells the controller when it joins, taken from the same
:class:`~wattvisor.compute.hostclient.HostClient` facts a controller registers a host it
drives itself with: libvirt host UUID, hostname, traits, inventory, energy source."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wattvisor.compute.hostclient import HostClient


def join_facts(
    client: HostClient,
    addresses: Sequence[str],
    *,
    name: str | None = None,
    ip_addresses: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v1/hosts/join`` for the host behind ``client`` (without its
    public key, which :func:`wattvisor.agent.credentials.join_cluster` adds).

    ``addresses`` are where the agent answers; ``ip_addresses`` every IP address of the
    host (the controller places the public ones)."""
    facts = client.facts()
    inventory = facts.inventory
    return {
        "id": facts.provider_uuid,
        "name": name or facts.hostname,
        "libvirt_uri": facts.uri,
        "traits": sorted(facts.traits),
        "inventory": {
            "VCPU": inventory.vcpu,
            "MEMORY_MB": inventory.memory_mb,
            "DISK_GB": inventory.disk_gb,
        },
        "energy_source": client.energy_source(),
        "addresses": list(addresses),
        **({"ip_addresses": list(ip_addresses)} if ip_addresses is not None else {}),
    }
