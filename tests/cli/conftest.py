"""Fixtures of the CLI tests: the real API served over HTTP on libvirt's test driver."""

from cli.served_api import served

__all__ = ["served"]
