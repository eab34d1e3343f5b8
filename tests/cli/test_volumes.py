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
