"""The scaphandre-endpoint and utilisation-model sources, and how ``auto`` chooses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support.synthetic_host import SyntheticPowercap
from wattvisor.config.settings import EnergySettings
from wattvisor.energy.sources import (
    EnergyReadError,
    EnergySourceError,
    RaplSource,
    SampleWindow,
    ScaphandreSource,
    UtilisationModelSource,
    open_source,
    parse_scaphandre_metrics,
)

SCAPHANDRE_BODY = """\
# HELP scaph_host_power_microwatts Power measurement on the whole host, in microwatts
# TYPE scaph_host_power_microwatts gauge
scaph_host_power_microwatts{value_source="powercap_rapl_psys"} 84000000
# HELP scaph_process_power_consumption_microwatts Total data read on disk by the process, in bytes
# TYPE scaph_process_power_consumption_microwatts gauge
scaph_process_power_consumption_microwatts{exe="qemu-system-x86_64",pid="4021",\
cmdline="/usr/bin/qemu-system-x86_64-nameguest=one-5,debug-threads=on"} 12500000
scaph_process_power_consumption_microwatts{exe="bash",pid="17",cmdline="bash"} 500000
"""


class _Exporter(BaseHTTPRequestHandler):
    body = SCAPHANDRE_BODY

    def do_GET(self) -> None:
        payload = self.body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def scaphandre_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_scaphandre_host_power_becomes_energy_over_the_interval(scaphandre_url: str) -> None:
    source = ScaphandreSource(scaphandre_url)
    assert source.read(SampleWindow(2.0, 0.3)).is_baseline
    assert source.read(SampleWindow(2.0, 0.3)).energy_joules == pytest.approx(168.0)
    assert source.label == "scaphandre"
    assert source.last is not None
    assert source.last.process_watts == {4021: pytest.approx(12.5), 17: pytest.approx(0.5)}


def test_scaphandre_text_without_host_series_is_rejected() -> None:
    with pytest.raises(EnergyReadError, match="scaph_host_power_microwatts"):
        parse_scaphandre_metrics("# TYPE up gauge\nup 1\n", url="http://x/metrics")


def test_unreachable_scaphandre_endpoint_is_a_clear_error() -> None:
    with pytest.raises(EnergySourceError, match=r"127\.0\.0\.1:9"):
        ScaphandreSource("http://127.0.0.1:9/metrics", timeout_s=0.5)
    with pytest.raises(EnergySourceError, match="not an http"):
        ScaphandreSource("file:///etc/passwd")


def test_model_is_linear_in_utilisation_and_labelled_estimate() -> None:
    model = UtilisationModelSource(idle_watts=50.0, max_watts=250.0)
    assert model.label == "estimate"
    assert model.read(SampleWindow(2.0, 0.0)).is_baseline
    assert model.read(SampleWindow(2.0, 0.25)).energy_joules == pytest.approx(2 * 100.0)
    assert model.read(SampleWindow(1.0, 1.0)).energy_joules == pytest.approx(250.0)
    assert model.read(SampleWindow(1.0, 0.0)).energy_joules == pytest.approx(50.0)


def test_model_rejects_idle_above_max() -> None:
    with pytest.raises(EnergySourceError, match="idle <= max"):
        UtilisationModelSource(idle_watts=300.0, max_watts=200.0)


def test_auto_prefers_readable_rapl(powercap: SyntheticPowercap) -> None:
    powercap.add_zone("intel-rapl:0", "package-0")
    opened = open_source(EnergySettings(source="auto", powercap_root=powercap.root))
    assert isinstance(opened.source, RaplSource)
    assert "RAPL powercap" in opened.explanation


def test_auto_without_rapl_uses_scaphandre_when_configured(
    tmp_path: Path, scaphandre_url: str
) -> None:
    opened = open_source(
        EnergySettings(source="auto", powercap_root=tmp_path, scaphandre_url=scaphandre_url)
    )
    assert isinstance(opened.source, ScaphandreSource)


def test_auto_without_any_meter_uses_model_and_says_why(tmp_path: Path) -> None:
    opened = open_source(EnergySettings(source="auto", powercap_root=tmp_path / "none"))
    assert isinstance(opened.source, UtilisationModelSource)
    assert "estimate" in opened.explanation
    assert "RAPL unusable" in opened.explanation


def test_explicit_rapl_without_tree_fails_instead_of_guessing(tmp_path: Path) -> None:
    with pytest.raises(EnergySourceError, match="modprobe"):
        open_source(EnergySettings(source="rapl", powercap_root=tmp_path / "none"))


def test_explicit_scaphandre_needs_a_url() -> None:
    with pytest.raises(EnergySourceError, match="scaphandre_url"):
        open_source(EnergySettings(source="scaphandre"))
