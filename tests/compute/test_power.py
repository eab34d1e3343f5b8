"""Power views follow visibility rules and say plainly when nothing was measured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event

from compute.principals import ADMIN, ALICE, BOB
from wattvisor.compute import Compute, ImageRecord, NotFound, PowerView


def test_server_on_a_host_without_a_meter_is_reported_unmeasured(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    server = compute.servers.create(ALICE, "quiet", "tiny", kernel_image.id)
    settle(server.uuid)
    view = compute.power.server_power(ALICE, server.uuid)
    assert view.subject == server.uuid
    assert (view.sampled, view.measured, view.source) == (False, False, "none")
    assert (view.watts, view.joules) == (0.0, 0.0)
    with pytest.raises(NotFound):
        compute.power.server_power(BOB, server.uuid)


def test_project_power_is_visible_to_its_members_and_admins_only(compute: Compute) -> None:
    assert compute.power.project_power(ALICE, "proj-a").sampled is False
    assert compute.power.project_power(ADMIN, "proj-a").subject == "proj-a"
    with pytest.raises(NotFound, match="project 'proj-a'"):
        compute.power.project_power(BOB, "proj-a")


def test_host_power_of_an_unknown_host_is_not_found(compute: Compute) -> None:
    [host] = compute.hosts.list_all()
    assert compute.power.host_power(host.provider_uuid).source == "none"
    with pytest.raises(NotFound):
        compute.power.host_power("no-such-host")


def test_servers_power_lists_what_the_principal_may_see_with_one_store_query(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    made = {
        principal.project: [compute.servers.create(principal, f"s{i}", "tiny", kernel_image.id)
                            for i in range(3)]
        for principal in (ALICE, BOB)
    }  # fmt: skip
    for servers in made.values():
        for server in servers:
            settle(server.uuid)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(compute.servers.engine, "before_cursor_execute", seen)
    try:
        views = compute.power.servers_power(ALICE)
    finally:
        event.remove(compute.servers.engine, "before_cursor_execute", seen)
    assert sorted(v.server_uuid for v in views) == sorted(s.uuid for s in made["proj-a"])
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, statements
    # No meter on this host: listed, but said plainly to be unmeasured.
    assert {(v.source, v.measured, v.watts) for v in views} == {("none", False, 0.0)}
    everyone = compute.power.servers_power(ADMIN)
    assert {v.project for v in everyone} == {"proj-a", "proj-b"} and len(everyone) == 6
    assert {v.project for v in compute.power.servers_power(ADMIN, "proj-b")} == {"proj-b"}
    with pytest.raises(NotFound, match="project 'proj-a'"):
        compute.power.servers_power(BOB, "proj-a")
    compute.servers.delete(ALICE, made["proj-a"][0].uuid)
    settle(made["proj-a"][0].uuid)
    assert len(compute.power.servers_power(ALICE)) == 2


@pytest.mark.parametrize(
    ("source", "sampled", "measured"),
    [
        ("rapl", True, True),
        ("scaphandre", True, True),
        ("estimate", True, False),
        ("estimate+rapl", True, False),  # a project partly on an unmetered host
        ("rapl", False, False),
        ("none", False, False),
    ],
)
def test_only_a_sampled_meter_reading_counts_as_measured(
    source: str, sampled: bool, measured: bool
) -> None:
    view = PowerView("s", 1.0, 2.0, source, sampled, 0.0 if sampled else None)
    assert view.measured is measured
