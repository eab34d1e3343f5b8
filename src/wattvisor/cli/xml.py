"""``wattvisor xml ...``: check and upgrade libvirt domain XML files.

Exit codes: 0 success (valid / nothing to change), 1 the document is invalid or
``--check`` found changes to make, 2 the input cannot be read or is not domain XML.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from wattvisor.cli.context import fail
from wattvisor.guest import GuestXMLError, SchemaError, upgrade_domain_xml, validate_domain_xml

xml_app = typer.Typer(
    name="xml",
    help="Check libvirt domain XML against libvirt's schema and add missing device aliases.",
    no_args_is_help=True,
)

FileArgument = Annotated[
    str, typer.Argument(metavar="FILE", help="Domain XML file, or - for standard input.")
]


def _read(file: str) -> bytes:
    """The bytes of FILE (or standard input for ``-``); exit 2 when unreadable."""
    if file == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {file!r}: {exc.strerror or exc}", 2) from exc


def _label(file: str) -> str:
    return "<stdin>" if file == "-" else file


@xml_app.command("upgrade")
def upgrade(
    file: FileArgument = "-",
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Print what would change instead of the XML; exit 1 if anything would.",
        ),
    ] = False,
) -> None:
    """Add ua- aliases to attachable devices that lack one; print the XML.

    Nothing else in the document changes; an up-to-date document is written back
    byte for byte.
    """
    data = _read(file)
    try:
        result = upgrade_domain_xml(data)
    except GuestXMLError as exc:
        raise fail(f"{_label(file)}: {exc}", 2) from exc
    if check:
        for change in result.changes:
            print(change.describe())
        if result.changed:
            print(f"{_label(file)}: {len(result.changes)} device(s) would get an alias")
            raise typer.Exit(1)
        print(f"{_label(file)}: up to date")
        return
    sys.stdout.write(result.xml if result.xml.endswith("\n") else result.xml + "\n")


@xml_app.command("validate")
def validate(file: FileArgument) -> None:
    """Check FILE against libvirt's domain.rng: "valid", or the first error and its line.

    Exits 1 when the document is invalid.
    """
    data = _read(file)
    try:
        validate_domain_xml(data)
    except SchemaError as exc:
        where = f"{_label(file)}:{exc.line}" if exc.line is not None else _label(file)
        print(f"{where}: invalid: {exc.detail}")
        raise typer.Exit(1) from exc
    except GuestXMLError as exc:
        raise fail(f"{_label(file)}: {exc}", 2) from exc
    print("valid")
