"""Validation against libvirt's own RelaxNG schema (``domain.rng``).

The schema is loaded once, on first use, and kept: libvirt's schema files are
what ``virt-xml-validate`` uses, so a document that passes here is one libvirt's
parser accepts structurally (libvirt still checks semantics when defining).
"""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree

from wattvisor.guest.errors import GuestXMLError, NotADomainError, SchemaError
from wattvisor.guest.xmlmodel import Element, parse_xml

DOMAIN_RNG = Path("/usr/share/libvirt/schemas/domain.rng")

_lock = threading.Lock()
_schemas: dict[Path, etree.RelaxNG] = {}


def domain_schema(path: Path = DOMAIN_RNG) -> etree.RelaxNG:
    """The compiled schema at ``path`` (loaded on first call, then cached)."""
    with _lock:
        schema = _schemas.get(path)
        if schema is None:
            try:
                schema = etree.RelaxNG(etree.parse(str(path)))
            except (OSError, etree.LxmlError) as exc:
                raise GuestXMLError(
                    f"cannot load libvirt's domain schema {str(path)!r}: {exc}; "
                    "install libvirt (it ships the schemas)"
                ) from exc
            _schemas[path] = schema
        return schema


def validate_domain_element(root: Element, schema_path: Path = DOMAIN_RNG) -> None:
    """Validate a parsed ``<domain>``; raises ``SchemaError`` with the first error's line.

    libxml2 reports some errors (an extra element inside an ``<interleave>``)
    without a line; the line then comes from the first error that has one.
    """
    if root.tag != "domain":
        raise NotADomainError(
            f"root element is <{root.tag}>, but domain XML must have <domain> as its root"
        )
    schema = domain_schema(schema_path)
    with _lock:
        valid = schema.validate(root.getroottree())
        entries = list(schema.error_log)
    if valid:
        return
    messages = tuple(e.message for e in entries)
    first = entries[0] if entries else None
    line = next((e.line for e in entries if e.line and e.line > 0), None)
    where = next((e.path for e in entries if e.path), None)
    message = first.message if first is not None else "document does not match domain.rng"
    if where:
        message = f"{message} (at {where})"
    raise SchemaError(f"domain XML does not match libvirt's schema: {message}", line, messages)


def validate_domain_xml(xml: str | bytes, schema_path: Path = DOMAIN_RNG) -> None:
    """Check domain XML against libvirt's ``domain.rng``.

    Raises ``MalformedXMLError`` for text that is not XML and ``SchemaError``
    (``.line``, ``.detail``, ``.errors``) for a document the schema rejects.
    """
    validate_domain_element(parse_xml(xml, "domain XML"), schema_path)
