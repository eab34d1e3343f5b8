"""Metrics settings: the listener's own address and the token file."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattvisor.config import ConfigError, load_settings


def test_metrics_listen_on_loopback_apart_from_the_api_by_default(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.metrics.address == ("127.0.0.1", 9464)
    assert settings.metrics.address[1] != settings.api.port
    assert settings.metrics.bearer_token_file is None and not settings.metrics.process_pids


@pytest.mark.parametrize(
    ("listen", "address"),
    [("0.0.0.0:9100", ("0.0.0.0", 9100)), ("[::1]:9464", ("::1", 9464)),
     ("[fd00::0:1]:80", ("fd00::1", 80)), ("metrics.example.org:9464",
                                           ("metrics.example.org", 9464))],
)  # fmt: skip
def test_listen_address_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listen: str, address: tuple[str, int]
) -> None:
    monkeypatch.setenv("WATTVISOR_METRICS__LISTEN", listen)
    assert load_settings(data_dir=tmp_path).metrics.address == address


@pytest.mark.parametrize(
    "listen", ["9464", "127.0.0.1", "127.0.0.1:", ":9464", "::1:9464", "[::1]", "[nope]:9464",
               "127.0.0.1:65536", "127.0.0.1:-1", "host name:9464", "h/x:1"],
)  # fmt: skip
def test_bad_listen_address_is_refused_with_what_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listen: str
) -> None:
    monkeypatch.setenv("WATTVISOR_METRICS__LISTEN", listen)
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)
    message = str(caught.value)
    assert "metrics.listen" in message and repr(listen) in message
    assert "host:port" in message and "[::1]:9464" in message


def test_token_file_and_pids_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "wattvisor.toml"
    config.write_text(
        '[metrics]\nlisten = "[::]:9464"\nbearer_token_file = "/etc/wattvisor/metrics.token"\n'
        "process_pids = true\n"
    )
    metrics = load_settings(config, data_dir=tmp_path).metrics
    assert metrics.address == ("::", 9464)
    assert metrics.bearer_token_file == Path("/etc/wattvisor/metrics.token")
    assert metrics.process_pids
