"""Power views follow visibility rules and say plainly when nothing was measured."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from compute.principals import ADMIN, ALICE, BOB
from wattvisor.compute import Compute, ImageRecord, NotFound


def test_server_on_a_host_without_a_meter_is_reported_unmeasured(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "quiet", "tiny", kernel_image.id)
    settle(server.uuid)
    view = compute.power.server_power(ALICE, server.uuid)
    assert view.subject == server.uuid
    assert (view.measured, view.source, view.watts, view.joules) == (False, "none", 0.0, 0.0)
    with pytest.raises(NotFound):
        compute.power.server_power(BOB, server.uuid)


def test_project_power_is_visible_to_its_members_and_admins_only(compute: Compute) -> None:
    assert compute.power.project_power(ALICE, "proj-a").measured is False
    assert compute.power.project_power(ADMIN, "proj-a").subject == "proj-a"
    with pytest.raises(NotFound, match="project 'proj-a'"):
        compute.power.project_power(BOB, "proj-a")


def test_host_power_of_an_unknown_host_is_not_found(compute: Compute) -> None:
    [host] = compute.hosts.list_all()
    assert compute.power.host_power(host.provider_uuid).source == "none"
    with pytest.raises(NotFound):
        compute.power.host_power("no-such-host")
