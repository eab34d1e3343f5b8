"""``wattvisor up``: every role in one process on embedded defaults."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from wattvisor.cli.context import err, state
from wattvisor.host.connection import HostConnectionError

out = Console()


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )


def up(
    port: Annotated[int | None, typer.Option("--port", help="API port (default api.port).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start wattvisor on this machine with embedded defaults."""
    from wattvisor.host.driver import HostDriver

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _configure_logging(verbose)
    settings = state.settings()
    if port is not None:
        settings.api.port = port
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    driver = HostDriver.from_settings(settings)
    out.print(f"libvirt: [bold]{driver.uri}[/bold] ({driver.uri_reason})")
    try:
        report = driver.startup()
        traits = sorted(driver.traits())
        inventory = driver.inventory()
    except HostConnectionError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    out.print(
        f"host: virt_type={settings.host.virt_type} VCPU={inventory.vcpu} "
        f"MEMORY_MB={inventory.memory_mb} DISK_GB={inventory.disk_gb}, {len(traits)} traits"
    )
    for name in report.shares_reestablished:
        out.print(f"re-established read-only share mounts of {name}")
    for problem in report.problems:
        out.print(f"[yellow]warning:[/yellow] {problem}")

    out.print(
        "running the host layer only (no API, scheduler or energy sampler in this build); "
        "press Ctrl-C to stop"
    )
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        driver.close()
        out.print("stopped")
