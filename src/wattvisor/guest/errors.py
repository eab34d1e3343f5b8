"""Errors raised by the domain XML model.

Every error is a ``GuestXMLError`` (a ``ValueError``), so callers that only want to
reject bad input catch one class; the subclasses exist for callers that react
differently (a CLI maps ``MalformedXMLError`` to exit code 2, ``SchemaError`` to 1).
"""

from __future__ import annotations


class GuestXMLError(ValueError):
    """Domain XML, a device or a value for it that cannot be used."""


class MalformedXMLError(GuestXMLError):
    """Text that is not well-formed XML (or uses an undeclared namespace prefix)."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line
        self.detail = message


class NotADomainError(GuestXMLError):
    """Well-formed XML whose root element is not the element that was expected."""


class InvalidAliasError(GuestXMLError):
    """A device alias that breaks libvirt's rule for user aliases."""


class DuplicateAliasError(InvalidAliasError):
    """A device alias that another device of the same domain already uses."""


class MetadataError(GuestXMLError):
    """Instance metadata that cannot be written or read back."""


class SchemaError(GuestXMLError):
    """Domain XML that libvirt's RelaxNG schema (domain.rng) rejects.

    ``line`` is the line of the first error libxml2 could place (``None`` when it
    placed none); ``errors`` holds every message libxml2 reported, in order.
    """

    def __init__(self, message: str, line: int | None, errors: tuple[str, ...] = ()) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line
        self.detail = message
        self.errors = errors
