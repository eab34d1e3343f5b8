"""``wattvisor server ...`` and ``wattvisor power top`` against the real API served over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from cli.served_api import Served, free_port


def test_create_wait_list_show_top_delete(served: Served) -> None:
    created = served.run("server", "create", "web", "--flavor", "tiny", "--image", "kernel",
                         "--wait", "--json")  # fmt: skip
    assert created.exit_code == 0, created.output
    server = json.loads(created.stdout)
    assert server["status"] == "ACTIVE" and server["name"] == "web"

    listed = served.run("server", "list")
    assert listed.exit_code == 0, listed.output
    assert server["id"] in listed.stdout and "ACTIVE" in listed.stdout
    shown = served.run("server", "show", server["id"], "--json")
    assert json.loads(shown.stdout)["id"] == server["id"]
    top = served.run("power", "top", "--once")
    assert top.exit_code == 0, top.output
    assert server["id"] in top.stdout and "Watts" in top.stdout

    deleted = served.run("server", "delete", server["id"], "--wait")
    assert deleted.exit_code == 0, deleted.output
    assert "DELETED" in deleted.output
    assert server["id"] not in served.run("server", "list").stdout


def test_failed_build_exits_1_with_the_fault(served: Served) -> None:
    result = served.run("server", "create", "m", "--flavor", "tiny", "--image", "kernel",
                        "--power-metrics", "--wait")  # fmt: skip
    assert result.exit_code == 1
    assert "COMPUTE_SHARE_LOCAL_FS" in result.output


def test_api_errors_are_shown_as_the_api_words_them(served: Served) -> None:
    result = served.run("server", "create", "x", "--flavor", "huge", "--image", "kernel")
    assert result.exit_code == 1
    assert "flavor 'huge' does not exist" in result.output and "not_found" in result.output


def test_a_member_token_sees_its_own_project_only(served: Served) -> None:
    served.run("server", "create", "admins", "--flavor", "tiny", "--image", "kernel", "--wait")
    token = served.member_token("alice", "proj-a")
    mine = served.run("server", "create", "mine", "--flavor", "tiny", "--image", "kernel",
                      "--wait", "--json", WATTVISOR_TOKEN=token)  # fmt: skip
    assert mine.exit_code == 0, mine.output
    listed = served.run("server", "list", "--json", WATTVISOR_TOKEN=token)
    assert [s["name"] for s in json.loads(listed.stdout)] == ["mine"]


def test_unreachable_api_is_reported(served: Served) -> None:
    result = served.run("server", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1 and "cannot reach the API" in result.output


def test_servers_are_found_by_unique_name(served: Served) -> None:
    created = served.run("server", "create", "named", "--flavor", "tiny", "--image", "kernel",
                         "--wait", "--json")  # fmt: skip
    server_id = json.loads(created.stdout)["id"]
    shown = served.run("server", "show", "named", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["id"] == server_id
    missing = served.run("server", "show", "nobody")
    assert missing.exit_code == 1 and "no server named 'nobody'" in missing.output
    served.run("server", "create", "named", "--flavor", "tiny", "--image", "kernel", "--wait")
    ambiguous = served.run("server", "delete", "named")
    assert ambiguous.exit_code == 1 and "2 servers are named 'named'" in ambiguous.output
    deleted = served.run("server", "delete", server_id, "--wait")
    assert deleted.exit_code == 0, deleted.output
    by_name = served.run("server", "delete", "named", "--wait")
    assert by_name.exit_code == 0 and "DELETED" in by_name.output


def test_admin_registers_a_user_who_then_uses_their_own_key(
    served: Served, tmp_path: Path
) -> None:
    key = tmp_path / "bob.key"
    made = served.run("keys", "create", "--out", str(key))
    assert made.exit_code == 0, made.output
    public = next(p for p in tmp_path.iterdir() if p.name.startswith("bob.key") and p != key)
    created = served.run("user", "create", "bob", "--project", "proj-b",
                         "--public-key-file", str(public))  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "bob" in served.run("user", "list").stdout
    minted = served.run("token", "create", "--key", str(key), "--user", "bob")
    assert minted.exit_code == 0, minted.output
    token = minted.stdout.strip()
    assert served.run("server", "list", WATTVISOR_TOKEN=token).exit_code == 0
    # A member cannot register users.
    refused = served.run("user", "create", "eve", "--project", "proj-b",
                         "--public-key-file", str(public), WATTVISOR_TOKEN=token)  # fmt: skip
    assert refused.exit_code == 1 and "admin" in refused.output
    assert served.run("user", "delete", "bob").exit_code == 0
    gone = served.run("server", "list", WATTVISOR_TOKEN=token)
    assert gone.exit_code == 1 and "401" in gone.output


def test_user_create_needs_exactly_one_public_key_source(served: Served) -> None:
    result = served.run("user", "create", "x", "--project", "p")
    assert result.exit_code == 1 and "exactly one of --public-key" in result.output


def test_stop_then_start_with_wait_ends_shutoff_then_active(served: Served) -> None:
    served.run("server", "create", "cycle", "--flavor", "tiny", "--image", "kernel", "--wait")
    stopped = served.json("server", "stop", "cycle", "--wait", "--json")
    assert (stopped["status"], stopped["task"]) == ("SHUTOFF", None)
    assert served.json("server", "show", "cycle", "--json")["status"] == "SHUTOFF"
    started = served.run("server", "start", stopped["id"], "--wait")
    assert started.exit_code == 0, started.output
    assert f"server {stopped['id']}: ACTIVE" in started.output
    assert served.json("server", "show", "cycle", "--json")["status"] == "ACTIVE"


def test_starting_an_active_server_shows_the_api_conflict(served: Served) -> None:
    served.run("server", "create", "up", "--flavor", "tiny", "--image", "kernel", "--wait")
    result = served.run("server", "start", "up")
    assert result.exit_code == 1
    assert "HTTP 409" in result.output and "ACTIVE" in result.output


def test_metadata_is_the_servers_config_drive_document(served: Served) -> None:
    server = served.json("server", "create", "meta", "--flavor", "tiny", "--image", "kernel",
                         "--wait", "--json")  # fmt: skip
    document = served.json("server", "metadata", "meta")
    assert document["uuid"] == server["id"] and document["name"] == "meta"


def test_interface_add_without_hotplug_shows_the_host_error_and_adds_nothing(
    served: Served,
) -> None:
    # libvirt's test driver cannot attach devices: the API answers with the host's error.
    served.run("server", "create", "nic", "--flavor", "tiny", "--image", "kernel", "--wait")
    result = served.run("server", "interface-add", "nic", "--model", "e1000")
    assert result.exit_code == 1
    assert "not supported by the connection driver" in result.output
    assert "host_error, HTTP 502" in result.output
    assert served.json("server", "interfaces", "nic", "--json") == []
    assert "Alias" in served.run("server", "interfaces", "nic").stdout


def test_interface_commands_show_the_api_refusals(served: Served) -> None:
    served.run("server", "create", "nic", "--flavor", "tiny", "--image", "kernel", "--wait")
    bad_model = served.run("server", "interface-add", "nic", "--model", "bogus")
    assert bad_model.exit_code == 1
    assert "'virtio', 'e1000'" in bad_model.output and "HTTP 422" in bad_model.output
    missing = served.run("server", "interface-remove", "nic", "ua-nothing")
    assert missing.exit_code == 1
    assert "no volume or interface with alias 'ua-nothing'" in missing.output
