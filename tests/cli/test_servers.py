"""``wattvisor server ...`` and ``wattvisor power top`` against the real API served over HTTP."""

from __future__ import annotations

import json
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli.served_api import Served, free_port
from wattvisor.auth import Principal
from wattvisor.cli.wait_progress import WaitProgress

ADMIN = Principal("admin", "admin", "admin")


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
    [(network, addresses)] = json.loads(shown.stdout)["addresses"].items()
    v4, v6 = (a["addr"] for a in addresses)
    networks = served.run("server", "list", "-f", "value", "-c", "Networks")
    assert networks.stdout.split("\n")[0] == f"{network}={v4}, {v6}"
    table = served.run("server", "show", server["id"])
    assert table.exit_code == 0, table.output
    assert f"addresses  {network}={v4}, {v6}" in re.sub(r" {2,}", "  ", table.stdout)
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


def test_admin_registers_a_user_who_then_uses_their_own_key(served: Served, tmp_path: Path) -> None:
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


def test_waits_report_each_status_change_with_elapsed_time_on_stderr(served: Served) -> None:
    created = served.run("server", "create", "prog", "--flavor", "tiny", "--image", "kernel",
                         "--wait", "--json")  # fmt: skip
    assert created.exit_code == 0, created.output
    server = json.loads(created.stdout)  # stdout holds the result alone
    assert f"server prog accepted: id {server['id']}, BUILD (scheduling)" in created.stderr
    assert re.search(r"^ *\d+\.\d s  building prog: ACTIVE$", created.stderr, re.M), created.stderr
    stopped = served.run("server", "stop", "prog", "--wait")
    assert re.search(r"^ *\d+\.\d s  stopping prog: SHUTOFF$", stopped.stderr, re.M), stopped.stderr
    deleted = served.run("server", "delete", "prog", "--wait")
    assert re.search(r"^ *\d+\.\d s  deleting prog: DELETED$", deleted.stderr, re.M), deleted.stderr


def test_a_long_wait_off_a_terminal_says_it_is_still_going(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress = WaitProgress("stopping", heartbeat_s=0.0)
    with progress:
        progress.update({"name": "slow", "status": "ACTIVE", "task": "stopping"})
        progress.update({"name": "slow", "status": "ACTIVE", "task": "stopping"})
        progress.update({"name": "slow", "status": "SHUTOFF", "task": None})
    lines = [line.split(" s  ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["stopping slow: ACTIVE (stopping)", "stopping slow: still ACTIVE (stopping)",
                     "stopping slow: SHUTOFF"]  # fmt: skip


def test_create_wait_prints_the_new_id_before_the_api_goes_away(served: Served) -> None:
    # Every worker is kept busy by a stop waiting for a server lock the test holds, so
    # the new server stays BUILD while the CLI waits; then the API stops answering.
    servers = served.node.compute.servers
    workers = served.node.settings.compute.workers
    busy = [served.json("server", "create", f"busy{i}", "--flavor", "tiny", "--image", "kernel",
                        "--wait", "--json")["id"] for i in range(workers)]  # fmt: skip
    locks = [servers.lock_for(server_id) for server_id in busy]
    for lock in locks:
        lock.acquire()
    found: list[str] = []

    def stop_api_once_accepted() -> None:
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            found.extend(s.uuid for s in servers.list_all(ADMIN) if s.name == "late")
            time.sleep(0.05)
        served.stop_api()

    stopper = threading.Thread(target=stop_api_once_accepted)
    try:
        for server_id in busy:
            assert served.run("server", "stop", server_id).exit_code == 0
        stopper.start()
        result = served.run("server", "create", "late", "--flavor", "tiny", "--image", "kernel",
                            "--wait")  # fmt: skip
    finally:
        stopper.join(60)
        for lock in locks:
            lock.release()
    assert found, "the server was never created"
    assert result.exit_code == 1 and "cannot reach the API" in result.output
    assert f"server late accepted: id {found[0]}" in result.stderr


def test_power_top_fetches_every_servers_figures_in_one_request(served: Served) -> None:
    made = [served.json("server", "create", name, "--flavor", "tiny", "--image", "kernel",
                        "--wait", "--json") for name in ("p1", "p2", "p3")]  # fmt: skip
    served.node.sampler.sample()
    served.node.sampler.sample()
    served.log.requests.clear()
    table = served.run("power", "top", "--once")
    assert table.exit_code == 0, table.output
    assert served.log.requests == ["GET /v1/power/servers"]
    assert all(server["id"] in table.stdout for server in made)
    assert "servers by watts at" in table.stdout and "Watts" in table.stdout
    as_json = served.run("power", "top", "--once", "--json")
    [line] = as_json.stdout.splitlines()  # one JSON document per refresh, on one line
    rows = json.loads(line)
    assert {r["id"] for r in rows} == {s["id"] for s in made}
    assert {(r["source"], r["sampled"], r["measured"]) for r in rows} == {("estimate", True, False)}
    values = served.run("power", "top", "--once", "-f", "value", "-c", "Name", "-c", "source")
    assert sorted(values.stdout.splitlines()) == ["p1 estimate", "p2 estimate", "p3 estimate"]
    member = served.run("power", "top", "--once", "--json",
                        WATTVISOR_TOKEN=served.member_token())  # fmt: skip
    assert json.loads(member.stdout) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_power_top_in_a_pipe_prints_each_refresh_and_ends_cleanly_on_a_signal(
    served: Served, sig: signal.Signals
) -> None:
    server = served.json("server", "create", "piped", "--flavor", "tiny", "--image", "kernel",
                         "--wait", "--json")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattvisor.cli", "power", "top", "--interval", "0.2"],
        env=served.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while sum(server["id"] in line for line in seen) < 2 and time.monotonic() < deadline:
            if readable(proc.stdout, 1.0):
                seen.append(proc.stdout.readline())
        assert sum(server["id"] in line for line in seen) >= 2, seen  # two refreshes
    finally:
        proc.send_signal(sig)
        rest, errors = proc.communicate(timeout=30)
    assert proc.returncode == 0, errors
    assert "Traceback" not in errors
    printed = [line for line in ("".join(seen) + rest).splitlines() if line.strip()]
    assert sum("servers by watts at" in line for line in printed) >= 2
    assert server["id"] in printed[-1]  # the last table is there whole, down to its row


def test_create_boots_from_a_volume_and_a_taken_volume_exits_1(served: Served) -> None:
    made = served.run("volume", "create", "rootvol", "--size", "1", "--json")
    assert made.exit_code == 0, made.output
    volume = json.loads(made.stdout)
    created = served.run("server", "create", "vol", "--flavor", "tiny", "--image", "kernel",
                         "--boot-volume", "rootvol", "--wait", "--json")  # fmt: skip
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["boot_volume_id"] == volume["id"]
    again = served.run("server", "create", "vol2", "--flavor", "tiny", "--image", "kernel",
                       "--boot-volume", volume["id"])  # fmt: skip
    assert again.exit_code == 1
    assert "is in use by server" in again.output and volume["id"] in again.output


def readable(stream: object, timeout_s: float) -> bool:
    """Whether ``stream`` has data within the timeout (epoll: fd numbers past 1024 work)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        return bool(selector.select(timeout_s))
