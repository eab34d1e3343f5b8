"""What commands print: ``-f table|json|value``, ``-c``, uncut ids, no raw control characters."""

from __future__ import annotations

import io
import json
from typing import Any, cast

import pytest
from rich.console import Console
from sqlalchemy import Table, update

from cli.served_api import Served, free_port
from wattvisor.cli.context import fail
from wattvisor.cli.output import Column, table
from wattvisor.store import write_transaction
from wattvisor.store.compute_tables import FlavorRow, ServerRow

LONG_NAME = "a-server-whose-name-alone-is-wider-than-half-of-an-eighty-column-terminal"


def _server(served: Served, name: str) -> dict[str, Any]:
    server: dict[str, Any] = served.json("server", "create", name, "--flavor", "tiny",
                                         "--image", "kernel", "--wait", "--json")  # fmt: skip
    return server


def test_ids_and_names_are_never_cut_in_a_narrow_pipe(served: Served) -> None:
    server = _server(served, LONG_NAME)
    volume = served.json("volume", "create", LONG_NAME, "--size", "1", "--json")
    for args, ident in (
        (("server", "list"), server["id"]),
        (("server", "show", server["id"]), server["id"]),
        (("volume", "list"), volume["id"]),
        (("volume", "show", volume["id"]), volume["id"]),
    ):
        result = served.run(*args, COLUMNS="80")
        assert result.exit_code == 0, result.output
        assert ident in result.stdout and LONG_NAME in result.stdout, result.stdout
        assert "…" not in result.stdout


def test_on_a_narrow_terminal_ids_stay_whole_and_other_columns_wrap() -> None:
    ident = "7d4c4a55-1d7e-4d2b-9b1e-0c6f5d1a9e42"
    rows = [{"id": ident, "name": LONG_NAME, "status": "ACTIVE"}]
    columns = (Column("ID", "id", ident=True), Column("Name", "name"), Column("Status", "status"))
    buffer = io.StringIO()
    Console(file=buffer, width=60, force_terminal=True, color_system=None).print(
        table(rows, columns)
    )
    printed = buffer.getvalue()
    assert ident in printed and "…" not in printed
    header, *lines = printed.splitlines()
    start, end = header.index("Name"), header.index("Status")
    assert "".join(line[start:end].strip() for line in lines) == LONG_NAME  # folded, not cut
    assert "ACTIVE" in lines[0]


def test_value_format_prints_the_chosen_columns_space_separated(served: Served) -> None:
    first = _server(served, "one")
    second = _server(served, "two")
    listed = served.run("server", "list", "-f", "value", "-c", "ID", "-c", "name")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == [f"{first['id']} one", f"{second['id']} two"]
    shown = served.run("server", "show", "two", "-f", "value", "-c", "status", "-c", "id")
    assert shown.stdout.splitlines() == ["ACTIVE", second["id"]]
    flavors = served.run("flavor", "list", "-f", "value", "-c", "Name", "-c", "vCPUs")
    assert sorted(flavors.stdout.splitlines()) == ["small 1", "tiny 1"]


def test_json_with_columns_keeps_only_those_fields(served: Served) -> None:
    server = _server(served, "only")
    rows = served.json("server", "list", "-f", "json", "-c", "id", "-c", "Status")
    assert rows == [{"id": server["id"], "status": "ACTIVE"}]
    assert served.json("server", "show", "only", "--json", "-c", "name") == {"name": "only"}
    everything = served.json("server", "list", "-f", "json")
    assert everything[0]["flavor_id"] == server["flavor_id"]


def test_an_unknown_column_is_refused_before_any_request(served: Served) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = served.run("server", "list", "-c", "ID", "-c", "colour", "--url", nowhere)
    assert result.exit_code == 2
    assert "no column 'colour'; columns: 'ID', 'Name'" in result.output
    assert "cannot reach" not in result.output
    _server(served, "x")
    field = served.run("server", "show", "x", "-c", "colour")
    assert field.exit_code == 2 and "no field 'colour'; fields: id, name" in field.output
    both = served.run("server", "list", "--json", "-f", "value")
    assert both.exit_code == 2 and "contradict" in both.output


