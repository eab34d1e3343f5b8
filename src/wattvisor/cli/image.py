"""``wattvisor image ...``: the project's own tiny guest image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from wattvisor.cli.context import fail

image_app = typer.Typer(
    help="Images: the catalog (list, show, create, delete) and the tiny busybox guest (build).",
    no_args_is_help=True,
)
out = Console()


@image_app.command("build")
def build(
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Where to keep the image.")
    ] = None,
) -> None:
    """Build (or reuse) the busybox guest: a Debian cloud kernel and our initramfs."""
    from wattvisor.images import GuestImageError, ensure_guest_image

    try:
        image = ensure_guest_image(cache_dir)
    except GuestImageError as exc:
        raise fail(str(exc)) from exc
    out.print(image.summary())
