"""Real guests' console logs through the API and the CLI (libvirtd, QEMU TCG).

The console is appended across boots and rotated: by virtlogd while a guest runs
(at its max_size, 2 MiB by default, in the middle of a line), and by the host
before each start within ``host.console_log_max_bytes`` / ``console_log_backups``.
Read back, it is one stream: each boot after the one before, no line lost or
repeated where a rotation cut it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
import uvicorn

from cli.served_api import RequestLog, Served, free_port
from support.chatty_guest import chatty_cmdline, write_chatty_initrd
from support.followed_output import FollowedOutput
from support.guest_domains import destroy_and_undefine
from wattvisor.allinone import AllInOne
from wattvisor.auth import Principal
from wattvisor.config import load_settings
from wattvisor.host.console_log import START_CURSOR
from wattvisor.images import GuestImage

pytestmark = [pytest.mark.libvirtd, pytest.mark.guest]

ADMIN = Principal("admin", "admin", "admin")
BOOT_TIMEOUT_S = 180.0
CHATTY_LINES = 4500  # about 2.2 MB: virtlogd rotates once during the boot
VERBOSE_CMDLINE = "console=ttyS0 panic=-1 wv.scenario=idle"  # the kernel's own lines too


@pytest.fixture
def served_qemu(
    libvirt_system: libvirt.virConnect, guest_image: GuestImage, world_readable_tmp: Path
) -> Iterator[Served]:
    port = free_port()
    data_dir = world_readable_tmp / "data"
    settings = load_settings(
        data_dir=data_dir,
        host={"libvirt_uri": "qemu:///system", "virt_type": "qemu",
              "instance_name_template": f"wvtest-{secrets.token_hex(5)}-%04x",
              "console_log_max_bytes": 4096, "console_log_backups": 1},
        energy={"source": "model", "interval_s": 1.0},
        compute={"ready_image": False, "stop_timeout_s": 2},
        api={"port": port},
    )  # fmt: skip
    node = AllInOne.build(settings)
    catalog = node.compute.catalog
    catalog.create_image("verbose", kernel_path=str(guest_image.kernel),
                         initrd_path=str(guest_image.initrd), cmdline=VERBOSE_CMDLINE)  # fmt: skip
    chatty = write_chatty_initrd(world_readable_tmp)
    catalog.create_image("chatty", kernel_path=str(guest_image.kernel), initrd_path=str(chatty),
                         cmdline=chatty_cmdline(CHATTY_LINES))  # fmt: skip
    node.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTVISOR_")}
    env.update({"WATTVISOR_DATA_DIR": str(data_dir), "WATTVISOR_API__PORT": str(port),
                "COLUMNS": "250"})  # fmt: skip
    log = RequestLog(node.app)
    api = uvicorn.Server(uvicorn.Config(log, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=api.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not api.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield Served(node, env, api, log)
    finally:
        api.should_exit = True
        thread.join(30)
        servers = node.compute.servers
        leftovers = servers.list_all(ADMIN)
        for server in leftovers:
            with contextlib.suppress(Exception):
                servers.delete(ADMIN, server.uuid)
        for server in leftovers:
            with contextlib.suppress(Exception):
                servers.wait(server.uuid, 60)
            if server.domain_name:  # last resort when the service could not remove it
                with contextlib.suppress(libvirt.libvirtError):
                    destroy_and_undefine(libvirt_system.lookupByName(server.domain_name))
        node.stop()


def _log_text(served: Served, server_id: str) -> str:
    return served.node.compute.console.console_log(ADMIN, server_id).text


def _wait_console(served: Served, server_id: str, marker: str, after: str = START_CURSOR) -> str:
    """The console from ``after`` on, once ``marker`` is in it (read through the service)."""
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    text, cursor = "", after
    while marker not in text:
        assert time.monotonic() < deadline, f"no {marker!r}; console ends:\n{text[-3000:]}"
        view = served.node.compute.console.console_log(ADMIN, server_id, cursor=cursor)
        text, cursor = text + view.text, view.next_cursor
        if not view.more:
            time.sleep(0.5)
    return text


def _read_all(served: Served, server_id: str) -> str:
    """The whole log, oldest first, read from the start in capped answers."""
    cursor, parts = START_CURSOR, []
    for _ in range(50):
        view = served.node.compute.console.console_log(ADMIN, server_id, cursor=cursor)
        assert not view.reset
        parts.append(view.text)
        cursor = view.next_cursor
        if not view.more:
            return "".join(parts)
    raise AssertionError("the log did not end within 50 answers")


def test_the_cli_shows_each_boot_after_the_one_before(served_qemu: Served) -> None:
    served = served_qemu
    alice = served.member_token("alice", "proj-a")
    server = served.json("server", "create", "boots", "--flavor", "tiny", "--image", "verbose",
                         "--wait", "--json", WATTVISOR_TOKEN=alice)  # fmt: skip
    assert server["status"] == "ACTIVE", server
    _wait_console(served, server["id"], "WV-IDLE")

    shown = served.run("server", "console-log", "boots", WATTVISOR_TOKEN=alice)
    assert shown.exit_code == 0, shown.output
    first = shown.stdout
    assert "\r" not in first
    assert (
        0 <= first.index("Linux version") < first.index("WV-BOOT kernel=") < first.index("WV-IDLE")
    ), first[-3000:]

    for _ in range(5):  # the kernel may still add a line between two reads
        before = _log_text(served, server["id"])
        last = served.run("server", "console-log", "boots", "--lines", "3", WATTVISOR_TOKEN=alice)
        if _log_text(served, server["id"]) == before:
            break
    assert last.exit_code == 0, last.output
    assert last.stdout.splitlines() == before.splitlines()[-3:]

    bob = served.member_token("bob", "proj-b")
    denied = served.run("server", "console-log", server["id"], WATTVISOR_TOKEN=bob)
    assert denied.exit_code == 1 and "does not exist" in denied.output, denied.output

    stopped = served.run("server", "stop", "boots", "--wait", WATTVISOR_TOKEN=alice)
    assert stopped.exit_code == 0, stopped.output
    end_of_first = served.node.compute.console.console_log(ADMIN, server["id"]).next_cursor
    started = served.run("server", "start", "boots", "--wait", WATTVISOR_TOKEN=alice)
    assert started.exit_code == 0, started.output
    _wait_console(served, server["id"], "WV-IDLE", after=end_of_first)
    both = served.run("server", "console-log", "boots", WATTVISOR_TOKEN=alice).stdout
    assert both.count("Linux version") == 2 and both.count("WV-BOOT kernel=") == 2, both[-3000:]
    second_boot = both.rindex("\n", 0, both.index("Linux version", both.index("WV-IDLE"))) + 1
    assert both.index("WV-IDLE") < second_boot < both.rindex("WV-IDLE")
    assert both.startswith(first[:200])  # the first boot's lines are still there, first

    # A third start keeps one backup (console_log_backups=1): the first boot goes.
    assert served.run("server", "stop", "boots", "--wait").exit_code == 0
    end_of_second = served.node.compute.console.console_log(ADMIN, server["id"]).next_cursor
    assert served.run("server", "start", "boots", "--wait").exit_code == 0
    _wait_console(served, server["id"], "WV-IDLE", after=end_of_second)
    kept = served.run("server", "console-log", "boots", WATTVISOR_TOKEN=alice).stdout
    assert kept.count("Linux version") == 2 and kept.startswith(both[second_boot:][:200])
    instance = served.node.settings.data_dir / "instances" / server["id"]
    assert sorted(p.name for p in instance.glob("console.log*")) == [
        "console.log",
        "console.log.0",
    ]


def test_follow_prints_a_boot_from_build_on_and_ends_when_the_server_is_deleted(
    served_qemu: Served,
) -> None:
    served = served_qemu
    server = served.json("server", "create", "followed", "--flavor", "tiny", "--image",
                         "verbose", "--json")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattvisor.cli", "server", "console-log", server["id"],
         "--follow", "--interval", "0.3"],
        env=served.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    output = FollowedOutput(proc)
    try:
        output.wait_for("WV-IDLE", BOOT_TIMEOUT_S)
        deleted = served.run("server", "delete", server["id"], "--wait")
        assert deleted.exit_code == 0, deleted.output
        printed, errors = output.finish(60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    assert proc.returncode == 0, errors
    assert f"server {server['id']} was deleted" in errors
    assert printed.count("Linux version") == 1 and printed.count("WV-BOOT kernel=") == 1
    assert printed.index("Linux version") < printed.index("WV-BOOT") < printed.index("WV-IDLE")


def _numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^WV-CHATTY n=(\d+) ", text, re.M)]


def test_a_chatty_guests_log_rotated_by_virtlogd_reads_back_whole(served_qemu: Served) -> None:
    served = served_qemu
    server = served.json("server", "create", "chatty", "--flavor", "tiny", "--image", "chatty",
                         "--wait", "--json")  # fmt: skip
    assert server["status"] == "ACTIVE", server
    sid = server["id"]
    _wait_console(served, sid, "WV-CHATTY-DONE")
    instance = served.node.settings.data_dir / "instances" / sid
    files = sorted(p.name for p in instance.glob("console.log*"))
    assert files == ["console.log", "console.log.0"], (files, "virtlogd's max_size is 2 MiB?")
    assert (instance / "console.log.0").stat().st_size <= 2 * 1024 * 1024

    # Read back through every rotation: lines 1..N, each once, cut lines joined again.
    whole = _read_all(served, sid)
    assert _numbers(whole) == list(range(1, CHATTY_LINES + 1))
    assert whole.index("WV-CHATTY-START") < whole.index("WV-CHATTY-DONE")
    tail = served.node.compute.console.console_log(ADMIN, sid)
    assert tail.truncated and len(tail.text.encode()) <= 1024 * 1024
    assert tail.text.startswith("WV-CHATTY n=")
    assert tail.text.endswith(f"WV-CHATTY-DONE lines={CHATTY_LINES}\n")
