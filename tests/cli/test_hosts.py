"""``wattvisor host list|show|enable|disable`` and ``wattvisor power ...`` over HTTP."""

from __future__ import annotations

import socket

from cli.served_api import Served


def test_admin_lists_disables_and_enables_hosts(served: Served) -> None:
    [local] = served.json("host", "list", "--json")
    assert local["name"] == socket.gethostname()
    assert served.json("host", "show", local["name"], "--json")["id"] == local["id"]
    disabled = served.run("host", "disable", local["id"], "--reason", "new disks")
    assert disabled.exit_code == 0, disabled.output
    assert "disabled (new disks)" in disabled.output
    shown = served.json("host", "show", local["id"], "--json")
    assert (shown["enabled"], shown["disabled_reason"]) == (False, "new disks")
    assert "no (new disks)" in served.run("host", "list").stdout
    assert served.run("host", "enable", local["name"]).exit_code == 0
    assert served.json("host", "show", local["id"], "--json")["enabled"] is True
    assert served.run("host", "register", "qemu:///system").exit_code != 0  # no such command


def test_host_commands_show_the_api_refusals(served: Served) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    missing = served.run("host", "show", unknown)
    assert missing.exit_code == 1 and f"host '{unknown}' does not exist" in missing.output
    by_name = served.run("host", "disable", "nowhere")
    assert by_name.exit_code == 1 and "no host named 'nowhere'" in by_name.output


def test_a_member_gets_the_apis_refusal_for_host_commands(served: Served) -> None:
    host_id = served.json("host", "list", "--json")[0]["id"]
    token = served.member_token()
    for args in (("host", "list"), ("host", "show", host_id), ("host", "disable", host_id),
                 ("host", "enable", host_id), ("power", "host", host_id)):  # fmt: skip
        result = served.run(*args, WATTVISOR_TOKEN=token)
        assert result.exit_code == 1, args
        assert "user 'alice' has role 'member'; this needs role 'admin'" in result.output, args
        assert "HTTP 403" in result.output, args
    assert served.json("host", "show", host_id, "--json")["enabled"] is True


def test_power_of_a_server_its_project_and_its_host(served: Served) -> None:
    server = served.json("server", "create", "hot", "--flavor", "tiny", "--image", "kernel",
                         "--wait", "--json")  # fmt: skip
    for _ in range(3):  # samples now, instead of waiting for the sampler's interval
        served.node.sampler.sample()
    power = served.json("power", "server", "hot", "--json")
    assert power["subject"] == server["id"] and power["source"] == "estimate"
    assert len(power["history"]) >= 2
    shown = served.run("power", "server", "hot", "--history", "2")
    assert shown.exit_code == 0, shown.output
    assert "watts" in shown.stdout and "joules" in shown.stdout
    assert "estimate (not measured)" in shown.stdout
    assert power["measured"] is False and power["sampled"] is True
    samples = shown.stdout.split("recent samples")[1].splitlines()
    rows = [line for line in samples if line.strip() and "Watts" not in line]
    assert len(rows) == 2, shown.stdout
    no_history = served.run("power", "server", "hot", "--history", "0")
    assert "recent samples" not in no_history.stdout
    assert served.json("power", "project", server["project"], "--json")["subject"] == "admin"
    host = served.json("power", "host", server["host_id"], "--json")
    assert host["subject"] == server["host_id"] and host["servers"] >= 1


def test_a_member_sees_only_its_own_projects_power(served: Served) -> None:
    token = served.member_token("alice", "proj-a")
    other = served.run("power", "project", "admin", WATTVISOR_TOKEN=token)
    assert other.exit_code == 1
    assert "project 'admin' does not exist (not_found, HTTP 404)" in other.output
    assert served.run("power", "project", "proj-a", WATTVISOR_TOKEN=token).exit_code == 0


def test_host_traits_are_what_the_running_service_registered(served: Served) -> None:
    [local] = served.json("host", "list", "--json")
    placement = served.node.placement
    # A trait only placement knows about: a discovery in this shell could never report it.
    placement.ensure_custom_trait("CUSTOM_REGISTERED_ONLY")
    registered = placement.get_provider_traits(local["id"])
    placement.set_provider_traits(
        local["id"], registered.generation, registered.traits | {"CUSTOM_REGISTERED_ONLY"}
    )
    document = served.json("host", "traits", "--json")
    assert (document["source"], document["id"]) == ("registered", local["id"])
    assert "CUSTOM_REGISTERED_ONLY" in document["traits"]
    assert document["traits"] == sorted(served.json("host", "show", "vm", "--json")["traits"])
    assert document["inventory"]["VCPU"] > 0
    table = served.run("host", "traits")
    assert "registered with the running service's placement" in table.stdout
    assert "CUSTOM_REGISTERED_ONLY" in table.stdout
    assert served.json("host", "traits", "vm", "--json")["id"] == local["id"]
    local_view = served.json("host", "traits", "--local", "--json")
    assert local_view["source"] == "local"
    assert "CUSTOM_REGISTERED_ONLY" not in local_view["traits"]
    member = served.run("host", "traits", WATTVISOR_TOKEN=served.member_token())
    assert member.exit_code == 1 and "HTTP 403" in member.output
