"""``wattvisor volume ...`` against the real API served over HTTP."""

from __future__ import annotations

from pathlib import Path

from cli.served_api import Served, add_test_driver_host


def _server(served: Served, name: str) -> dict[str, str]:
    server: dict[str, str] = served.json("server", "create", name, "--flavor", "tiny",
                                         "--image", "kernel", "--wait", "--json")  # fmt: skip
    return server


def test_volume_created_with_server_lands_on_that_servers_host(
    served: Served, tmp_path: Path
) -> None:
    # The server goes to a second host, so the default (local) host would be the wrong one.
    second = served.json("host", "show", add_test_driver_host(served, tmp_path, "second"),
                         "--json")  # fmt: skip
    assert served.run("host", "disable", "vm").exit_code == 0
    server = _server(served, "db")
    assert server["host_id"] == second["id"]
    created = served.json("volume", "create", "data", "--size", "1", "--server", "db",
                          "--format", "raw", "--json")  # fmt: skip
    listed = served.json("volume", "list", "--json")
    assert [(v["id"], v["host_id"], v["format"]) for v in listed] == [
        (created["id"], second["id"], "raw")
    ]


def test_volume_create_list_show_delete(served: Served) -> None:
    created = served.json("volume", "create", "scratch", "--size", "2", "--json")
    assert (created["size_gb"], created["format"], created["status"]) == (2, "qcow2", "available")
    table = served.run("volume", "list").stdout
    assert created["id"] in table and "scratch" in table and "available" in table
    assert served.json("volume", "show", created["id"], "--json")["name"] == "scratch"
    deleted = served.run("volume", "delete", created["id"])
    assert deleted.exit_code == 0, deleted.output
    assert served.json("volume", "list", "--json") == []
    again = served.run("volume", "show", created["id"])
    assert again.exit_code == 1
    assert f"volume '{created['id']}' does not exist (not_found, HTTP 404)" in again.output


def test_volume_create_shows_the_api_refusal_and_creates_nothing(served: Served) -> None:
    result = served.run("volume", "create", "big", "--size", "0")
    assert result.exit_code == 1 and "size_gb" in result.output and "HTTP 422" in result.output
    assert served.json("volume", "list", "--json") == []


def test_attach_without_hotplug_shows_the_host_error_and_the_volume_stays_available(
    served: Served,
) -> None:
    # libvirt's test driver cannot attach devices: the API answers with the host's error.
    _server(served, "web")
    volume = served.json("volume", "create", "v", "--size", "1", "--server", "web", "--json")
    result = served.run("volume", "attach", "web", volume["id"])
    assert result.exit_code == 1
    assert "not supported by the connection driver" in result.output
    assert "host_error, HTTP 502" in result.output
    shown = served.json("volume", "show", volume["id"], "--json")
    assert (shown["status"], shown["server_id"]) == ("available", None)


def test_detach_takes_the_volume_id_or_its_alias(served: Served) -> None:
    _server(served, "web")
    volume = served.json("volume", "create", "v", "--size", "1", "--json")
    for given in (volume["id"], f"ua-{volume['id']}"):
        result = served.run("volume", "detach", "web", given)
        assert result.exit_code == 1
        assert f"no volume or interface with alias 'ua-{volume['id']}'" in result.output


def test_volumes_are_found_by_unique_name(served: Served) -> None:
    _server(served, "demo")
    volume = served.json("volume", "create", "data1", "--size", "1", "--json")
    assert served.json("volume", "show", "data1", "--json")["id"] == volume["id"]
    # The name reaches the host call (the test driver then refuses the hot-plug).
    attached = served.run("volume", "attach", "demo", "data1")
    assert attached.exit_code == 1 and "does not exist" not in attached.output
    assert "host_error, HTTP 502" in attached.output
    detached = served.run("volume", "detach", "demo", "data1")
    assert detached.exit_code == 1
    assert f"no volume or interface with alias 'ua-{volume['id']}'" in detached.output
    by_alias = served.run("volume", "detach", "demo", "ua-nothing")
    assert by_alias.exit_code == 1
    assert "no volume or interface with alias 'ua-nothing'" in by_alias.output
    deleted = served.run("volume", "delete", "data1")
    assert deleted.exit_code == 0, deleted.output
    assert f"volume {volume['id']} deleted" in deleted.output
    assert served.json("volume", "list", "--json") == []


def test_an_ambiguous_volume_name_is_refused_with_the_matching_ids(served: Served) -> None:
    first = served.json("volume", "create", "dup", "--size", "1", "--json")
    second = served.json("volume", "create", "dup", "--size", "1", "--json")
    for args in (("volume", "show", "dup"), ("volume", "delete", "dup")):
        result = served.run(*args)
        assert result.exit_code == 1, args
        assert "2 volumes are named 'dup'" in result.output and "HTTP 409" in result.output
        assert first["id"] in result.output and second["id"] in result.output
    assert len(served.json("volume", "list", "--json")) == 2
    missing = served.run("volume", "show", "nothing")
    assert missing.exit_code == 1 and "volume 'nothing' does not exist" in missing.output
