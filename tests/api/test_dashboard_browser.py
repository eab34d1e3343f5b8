"""The dashboard at ``/`` in a real Chromium against the real API over HTTP.

A member signs in and sees their project's servers and a server's chart with the
points its host pushed, and nothing of another project; an admin sees the hosts and
switches project; a bad or expired token shows the error and nothing else."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Page, expect

from api.browser import CHROMIUM, chromium
from api.test_v1_energy_push import add_server, joined, push, samples
from api.v1_world import V1World
from cli.served_api import free_port
from wattvisor.api.dashboard_routes import STATIC_DIR
from wattvisor.auth.keys import KeyPair
from wattvisor.auth.tokens import mint_token

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed")


@dataclass
class Board:
    url: str
    world: V1World
    servers: dict[str, str]
    """name -> id"""


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def board(world: V1World) -> Iterator[Board]:
    assert (STATIC_DIR / "index.html").is_file(), (
        f"no dashboard build in {STATIC_DIR}: run `make setup` (builds dashboard/)"
    )
    east, east_keys = joined(world, "east")
    a_server = add_server(world, east, "proj-a")
    b_server = add_server(world, east, "proj-b")
    start = time.time() - 400
    response = push(world, east, east_keys, samples([a_server, b_server], 300, 7.0, start))
    assert response.status_code == 200, response.text
    located = world.client.patch(
        f"/v1/hosts/{east}", json={"geolocation": ["48.85,2.35"]}, headers=world.admin
    )
    assert located.status_code == 200, located.text
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(world.node.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield Board(f"http://127.0.0.1:{port}/", world, {"a": a_server, "b": b_server})
    finally:
        server.should_exit = True
        thread.join(30)


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(url)
    page.fill("#token", token)
    page.click("#signin-button")


def test_a_member_sees_a_server_chart_of_their_project_only(board: Board, tmp_path: Path) -> None:
    member = board.world.member("alice", "proj-a")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        sign_in(page, board.url, token_of(member))
        expect(page.locator("body")).to_have_attribute("data-state", "ready", timeout=20_000)
        rows = page.locator("#servers tbody tr")
        expect(rows).to_have_count(1)
        assert rows.first.get_attribute("data-server") == board.servers["a"]
        assert page.locator(f'[data-server="{board.servers["b"]}"]').count() == 0
        points = int(page.locator("#server-chart").get_attribute("data-points") or 0)
        assert points >= 10
        expect(page.locator("#server-chart canvas")).to_have_count(1)
        expect(page.locator("#project-summary .source").first).to_have_text("rapl")
        assert page.locator("#project").is_disabled()
        expect(page.locator("#hosts-section")).to_be_hidden()
        expect(page.locator("#servers th.admin-only")).to_be_hidden()
        page.screenshot(path=str(tmp_path / "dashboard-member.png"), full_page=True)
    assert (tmp_path / "dashboard-member.png").stat().st_size > 1000


def test_an_admin_sees_the_hosts_on_the_map_and_switches_project(
    board: Board, tmp_path: Path
) -> None:
    board.world.member("bob", "proj-b")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        sign_in(page, board.url, token_of(board.world.admin))
        expect(page.locator("body")).to_have_attribute("data-state", "ready", timeout=20_000)
        expect(page.locator("#hosts tbody tr")).to_have_count(2)  # the local one and east
        expect(page.locator("#hosts tbody tr", has_text="48.85,2.35")).to_have_count(1)
        expect(page.locator('#map circle[data-host="east"]')).to_have_count(1)
        page.select_option("#project", "proj-b")
        expect(page.locator("#servers tbody tr")).to_have_attribute(
            "data-server", board.servers["b"], timeout=20_000
        )
        expect(page.locator("body")).to_have_attribute("data-state", "ready", timeout=20_000)
        assert int(page.locator("#server-chart").get_attribute("data-points") or 0) >= 10
        expect(page.locator("#servers th.admin-only")).to_be_visible()
        page.screenshot(path=str(tmp_path / "dashboard-admin.png"), full_page=True)


@pytest.mark.parametrize("kind", ["garbage", "expired"])
def test_a_bad_or_expired_token_shows_the_error_and_nothing_else(
    board: Board, kind: str, tmp_path: Path
) -> None:
    if kind == "garbage":
        token = "not-a-token"
    else:
        keys = KeyPair()
        board.world.node.compute.users.register("carol", "proj-a", "member", repr(keys.public_key))
        token = mint_token(
            keys.private_key, "carol", timedelta(minutes=1),
            now=datetime.now(UTC) - timedelta(hours=1),
        )  # fmt: skip
    with chromium() as browser:
        page = browser.new_page()
        sign_in(page, board.url, token)
        expect(page.locator("#error")).to_be_visible(timeout=20_000)
        expect(page.locator("#error")).to_contain_text("Token refused")
        expect(page.locator("#board")).to_be_hidden()
        assert page.locator("#servers tbody tr").count() == 0
        page.screenshot(path=str(tmp_path / f"dashboard-{kind}.png"))


def test_a_token_file_signs_in(board: Board, tmp_path: Path) -> None:
    member = board.world.member("dave", "proj-a")
    token_file = tmp_path / "token"
    token_file.write_text(token_of(member) + "\n")
    with chromium() as browser:
        page = browser.new_page()
        page.goto(board.url)
        page.set_input_files("#token-file", str(token_file))
        expect(page.locator("body")).to_have_attribute("data-state", "ready", timeout=20_000)
        expect(page.locator("#who")).to_contain_text("dave")