def test_server_list_and_show_name_the_flavor_and_image(served: Served) -> None:
    server = _server(served, "named")
    listed = served.run("server", "list")
    header, row = listed.stdout.splitlines()[:2]
    assert "Flavor" in header and "Image" in header
    assert "tiny" in row and "kernel" in row
    shown = served.json("server", "show", "named", "--json")
    keys = list(shown)
    assert keys[keys.index("flavor_id") + 1] == "flavor_name"
    assert keys[keys.index("image_id") + 1] == "image_name"
    assert (shown["flavor_name"], shown["image_name"]) == ("tiny", "kernel")
    table_lines = served.run("server", "show", "named").stdout.splitlines()
    assert any(line.split() == ["flavor_name", "tiny"] for line in table_lines)
    assert any(line.split() == ["flavor_id", server["flavor_id"]] for line in table_lines)


EVIL = "evil\x1b[2J\x1b]0;owned\x07\u202eeman\x9b"


def test_control_characters_from_the_api_never_reach_the_terminal(served: Served) -> None:
    server = _server(served, "plain")
    engine = served.node.compute.servers.engine
    # Written straight into the store: the API may refuse such names.
    with write_transaction(engine) as conn:
        servers = cast(Table, ServerRow.__table__)
        flavors = cast(Table, FlavorRow.__table__)
        conn.execute(update(servers).where(servers.c.uuid == server["id"]).values(name=EVIL))
        conn.execute(update(flavors).where(flavors.c.name == "small").values(name=EVIL))
    # Any catalog change makes the service read the flavors again.
    served.node.compute.catalog.create_flavor("scratch", 1, 64, 0)
    served.node.compute.catalog.delete_flavor("scratch")

    outputs = {
        "table": served.run("server", "list"),
        "show": served.run("server", "show", server["id"]),
        "value": served.run("server", "list", "-f", "value"),
        "json": served.run("server", "list", "-f", "json"),
        "top": served.run("power", "top", "--once"),
        "error": served.run("server", "create", "x", "--flavor", "nope", "--image", "kernel"),
        "flavors": served.run("flavor", "list"),
    }
    for label, result in outputs.items():
        for raw in ("\x1b", "\x07", "\u202e", "\x9b"):
            assert raw not in result.output, (label, result.output)
    for label in ("table", "show", "value", "top", "flavors"):
        assert "evil\\x1b[2J\\x1b]0;owned\\x07\\u202eeman\\x9b" in outputs[label].stdout, label
    assert "evil\\x1b[2J" in outputs["error"].output and "does not exist" in outputs["error"].output
    assert outputs["error"].exit_code == 1
    # JSON keeps the exact name (escaped as JSON does), so scripts get the real value.
    assert json.loads(outputs["json"].stdout)[0]["name"] == EVIL
    assert "\\u202e" in outputs["json"].stdout


def test_error_messages_are_plain_text_with_control_characters_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Brackets once made Rich read "[/run/x]" as a closing tag and crash.
    exit_ = fail("cannot open [/run/x] for [bold]\x1b[31mred\u202e")
    assert exit_.exit_code == 1
    printed = capsys.readouterr().err
    assert printed == "error: cannot open [/run/x] for [bold]\\x1b[31mred\\u202e\n"


def test_every_list_and_show_command_takes_the_format_and_column_options(
    served: Served,
) -> None:
    server = _server(served, "every")
    volume = served.json("volume", "create", "vol", "--size", "1", "--json")
    host = served.json("host", "list", "--json")[0]
    commands = [
        ("server", "list"), ("server", "show", "every"), ("server", "interfaces", "every"),
        ("volume", "list"), ("volume", "show", "vol"), ("flavor", "list"),
        ("flavor", "show", "tiny"), ("image", "list"), ("image", "show", "kernel"),
        ("host", "list"), ("host", "show", "vm"), ("host", "traits"), ("user", "list"),
        ("power", "server", "every"), ("power", "project", "admin"), ("power", "host", "vm"),
        ("power", "top", "--once"),
    ]  # fmt: skip
    for args in commands:
        as_json = served.run(*args, "-f", "json")
        assert as_json.exit_code == 0, (args, as_json.output)
        json.loads(as_json.stdout)
        as_value = served.run(*args, "-f", "value")
        assert as_value.exit_code == 0, (args, as_value.output)
    picked = {
        ("server", "show", "every"): ("id", server["id"]),
        ("volume", "show", "vol"): ("id", volume["id"]),
        ("host", "show", "vm"): ("id", host["id"]),
        ("host", "list"): ("ID", host["id"]),
        ("power", "server", "every"): ("subject", server["id"]),
    }
    for args, (column, expected) in picked.items():
        assert served.run(*args, "-f", "value", "-c", column).stdout == expected + "\n", args
