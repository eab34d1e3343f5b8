"""The ``openstack`` CLI with the osc-placement plugin, a real Placement client, drives
``/placement`` of the served API.

The CLI runs from its own virtualenv (``.cache/osc-venv``, made by scripts/setup.sh)
without Keystone: keystoneauth's ``admin_token`` plugin sends our admin token as
``X-Auth-Token`` to the fixed ``/placement`` endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from placement_gabbi.gabbi_world import ServedPlacement, served_placement

CLI_TIMEOUT_S = 120
OSC_VENV = Path(".cache") / "osc-venv"


def _openstack_cli() -> Path:
    """The ``bin`` folder of ``.cache/osc-venv`` beside the checkout or beside the
    project's venv, holding ``openstack``."""
    for root in (Path(__file__).resolve().parents[2], Path(sys.prefix).parent):
        folder = root / OSC_VENV / "bin"
        if (folder / "openstack").is_file():
            return folder
    pytest.skip(f"no {OSC_VENV}/bin/openstack: run scripts/setup.sh")


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, self.stderr
        return json.loads(self.stdout)


@dataclass(frozen=True)
class Cli:
    cli: Path
    served: ServedPlacement
    home: Path

    def run(self, *args: str, version: str | None = None, token: str | None = None) -> Result:
        # The venv's interpreter runs the CLI's own entry point (what bin/openstack does).
        command = [
            str(self.cli / "python"), "-m", "openstackclient.shell",
            "--os-auth-type", "admin_token",
            "--os-token", token if token is not None else self.served.tokens["admin"],
            "--os-endpoint", f"http://127.0.0.1:{self.served.port}/placement",
        ]  # fmt: skip
        if version is not None:
            command += ["--os-placement-api-version", version]
        # No OS_* variables and no clouds.yaml of this machine's user reach the CLI.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["HOME"] = str(self.home)
        done = subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.home,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def osc(tmp_path: Path) -> Iterator[Cli]:
    cli = _openstack_cli()
    with served_placement() as served:
        yield Cli(cli, served, tmp_path)


@pytest.mark.parametrize(
    ("version", "fields"),
    [
        # Before 1.14 a provider has no tree fields; before 1.20 creating one answers
        # 201 without a body and the CLI reads the provider back from ``Location``.
        ("1.0", {"uuid", "name", "generation"}),
        ("1.14", {"uuid", "name", "generation", "root_provider_uuid", "parent_provider_uuid"}),
        ("1.20", {"uuid", "name", "generation", "root_provider_uuid", "parent_provider_uuid"}),
        ("1.39", {"uuid", "name", "generation", "root_provider_uuid", "parent_provider_uuid"}),
    ],
)
def test_resource_provider_create_list_show(osc: Cli, version: str, fields: set[str]) -> None:
    created = osc.run("resource", "provider", "create", "rack-1", "-f", "json", version=version)
    provider = created.json()
    assert set(provider) == fields
    assert provider["name"] == "rack-1"
    assert provider["generation"] == 0
    rp = provider["uuid"]
    assert str(uuid.UUID(rp)) == rp
    if "root_provider_uuid" in fields:
        assert provider["root_provider_uuid"] == rp
        assert provider["parent_provider_uuid"] is None

    listed = osc.run("resource", "provider", "list", "-f", "json", version=version).json()
    assert listed == [provider]
    shown = osc.run("resource", "provider", "show", rp, "-f", "json", version=version).json()
    assert shown == provider


def test_inventory_traits_and_allocation_candidates(osc: Cli) -> None:
    rp = osc.run("resource", "provider", "create", "host-a", "-f", "json").json()["uuid"]
    other = osc.run("resource", "provider", "create", "host-b", "-f", "json").json()["uuid"]

    inventory = osc.run(
        "resource", "provider", "inventory", "set", rp,
        "--resource", "VCPU=8", "--resource", "MEMORY_MB=4096", "-f", "json",
    ).json()  # fmt: skip
    totals = {row["resource_class"]: row["total"] for row in inventory}
    assert totals == {"VCPU": 8, "MEMORY_MB": 4096}
    listed = osc.run("resource", "provider", "inventory", "list", rp, "-f", "json").json()
    assert {row["resource_class"]: row["total"] for row in listed} == totals
    # host-b has too few VCPUs for the request below.
    osc.run(
        "resource", "provider", "inventory", "set", other, "--resource", "VCPU=1", "-f", "json"
    ).json()

    # Traits exist from 1.6 on.
    traits = osc.run(
        "resource", "provider", "trait", "set", rp, "--trait", "HW_CPU_X86_AVX2",
        "-f", "json", version="1.6",
    ).json()  # fmt: skip
    assert traits == [{"name": "HW_CPU_X86_AVX2"}]
    assert osc.run(
        "resource", "provider", "trait", "list", rp, "-f", "json", version="1.6"
    ).json() == [{"name": "HW_CPU_X86_AVX2"}]  # fmt: skip

    # 1.10 lists candidates without traits; 1.17 adds them and takes --required.
    (candidate,) = osc.run(
        "allocation", "candidate", "list", "--resource", "VCPU=2", "-f", "json", version="1.10"
    ).json()
    assert candidate["resource provider"] == rp
    assert candidate["allocation"] == "VCPU=2"
    assert "traits" not in candidate
    (candidate,) = osc.run(
        "allocation", "candidate", "list", "--resource", "VCPU=2",
        "--required", "HW_CPU_X86_AVX2", "-f", "json", version="1.17",
    ).json()  # fmt: skip
    assert candidate["resource provider"] == rp
    assert candidate["traits"] == "HW_CPU_X86_AVX2"
    assert "VCPU=0/8" in candidate["inventory used/capacity"]
    # From 1.22 a trait can be forbidden: the only provider with room has it.
    assert osc.run(
        "allocation", "candidate", "list", "--resource", "VCPU=2",
        "--forbidden", "HW_CPU_X86_AVX2", "-f", "json", version="1.22",
    ).json() == []  # fmt: skip


def test_unknown_provider_and_bad_token_fail_with_placement_messages(osc: Cli) -> None:
    unknown = "2b1c9a8e-5f0c-4a6e-9d3b-7c1e0f4a8b26"
    shown = osc.run("resource", "provider", "show", unknown)
    assert shown.returncode != 0
    assert f"No resource provider with uuid {unknown} found (HTTP 404)" in shown.stderr

    refused = osc.run("resource", "provider", "list", token="not-a-token")
    assert refused.returncode != 0
    assert "(HTTP 401)" in refused.stderr
    # Nothing was created by the failed calls.
    assert osc.run("resource", "provider", "list", "-f", "json").json() == []
