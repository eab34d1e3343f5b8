"""``wattvisor server console-log`` against the real API served over HTTP (libvirt's test
driver: the test writes the console file where QEMU and virtlogd write it)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from cli.served_api import Served
from support.followed_output import FollowedOutput

FOLLOW_TIMEOUT_S = 30.0


def _server_with_log(served: Served, name: str, data: bytes) -> tuple[str, Path]:
    server = served.json("server", "create", name, "--flavor", "tiny", "--image", "kernel",
                         "--wait", "--json")  # fmt: skip
    console = served.node.settings.data_dir / "instances" / server["id"] / "console.log"
    console.write_bytes(data)
    return server["id"], console


def test_console_log_prints_the_log_by_name_and_its_last_lines(served: Served) -> None:
    _server_with_log(served, "web", b"".join(b"WV-LINE %d\r\n" % i for i in range(20)))
    whole = served.run("server", "console-log", "web")
    assert whole.exit_code == 0, whole.output
    assert whole.stdout == "".join(f"WV-LINE {i}\n" for i in range(20))
    last = served.run("server", "console-log", "web", "--lines", "2")
    assert last.exit_code == 0, last.output
    assert last.stdout == "WV-LINE 18\nWV-LINE 19\n"


def test_control_characters_from_the_guest_are_shown_escaped(served: Served) -> None:
    _server_with_log(served, "rude", b"\x1b[2J\x1b]0;title\x07\tok\r\nbidi \xe2\x80\xae x\n")
    result = served.run("server", "console-log", "rude")
    assert result.exit_code == 0, result.output
    assert result.stdout == "\\x1b[2J\\x1b]0;title\\x07\tok\nbidi \\u202e x\n"


def test_bad_lines_and_other_projects_show_the_api_refusal(served: Served) -> None:
    _server_with_log(served, "mine", b"x\n")
    bad = served.run("server", "console-log", "mine", "--lines", "0")
    assert bad.exit_code == 1
    assert "lines '0' is not accepted" in bad.output and "HTTP 400" in bad.output
    server_id = served.json("server", "show", "mine", "--json")["id"]
    other = served.run("server", "console-log", server_id, WATTVISOR_TOKEN=served.member_token())
    assert other.exit_code == 1 and "does not exist" in other.output


def test_follow_prints_only_new_lines_until_the_server_is_deleted(served: Served) -> None:
    server_id, console = _server_with_log(served, "tail", b"before 1\nbefore 2\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattvisor.cli", "server", "console-log", "tail", "--follow",
         "--lines", "1", "--interval", "0.2"],
        env=served.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    output = FollowedOutput(proc)
    try:
        output.wait_for("before 2\n", FOLLOW_TIMEOUT_S)
        for n in range(3):
            with console.open("ab") as f:
                f.write(b"after %d\r\n" % n)
            output.wait_for(f"after {n}\n", FOLLOW_TIMEOUT_S)
        served.run("server", "delete", server_id, "--wait")
        printed, errors = output.finish(FOLLOW_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=FOLLOW_TIMEOUT_S)
    assert proc.returncode == 0, errors
    assert printed == "before 2\nafter 0\nafter 1\nafter 2\n"
    assert "server tail was deleted" in errors


def test_follow_ends_cleanly_on_sigterm(served: Served) -> None:
    _server_with_log(served, "term", b"hello\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattvisor.cli", "server", "console-log", "term", "--follow",
         "--interval", "0.2"],
        env=served.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    output = FollowedOutput(proc)
    output.wait_for("hello\n", FOLLOW_TIMEOUT_S)
    proc.send_signal(signal.SIGTERM)
    printed, errors = output.finish(FOLLOW_TIMEOUT_S)
    assert proc.returncode == 0 and "Traceback" not in errors, errors
    assert printed == "hello\n"
