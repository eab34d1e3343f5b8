"""What the long-running commands log: no line per HTTP request they make."""

from __future__ import annotations

import logging

from wattvisor.cli.up import _configure_logging


def test_http_client_requests_are_not_logged_one_line_each_unless_verbose() -> None:
    httpx_logger = logging.getLogger("httpx")
    before = httpx_logger.level
    try:
        _configure_logging(False)
        assert not httpx_logger.isEnabledFor(logging.INFO)
        assert httpx_logger.isEnabledFor(logging.WARNING)
        _configure_logging(True)
        assert httpx_logger.isEnabledFor(logging.DEBUG)
    finally:
        httpx_logger.setLevel(before)
        logging.getLogger("alembic").setLevel(logging.NOTSET)
