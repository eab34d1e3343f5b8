"""A failed libvirt connection says libvirt's error code and domain; its text goes to the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wattvisor.host.connection import HostConnection, HostConnectionError


def test_connection_error_names_the_code_not_the_file_it_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "admin.key"
    secret.write_text("PRIVATE-KEY-LINE\n")
    connection = HostConnection(f"test://{secret}")
    with caplog.at_level(logging.WARNING), pytest.raises(HostConnectionError) as failed:
        connection.get()
    message = str(failed.value)
    assert "PRIVATE-KEY-LINE" not in message
    assert message.startswith(f"cannot connect to libvirt at 'test://{secret}' (libvirt error ")
    assert "from domain 12 (VIR_FROM_TEST)" in message and "check that libvirtd runs" in message
    # The operator still has libvirt's own words, in the service's log.
    assert "PRIVATE-KEY-LINE" in caplog.text
