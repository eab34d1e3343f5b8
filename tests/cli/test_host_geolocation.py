"""``wattvisor host show`` shows a host's geolocation, where it came from and why it is
empty; ``wattvisor host set-geolocation`` pins or clears it (admin)."""

from __future__ import annotations

from cli.served_api import Served


def test_show_says_where_the_geolocation_came_from_or_why_it_is_empty(served: Served) -> None:
    [local] = served.json("host", "list", "--json")
    shown = served.json("host", "show", local["id"], "--json")
    # The served API has no geolocation database configured.
    assert shown["geolocation"] == []
    assert (shown["geolocation_source"], shown["geolocation_reason"]) == (
        "lookup", "no database configured"
    )  # fmt: skip
    table = served.run("host", "show", local["name"])
    assert table.exit_code == 0, table.output
    assert "geolocation_reason" in table.stdout and "no database configured" in table.stdout


def test_an_admin_pins_and_clears_a_hosts_geolocation(served: Served) -> None:
    [local] = served.json("host", "list", "--json")
    pinned = served.run("host", "set-geolocation", local["name"], "48.8566,2.3522", "--",
                        "-33.87,151.21")  # fmt: skip
    assert pinned.exit_code == 0, pinned.output
    assert "geolocation 48.8566,2.3522 -33.87,151.21 (set by an admin)" in pinned.output
    shown = served.json("host", "show", local["id"], "--json")
    assert shown["geolocation"] == ["48.8566,2.3522", "-33.87,151.21"]
    assert shown["geolocation_source"] == "admin"
    table = served.run("host", "show", local["id"])
    assert "admin" in table.stdout and "48.8566,2.3522" in table.stdout
    cleared = served.run("host", "set-geolocation", local["id"], "--clear")
    assert cleared.exit_code == 0, cleared.output
    assert "no geolocation (no database configured)" in cleared.output
    assert served.json("host", "show", local["id"], "--json")["geolocation_source"] == "lookup"


def test_a_bad_pair_is_refused_with_the_apis_words_and_nothing_changes(served: Served) -> None:
    [local] = served.json("host", "list", "--json")
    refused = served.run("host", "set-geolocation", local["id"], "45,10", "91,10")
    assert refused.exit_code == 1
    assert "'91,10'" in refused.output and "latitude 91 is not accepted" in refused.output
    assert "HTTP 400" in refused.output
    assert served.json("host", "show", local["id"], "--json")["geolocation_source"] == "lookup"
    neither = served.run("host", "set-geolocation", local["id"])
    assert neither.exit_code == 2 and "--clear" in neither.output


def test_a_member_cannot_set_a_geolocation(served: Served) -> None:
    [local] = served.json("host", "list", "--json")
    token = served.member_token()
    result = served.run("host", "set-geolocation", local["id"], "1,2", WATTVISOR_TOKEN=token)
    assert result.exit_code == 1 and "HTTP 403" in result.output
    assert served.json("host", "show", local["id"], "--json")["geolocation_source"] == "lookup"
