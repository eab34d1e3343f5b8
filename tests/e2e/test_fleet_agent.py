"""End to end: a controller on PostgreSQL and a host that joins by running ``wattvisor agent``.

The host is a namespace host (its own libvirtd as ``qemu:///system`` inside it); the
agent runs there as a real process, joins with a join token, and the controller
drives it only over HTTP. A TCG guest is built there, liveness follows the agent's
heartbeats, and a host that comes back is reconciled with the store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from support.fleet_agents import AgentProcess, Controller, serve_controller
from support.namespace_hosts import NamespaceFleet, NamespaceHost
from support.postgres import PostgresServer
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]


@pytest.fixture
def fleet(
    namespace_fleet: NamespaceFleet,
    make_namespace_hosts: Callable[[int], list[NamespaceHost]],
    postgres_server: PostgresServer,
    world_readable_tmp: Path,
) -> Iterator[tuple[Controller, AgentProcess]]:
    [host] = make_namespace_hosts(1)
    with serve_controller(
        namespace_fleet, postgres_server, world_readable_tmp / "controller"
    ) as controller:
        yield controller, AgentProcess(host, world_readable_tmp / "agent", controller.url)


def test_a_host_joins_by_its_agent_and_runs_servers_the_controller_asks_for(
    fleet: tuple[Controller, AgentProcess],
    guest_image: GuestImage,
    libvirt_system: libvirt.virConnect,
) -> None:
    controller, agent = fleet
    host = agent.host
    [joined] = controller.join(agent)
    assert joined["energy_source"] == "estimate" and joined["local"] is False
    assert joined["name"] == host.name and joined["inventory"]["VCPU"] > 0
    image = controller.call(
        "POST", "/v1/images",
        {"name": "busybox-e2e", "kernel_path": str(guest_image.kernel),
         "initrd_path": str(guest_image.initrd), "cmdline": guest_image.cmdline("idle")},
        status=201,
    )  # fmt: skip
    ids = [
        controller.call("POST", "/v1/servers",
                        {"name": name, "flavor": "tiny", "image": image["id"]}, status=202)["id"]
        for name in ("kept", "lost")
    ]  # fmt: skip
    for server_id in ids:
        built = controller.wait(f"server {server_id} to settle", lambda s=server_id: (
            (view := controller.server(s))["status"] != "BUILD" and view["task"] is None and view
        ))  # fmt: skip
        assert built["status"] == "ACTIVE", built["fault"]
        assert built["host_id"] == host.host_uuid and built["host_status"] == "up"
    kept, lost = ids
    with host.connect() as conn:
        assert conn.lookupByUUIDString(kept).isActive()
        assert conn.lookupByUUIDString(lost).isActive()
    with pytest.raises(libvirt.libvirtError):
        libvirt_system.lookupByUUIDString(kept)

    # The agent dies: the host goes down, its servers stay as they are and are not rebuilt.
    agent.kill()
    down = controller.wait("the host to be down", lambda: (
        (view := controller.host_view(host.host_uuid)) is not None
        and view["state"].startswith("down") and view
    ))  # fmt: skip
    assert "no heartbeat" in down["state"]
    for server_id in ids:
        view = controller.server(server_id)
        assert (view["status"], view["host_status"]) == ("ACTIVE", "down")
    refused = controller.call("POST", "/v1/servers", {"name": "nowhere", "flavor": "tiny",
                                                 "image": image["id"]}, status=202)  # fmt: skip
    no_host = controller.wait("the build to be refused", lambda: (
        (view := controller.server(refused["id"]))["status"] == "ERROR" and view
    ))  # fmt: skip
    assert "down" in no_host["fault"]

    # Behind the agent's back: one guest is removed, a foreign domain appears.
    foreign = str(uuid.uuid4())
    with host.connect() as conn:
        domain = conn.lookupByUUIDString(lost)
        domain.destroy()
        domain.undefine()
        conn.defineXML(
            f"<domain type='qemu'><name>foreign-{foreign[:8]}</name><uuid>{foreign}</uuid>"
            "<memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"
        )
    try:
        agent.start()  # no join token: the stored credentials are used
        controller.wait("the host to be up again", lambda: (
            (view := controller.host_view(host.host_uuid)) is not None and view["state"] == "up"
        ))  # fmt: skip
        gone = controller.wait("the lost server to be ERROR", lambda: (
            (view := controller.server(lost))["status"] == "ERROR" and view
        ))  # fmt: skip
        assert "lost" in gone["fault"]
        assert controller.server(kept)["status"] == "ACTIVE"
        assert controller.server(kept)["host_status"] == "up"
        reported = controller.wait("the foreign domain to be reported", lambda: (
            foreign in (controller.host_view(host.host_uuid) or {}).get("unknown_domains", [])
        ))  # fmt: skip
        assert reported
        with host.connect() as conn:
            conn.lookupByUUIDString(foreign)  # left alone

        # Delete goes through the agent and removes the domain from the host.
        controller.call("DELETE", f"/v1/servers/{kept}", status=202)
        controller.wait("the server to be deleted", lambda: (
            controller.server(kept)["status"] == "DELETED"
        ))  # fmt: skip
        with host.connect() as conn, pytest.raises(libvirt.libvirtError):
            conn.lookupByUUIDString(kept)
    finally:
        with host.connect() as conn:
            conn.lookupByUUIDString(foreign).undefine()
