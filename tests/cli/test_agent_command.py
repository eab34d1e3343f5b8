"""``wattvisor agent``'s own settings decisions (the agent itself runs in tests/e2e)."""

from __future__ import annotations

from pathlib import Path

from wattvisor.cli.agent import default_power_share
from wattvisor.cli.up import DEFAULT_POWER_TAG
from wattvisor.config import load_settings


def test_an_agent_without_share_settings_shares_its_power_metrics_directory(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_dir=tmp_path)
    default_power_share(settings)
    assert settings.host.share_local_fs == {str(tmp_path / "power-metrics"): DEFAULT_POWER_TAG}


def test_an_agent_told_to_share_nothing_shares_nothing(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, host={"share_local_fs": {}})
    default_power_share(settings)
    assert settings.host.share_local_fs == {}


def test_an_agent_keeps_the_shares_it_was_given(tmp_path: Path) -> None:
    mine = {str(tmp_path / "meters"): "meters"}
    settings = load_settings(data_dir=tmp_path, host={"share_local_fs": mine})
    default_power_share(settings)
    assert settings.host.share_local_fs == mine
