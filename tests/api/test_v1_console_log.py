"""GET /v1/servers/{id}/console-log over the real app on libvirt's test driver.

The test driver runs no guest, so the test writes the console files where QEMU and
virtlogd write them (``<data_dir>/instances/<uuid>/console.log`` and its backups);
tests/e2e/test_console_log_guest.py reads real guests' output.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from api.v1_world import V1World
from wattvisor.compute.console import MAX_LINES


def _console(world: V1World, server_id: str) -> Path:
    return world.node.settings.data_dir / "instances" / server_id / "console.log"


def _booted_with_log(world: V1World, data: bytes) -> tuple[dict[str, str], str]:
    alice = world.member("alice", "proj-a")
    server_id = world.boot(alice)["id"]
    _console(world, server_id).write_bytes(data)
    return alice, server_id


def test_the_owner_reads_the_whole_log_earlier_boots_first(world: V1World) -> None:
    alice, sid = _booted_with_log(world, b"boot 2 line 1\r\nboot 2 line 2\r\n")
    _console(world, sid).with_name("console.log.0").write_bytes(b"boot 1 line 1\r\n")
    response = world.client.get(f"/v1/servers/{sid}/console-log", headers=alice)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "boot 1 line 1\nboot 2 line 1\nboot 2 line 2\n"
    assert (body["server_id"], body["lines"], body["truncated"]) == (sid, 3, False)


def test_lines_gives_the_last_n_lines(world: V1World) -> None:
    alice, sid = _booted_with_log(world, b"".join(b"line %d\n" % i for i in range(50)))
    body = world.client.get(f"/v1/servers/{sid}/console-log?lines=3", headers=alice).json()
    assert body["text"] == "line 47\nline 48\nline 49\n"
    assert body["lines"] == 3 and body["truncated"] is True


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "1.5", str(MAX_LINES + 1), "", "٣"])
def test_a_bad_lines_value_is_a_400_naming_it_and_what_is_accepted(
    world: V1World, bad: str
) -> None:
    alice, sid = _booted_with_log(world, b"x\n")
    response = world.client.get(f"/v1/servers/{sid}/console-log", params={"lines": bad},
                                headers=alice)  # fmt: skip
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert f"lines {bad!r}" in error["message"] and f"1 to {MAX_LINES}" in error["message"]


def test_a_cursor_no_answer_gave_is_a_400(world: V1World) -> None:
    alice, sid = _booted_with_log(world, b"x\n")
    response = world.client.get(f"/v1/servers/{sid}/console-log?cursor={'z' * 3000}",
                                headers=alice)  # fmt: skip
    assert response.status_code == 400, response.text
    assert "next_cursor of an earlier answer" in response.json()["error"]["message"]
    assert len(response.text) < 1000


def test_a_cursor_gives_only_what_came_after_it(world: V1World) -> None:
    alice, sid = _booted_with_log(world, b"first\n")
    path = f"/v1/servers/{sid}/console-log"
    first = world.client.get(path, headers=alice).json()
    with _console(world, sid).open("ab") as f:
        f.write(b"second\n")
    second = world.client.get(path, params={"cursor": first["next_cursor"]}, headers=alice)
    assert second.status_code == 200, second.text
    assert second.json()["text"] == "second\n" and second.json()["reset"] is False
    third = world.client.get(path, params={"cursor": second.json()["next_cursor"]},
                             headers=alice).json()  # fmt: skip
    assert third["text"] == "" and third["lines"] == 0


def test_another_projects_member_gets_404_and_an_admin_reads_it(world: V1World) -> None:
    _, sid = _booted_with_log(world, b"secret boot output\n")
    bob = world.member("bob", "proj-b")
    denied = world.client.get(f"/v1/servers/{sid}/console-log", headers=bob)
    assert denied.status_code == 404 and denied.json()["error"]["code"] == "not_found"
    assert "secret" not in denied.text
    admin = world.client.get(f"/v1/servers/{sid}/console-log", headers=world.admin)
    assert admin.json()["text"] == "secret boot output\n"


def test_a_server_without_a_log_has_an_empty_one_and_a_deleted_one_none(
    world: V1World,
) -> None:
    alice = world.member("alice", "proj-a")
    sid = world.boot(alice)["id"]
    empty = world.client.get(f"/v1/servers/{sid}/console-log", headers=alice).json()
    assert (empty["text"], empty["lines"], empty["truncated"]) == ("", 0, False)
    assert world.client.delete(f"/v1/servers/{sid}", headers=alice).status_code == 202
    assert world.wait_server(sid, alice)["status"] == "DELETED"
    gone = world.client.get(f"/v1/servers/{sid}/console-log", headers=alice)
    assert gone.status_code == 404, gone.text


def test_a_server_that_never_got_a_host_has_an_empty_log(world: V1World) -> None:
    alice = world.member("alice", "proj-a")
    made = world.client.post(
        "/v1/flavors", json={"name": "huge", "vcpus": 1000, "ram_mb": 1024, "disk_gb": 1},
        headers=world.admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    failed = world.boot(alice, flavor="huge")
    assert failed["status"] == "ERROR"
    body = world.client.get(f"/v1/servers/{failed['id']}/console-log", headers=alice).json()
    assert body["text"] == "" and body["next_cursor"]


def test_guest_bytes_come_back_as_text_with_their_control_characters(world: V1World) -> None:
    alice, sid = _booted_with_log(world, b"\x1b]0;owned\x07 bad \xff utf8\r\n")
    body = world.client.get(f"/v1/servers/{sid}/console-log", headers=alice).json()
    assert body["text"] == "\x1b]0;owned\x07 bad \ufffd utf8\n"
