"""Members see their own project only, and never host names, host paths or libvirt URIs."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, Field

from wattvisor.auth import ADMIN_ONLY, Principal, can_see_project, project_scope, redact_for

MEMBER = Principal(user="alice", project="proj-a", role="member")
ADMIN = Principal(user="admin", project="admin", role="admin")
HOST_PATH = "/var/lib/wattvisor/shares/instance-0000002a"
_ABS_PATH = re.compile(r'"/(?:var|srv|run|tmp|home|etc|usr|mnt)/')


class ShareView(BaseModel):
    tag: str
    purpose: str
    source_dir: str


class ServerView(BaseModel):
    id: str
    name: str
    project_id: str
    node: str = Field(json_schema_extra=ADMIN_ONLY)
    console_log: str = Field(json_schema_extra=ADMIN_ONLY)
    shares: list[ShareView]
    meta: dict[str, str]


def _server() -> ServerView:
    return ServerView(
        id="s1",
        name="web",
        project_id="proj-a",
        node="compute-7.example",
        console_log="/var/log/wattvisor/s1.log",
        shares=[ShareView(tag="scaphandre", purpose="power_metrics", source_dir=HOST_PATH)],
        meta={"role": "web"},
    )


def test_member_sees_own_project_only() -> None:
    assert can_see_project(MEMBER, "proj-a")
    assert not can_see_project(MEMBER, "proj-b")
    assert project_scope(MEMBER) == "proj-a"


def test_admin_sees_every_project() -> None:
    assert can_see_project(ADMIN, "proj-b")
    assert project_scope(ADMIN) is None


def test_member_view_of_a_model_holds_no_host_paths_or_host_names() -> None:
    text = json.dumps(redact_for(MEMBER, _server()))
    assert not _ABS_PATH.search(text), text
    assert "compute-7" not in text
    doc = json.loads(text)
    assert doc["shares"] == [{"tag": "scaphandre", "purpose": "power_metrics"}]
    assert doc["meta"] == {"role": "web"}


def test_admin_view_keeps_everything() -> None:
    doc = redact_for(ADMIN, _server())
    assert doc["node"] == "compute-7.example"
    assert doc["shares"][0]["source_dir"] == HOST_PATH


def test_member_view_of_nested_dicts_drops_admin_fields_at_any_depth() -> None:
    raw: dict[str, Any] = {
        "servers": [
            {
                "id": "s1",
                "host": "compute-7",
                "libvirt_uri": "qemu+ssh://compute-7/system",
                "power": {"watts": 12.5, "host_path": "/sys/class/powercap/intel-rapl:0"},
            },
        ],
        "share_source_dir": "/srv/scaphandre",
    }
    doc = redact_for(MEMBER, raw)
    text = json.dumps(doc)
    assert not _ABS_PATH.search(text) and "/sys/" not in text and "compute-7" not in text
    assert doc == {"servers": [{"id": "s1", "power": {"watts": 12.5}}]}
    assert raw["servers"][0]["host"] == "compute-7"  # the input is left alone


def test_routes_can_hide_their_own_extra_fields() -> None:
    assert redact_for(MEMBER, {"a": 1, "rack": "r7"}, extra_fields={"rack"}) == {"a": 1}
