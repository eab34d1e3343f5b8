"""Compute settings: how many servers are built at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattvisor.config import ConfigError, load_settings


def test_four_servers_are_built_at_once_by_default(tmp_path: Path) -> None:
    # Like Nova's max_concurrent_builds: a build mostly waits on libvirt and QEMU.
    assert load_settings(data_dir=tmp_path).compute.workers == 4


def test_build_concurrency_is_configurable_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTVISOR_COMPUTE__WORKERS", "3")
    assert load_settings(data_dir=tmp_path).compute.workers == 3
    monkeypatch.setenv("WATTVISOR_COMPUTE__WORKERS", "0")
    with pytest.raises(ConfigError, match=r"compute\.workers.*greater than or equal to 1.*'0'"):
        load_settings(data_dir=tmp_path)


def test_task_lease_and_poll_are_configurable_and_checked_naming_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTVISOR_COMPUTE__TASK_LEASE_S", "12")
    monkeypatch.setenv("WATTVISOR_COMPUTE__TASK_POLL_S", "0.5")
    compute = load_settings(data_dir=tmp_path).compute
    assert (compute.task_lease_s, compute.task_poll_s) == (12, 0.5)
    monkeypatch.setenv("WATTVISOR_COMPUTE__TASK_LEASE_S", "1")
    with pytest.raises(
        ConfigError, match=r"compute\.task_lease_s.*greater than or equal to 2.*'1'"
    ):
        load_settings(data_dir=tmp_path)
    monkeypatch.setenv("WATTVISOR_COMPUTE__TASK_LEASE_S", "30")
    monkeypatch.setenv("WATTVISOR_COMPUTE__TASK_POLL_S", "0")
    with pytest.raises(ConfigError, match=r"compute\.task_poll_s.*greater than 0.*'0'"):
        load_settings(data_dir=tmp_path)


@pytest.mark.parametrize("project", ["a/b", "..", "with space", "p" * 65])
def test_an_admin_project_outside_the_project_rule_is_refused_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, project: str
) -> None:

    monkeypatch.setenv("WATTVISOR_AUTH__ADMIN_PROJECT", project)
    with pytest.raises(ConfigError) as refused:
        load_settings(data_dir=tmp_path)
    assert "auth.admin_project" in str(refused.value)
