"""State shared by every command: the settings file named on the command line, the consoles."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from wattvisor.cli.safe_text import safe
from wattvisor.config import ConfigError, Settings, load_settings

err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned exit.

    The message often quotes the API, i.e. other people's names: it is printed as
    plain text (no Rich markup) with control characters escaped."""
    err.print(Text.assemble(("error:", "red"), " ", safe(message)), soft_wrap=True)
    return typer.Exit(code)


def say(message: str) -> None:
    """An informational line on stderr, unwrapped, as plain text with control characters
    escaped (stdout stays for what scripts read)."""
    err.print(Text(safe(message)), soft_wrap=True)


class State:
    """Settings are loaded on first use, so ``--help`` works even with a broken file."""

    config_file: Path | None = None
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_file)
            except ConfigError as exc:
                raise fail(str(exc), 2) from exc
        return self._settings


state = State()
