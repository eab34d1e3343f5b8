"""Agent settings: where the agent listens, TLS as a pair, controller URL, liveness bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattvisor.config import ConfigError, load_settings


def test_agent_defaults(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    agent = settings.agent
    assert agent.address == ("127.0.0.1", 8775) and agent.url == "http://127.0.0.1:8775"
    assert settings.agent_data_dir == tmp_path / "agent"
    assert agent.tls_cert is None and agent.controller is None
    assert 0 < agent.heartbeat_s < agent.down_after_s


def test_tls_makes_the_advertised_url_https(tmp_path: Path) -> None:
    agent = load_settings(
        data_dir=tmp_path,
        agent={"listen": "198.18.0.2:8775", "tls_cert": tmp_path / "c", "tls_key": tmp_path / "k"},
    ).agent
    assert agent.url == "https://198.18.0.2:8775"
    advertised = load_settings(
        data_dir=tmp_path, agent={"advertise_url": "https://host-b.example:8775/"}
    ).agent
    assert advertised.url == "https://host-b.example:8775"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("WATTVISOR_AGENT__LISTEN", "8775", "listen address '8775' is not accepted"),
        ("WATTVISOR_AGENT__TLS_CERT", "/etc/agent.pem", "agent.tls_cert is set alone"),
        ("WATTVISOR_AGENT__CONTROLLER", "ftp://c:1", "URL 'ftp://c:1' is not accepted"),
        ("WATTVISOR_AGENT__HEARTBEAT_S", "0", "agent.heartbeat_s"),
        ("WATTVISOR_AGENT__DOWN_AFTER_S", "-1", "agent.down_after_s"),
    ],
)
def test_bad_agent_settings_name_the_setting_value_and_what_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)
    assert named in str(caught.value)
