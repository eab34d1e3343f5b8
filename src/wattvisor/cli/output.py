"""How every command prints what the API answered: ``-f table|json|value`` and ``-c COLUMN``.

One module, so that every list and show command behaves the same way, as the
OpenStack client does:

- ``table`` (the default): ids and aliases are never cut; when stdout is not a
  terminal the table is as wide as it needs to be, so a pipe or a file gets every
  value whole, ready to copy into the next command;
- ``json``: the API's objects as it sent them (with ``-c``, only those fields);
  ``--json`` is the same as ``-f json``;
- ``value``: the values alone, space-separated, one row per line in column order
  (one value per line for a single object), for ``read``/``cut`` in scripts.

Every string passes through :func:`wattvisor.cli.safe_text.safe` (or
:func:`~wattvisor.cli.safe_text.safe_json`), so no control character from the
API reaches the terminal.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from wattvisor.cli.context import fail
from wattvisor.cli.safe_text import safe, safe_json

__all__ = [
    "Column",
    "ColumnOption",
    "FormatOption",
    "JsonOption",
    "Output",
    "OutputFormat",
    "console",
    "print_json",
    "print_line",
    "shown",
]

UNCUT_WIDTH = 100_000
"""Console width when stdout is not a terminal: wide enough that no table is ever cut."""


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"
    value = "value"


FormatOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--format", "-f", case_sensitive=False,
        help="table, json, or value (values only: space-separated, one row per line).",
    ),
]  # fmt: skip
ColumnOption = Annotated[
    list[str] | None,
    typer.Option(
        "--column", "-c", metavar="COLUMN",
        help="Print only this column (header or field name); repeatable, in this order.",
    ),
]  # fmt: skip
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (same as -f json).")]


def console() -> Console:
    """The stdout console: the terminal's width on a terminal, never cutting anything elsewhere."""
    probe = Console()
    if probe.is_terminal:
        return Console(highlight=False)
    return Console(width=UNCUT_WIDTH, highlight=False, soft_wrap=True)


def shown(value: Any) -> str:
    """A field as one line of text: lists joined with ``, ``, mappings as ``k=v``."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(shown(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={shown(v)}" for k, v in value.items())
    return str(value)


def print_line(text: str) -> None:
    """One line of plain text on stdout, control characters escaped, never wrapped."""
    sys.stdout.write(safe(text) + "\n")
    sys.stdout.flush()


def print_json(value: Any, indent: int | None = 2) -> None:
    """``value`` as JSON on stdout (non-ASCII letters kept, control characters escaped)."""
    sys.stdout.write(safe_json(json.dumps(value, indent=indent, ensure_ascii=False)) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a list: its header, the field it shows, and how the table words it.

    ``ident`` columns (ids, aliases) are never wrapped; ``default=False`` columns
    appear only when asked for with ``-c``.
    """

    header: str
    key: str
    get: Callable[[Mapping[str, Any]], Any] | None = None
    text: Callable[[Any], str] = shown
    ident: bool = False
    right: bool = False
    default: bool = True

    def value(self, item: Mapping[str, Any]) -> Any:
        return self.get(item) if self.get is not None else item.get(self.key)

    def matches(self, name: str) -> bool:
        wanted = name.casefold()
        return wanted in (self.header.casefold(), self.key.casefold())


def created(value: Any) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` for tables."""
    return str(value)[:19].replace("T", " ") if value else ""


def yes_no(value: Any) -> str:
    return "yes" if value else "no"


class Output:
    """The format and columns one command was asked for; prints lists and single objects."""

    def __init__(self, fmt: OutputFormat, columns: Sequence[str] = ()) -> None:
        self.fmt = fmt
        self.columns = tuple(columns)

    @classmethod
    def of(
        cls, fmt: OutputFormat | None, columns: Sequence[str] | None, as_json: bool = False
    ) -> Output:
        """From the ``-f``, ``-c`` and ``--json`` options; contradicting ones exit 2."""
        if as_json and fmt not in (None, OutputFormat.json):
            raise fail(f"--json and -f {fmt} contradict each other; give one of them", 2)
        chosen = OutputFormat.json if as_json else (fmt or OutputFormat.table)
        return cls(chosen, columns or ())

    @property
    def is_json(self) -> bool:
        return self.fmt is OutputFormat.json

    # -- lists -------------------------------------------------------------------------

    def pick(self, columns: Sequence[Column]) -> list[Column]:
        """The columns to print: those named with ``-c`` (exit 2 on an unknown one), else the
        default ones. Call before asking the API, so a typo costs no request."""
        if not self.columns:
            return [c for c in columns if c.default]
        picked: list[Column] = []
        for name in self.columns:
            found = next((c for c in columns if c.matches(name)), None)
            if found is None:
                accepted = ", ".join(repr(c.header) for c in columns)
                raise fail(f"no column {name!r}; columns: {accepted}", 2)
            picked.append(found)
        return picked

    def rows(
        self, items: Sequence[Mapping[str, Any]], columns: Sequence[Column], title: str = ""
    ) -> None:
        """A list of API objects in the chosen format."""
        picked = self.pick(columns)
        if self.fmt is OutputFormat.json:
            if self.columns:
                print_json([{c.key: c.value(item) for c in picked} for item in items])
            else:
                print_json(list(items))
            return
        if self.fmt is OutputFormat.value:
            lines = (" ".join(safe(shown(c.value(item))) for c in picked) for item in items)
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
            return
        console().print(table(items, picked, title))

    # -- single objects ----------------------------------------------------------------

    def record(self, item: Mapping[str, Any]) -> None:
        """One API object: its fields in the API's order (or as named with ``-c``)."""
        keys = list(item)
        if self.columns:
            chosen: list[str] = []
            for name in self.columns:
                found = next((k for k in keys if k.casefold() == name.casefold()), None)
                if found is None:
                    raise fail(f"no field {name!r}; fields: {', '.join(keys)}", 2)
                chosen.append(found)
            keys = chosen
        if self.fmt is OutputFormat.json:
            print_json({k: item[k] for k in keys} if self.columns else dict(item))
            return
        if self.fmt is OutputFormat.value:
            sys.stdout.write("".join(safe(shown(item[k])) + "\n" for k in keys))
            sys.stdout.flush()
            return
        grid = Table(box=None, show_header=False)
        grid.add_column("field", no_wrap=True)
        grid.add_column("value", overflow="fold")
        for key in keys:
            grid.add_row(Text(safe(key)), Text(safe(shown(item[key]))))
        console().print(grid)


def table(items: Sequence[Mapping[str, Any]], columns: Sequence[Column], title: str = "") -> Table:
    """A Rich table of ``items``: plain text cells, ids unwrapped, nothing cut with an ellipsis."""
    grid = Table(box=None, title=Text(safe(title)) if title else None, title_justify="left")
    for c in columns:
        grid.add_column(
            c.header, no_wrap=c.ident, overflow="fold", justify="right" if c.right else "left"
        )
    for item in items:
        grid.add_row(*(Text(safe(c.text(c.value(item)))) for c in columns))
    return grid
