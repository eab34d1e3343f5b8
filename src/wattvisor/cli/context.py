"""State shared by every command: the settings file named on the command line, the consoles."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from wattvisor.config import ConfigError, Settings, load_settings

err = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned exit."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


class State:
    """Settings are loaded on first use, so ``--help`` works even with a broken file."""

    config_file: Path | None = None
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_file)
            except ConfigError as exc:
                err.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from exc
        return self._settings


state = State()
