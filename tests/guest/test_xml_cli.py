"""``wattvisor xml upgrade|validate`` through Typer's test runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from guest_samples import LEGACY_XML, SCHEMA_INVALID_XML, VOLUME_ID
from typer.testing import CliRunner

from wattvisor.cli.xml import xml_app
from wattvisor.guest import upgrade_domain_xml

app = typer.Typer()
app.add_typer(xml_app, name="xml")
runner = CliRunner()


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    path = tmp_path / "legacy.xml"
    path.write_text(LEGACY_XML)
    return path


def test_upgrade_writes_the_upgraded_xml_to_stdout(old_file: Path) -> None:
    result = runner.invoke(app, ["xml", "upgrade", str(old_file)])
    assert result.exit_code == 0, result.output
    assert result.stdout == upgrade_domain_xml(LEGACY_XML).xml + "\n"
    assert f"ua-{VOLUME_ID}" in result.stdout


def test_upgrade_reads_standard_input() -> None:
    result = runner.invoke(app, ["xml", "upgrade", "-"], input=LEGACY_XML)
    assert result.exit_code == 0 and result.stdout == upgrade_domain_xml(LEGACY_XML).xml + "\n"


def test_upgrade_check_lists_changes_and_exits_1(old_file: Path) -> None:
    result = runner.invoke(app, ["xml", "upgrade", "--check", str(old_file)])
    assert result.exit_code == 1
    assert f"disk (serial={VOLUME_ID}): add alias ua-{VOLUME_ID}" in result.stdout
    assert "replaces libvirt alias virtio-disk1" in result.stdout
    assert "<domain" not in result.stdout


def test_upgrade_check_on_up_to_date_xml_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "new.xml"
    path.write_text(upgrade_domain_xml(LEGACY_XML).xml)
    result = runner.invoke(app, ["xml", "upgrade", "--check", str(path)])
    assert result.exit_code == 0 and "up to date" in result.stdout


def test_validate_prints_valid_or_the_first_error_with_line(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.xml", tmp_path / "bad.xml"
    good.write_text(upgrade_domain_xml(LEGACY_XML).xml)
    bad.write_text(SCHEMA_INVALID_XML)
    ok = runner.invoke(app, ["xml", "validate", str(good)])
    assert ok.exit_code == 0 and ok.stdout.strip() == "valid"
    failed = runner.invoke(app, ["xml", "validate", str(bad)])
    assert failed.exit_code == 1
    assert f"{bad}:7: invalid:" in failed.stdout


@pytest.mark.parametrize("command", [["upgrade"], ["upgrade", "--check"], ["validate"]])
def test_unreadable_or_malformed_input_exits_2_with_message_on_stderr(
    tmp_path: Path, command: list[str]
) -> None:
    missing = runner.invoke(app, ["xml", *command, str(tmp_path / "absent.xml")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    assert "absent.xml" in missing.stderr and missing.stdout == ""
    broken = tmp_path / "broken.xml"
    broken.write_text("<domain>\n<name>x</domain>")
    malformed = runner.invoke(app, ["xml", *command, str(broken)])
    assert malformed.exit_code == 2 and "line 2" in malformed.stderr
    not_domain = tmp_path / "net.xml"
    not_domain.write_text("<network/>")
    wrong = runner.invoke(app, ["xml", *command, str(not_domain)])
    assert wrong.exit_code == 2 and "<network>" in wrong.stderr
