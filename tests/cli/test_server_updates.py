"""``wattvisor server rename|set|resize`` and the uuids ``wattvisor user list`` shows."""

from __future__ import annotations

import json

from cli.served_api import Served


def _boot(served: Served) -> dict[str, object]:
    created = served.run("server", "create", "web", "--flavor", "tiny", "--image", "kernel",
                         "--wait", "--json")  # fmt: skip
    assert created.exit_code == 0, created.output
    server: dict[str, object] = json.loads(created.stdout)
    return server


def test_rename_and_set_name_change_the_servers_name(served: Served) -> None:
    server = _boot(served)
    sid = str(server["id"])
    renamed = served.run("server", "rename", sid, "db-1")
    assert renamed.exit_code == 0, renamed.output
    assert "db-1" in renamed.output
    assert served.json("server", "show", sid, "--json")["name"] == "db-1"
    result = served.run("server", "set", "db-1", "--name", "db-2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "db-2"
    nothing = served.run("server", "set", sid)
    assert nothing.exit_code == 1 and "--name" in nothing.output


def test_resize_waits_for_the_new_flavor_and_refusals_show_the_apis_words(
    served: Served,
) -> None:
    server = _boot(served)
    sid = str(server["id"])
    resized = served.run("server", "resize", sid, "small", "--wait", "--json")
    assert resized.exit_code == 0, resized.output
    small = served.json("flavor", "show", "small", "--json")
    assert json.loads(resized.stdout)["flavor_id"] == small["id"]
    unknown = served.run("server", "resize", sid, "gigantic")
    assert unknown.exit_code == 1 and "flavor 'gigantic' does not exist" in unknown.output


def test_user_list_shows_user_and_project_uuids(served: Served) -> None:
    served.member_token("alice", "proj-a")
    listed = served.run("user", "list")
    assert listed.exit_code == 0, listed.output
    users = {u["name"]: u for u in served.json("user", "list", "--json")}
    assert users["alice"]["uuid"] in listed.stdout
    assert users["alice"]["project_uuid"] in listed.stdout


def test_user_projects_lists_each_project_with_its_uuid(served: Served) -> None:
    served.member_token("alice", "proj-a")
    users = {u["name"]: u for u in served.json("user", "list", "--json")}
    listed = served.run("user", "projects")
    assert listed.exit_code == 0, listed.output
    assert "proj-a" in listed.stdout and users["alice"]["project_uuid"] in listed.stdout
