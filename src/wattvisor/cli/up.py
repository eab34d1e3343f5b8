"""``wattvisor up``: every role in one process on embedded defaults."""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Iterator
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from wattvisor.cli.context import err, fail, state
from wattvisor.cli.safe_text import safe
from wattvisor.config import Settings
from wattvisor.host.connection import HostConnectionError

out = Console()
DEFAULT_POWER_TAG = "scaphandre"


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )
    # Schema upgrades run on every start; Alembic's step-by-step INFO lines are noise
    # unless asked for. Its warnings and errors still show.
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # httpx logs every request at INFO: an agent's heartbeats, a controller's calls to
    # every host (its power sync alone makes one per host every interval). At a
    # thousand hosts those lines cost the controller more CPU than the calls; failures
    # are logged by the callers.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                err.print(
                    f"[red]error:[/red] {host}:{port} is already in use; stop the other "
                    "process or choose another port with --port / WATTVISOR_API__PORT"
                )
                raise typer.Exit(1) from exc
            raise


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after shutting down, which would kill the process
    before the energy sampler and libvirt connection are closed; we shut down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        def handle(sig: int, frame: FrameType | None) -> None:
            self.handle_exit(sig, frame)

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _check_metrics_listener(settings: Settings) -> None:
    """The metrics address and token file, checked before start-up does anything else."""
    from wattvisor.telemetry.listener import (
        MetricsListenerError,
        check_listen_address,
        read_bearer_token,
    )

    host, port = settings.metrics.address
    wildcard = {"0.0.0.0", "::"}
    if port == settings.api.port and (
        host == settings.api.host or host in wildcard or settings.api.host in wildcard
    ):
        err.print(
            f"[red]error:[/red] metrics.listen {settings.metrics.listen!r} is the API's own "
            f"address ({settings.api.host}:{settings.api.port}); metrics are served apart "
            "from the API, so give metrics.listen another port"
        )
        raise typer.Exit(1)
    try:
        check_listen_address(host, port)
        if settings.metrics.bearer_token_file is not None:
            read_bearer_token(settings.metrics.bearer_token_file)
    except MetricsListenerError as exc:
        raise fail(str(exc)) from exc


def up(
    port: Annotated[int | None, typer.Option("--port", help="API port (default api.port).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start wattvisor on this machine with embedded defaults."""
    from wattvisor.allinone import AllInOne, freeze_startup_heap
    from wattvisor.energy import EnergySourceError
    from wattvisor.host.qemu_access import DataDirUnreachable
    from wattvisor.telemetry import MetricsListenerError

    _configure_logging(verbose)
    settings = state.settings()
    if port is not None:
        settings.api.port = port
    _check_port_free(settings.api.host, settings.api.port)
    _check_metrics_listener(settings)
    if not settings.host.share_local_fs:
        # Embedded default, so --power-metrics works out of the box on this one machine.
        power_dir = settings.data_dir / "power-metrics"
        settings.host.share_local_fs = {str(power_dir): DEFAULT_POWER_TAG}
        out.print(
            f"host.share_local_fs not configured: sharing {power_dir} read-only as "
            f"'{DEFAULT_POWER_TAG}' with guests that ask for power metrics"
        )

    try:
        node = AllInOne.build(settings)
    except (HostConnectionError, EnergySourceError, DataDirUnreachable) as exc:
        raise fail(str(exc)) from exc

    driver = node.driver
    out.print(f"libvirt: [bold]{driver.uri}[/bold] ({driver.uri_reason})")
    inventory = driver.inventory()
    out.print(
        f"host {node.provider_uuid}: virt_type={settings.host.virt_type} VCPU={inventory.vcpu} "
        f"MEMORY_MB={inventory.memory_mb} DISK_GB={inventory.disk_gb}, "
        f"{len(driver.traits())} traits registered with placement"
    )
    out.print(node.sampler.explanation)
    out.print(node.admin_message)
    flavors = ", ".join(f.name for f in node.compute.catalog.flavors()) or "none"
    out.print(f"flavors: {escape(safe(flavors))}")
    out.print(node.ensure_ready_image())
    net = node.compute.servers.addresses.spec
    subnets = ", ".join(s for s in (net.ipv4_subnet, net.ipv6_subnet) if s)
    out.print(
        f"network: servers get one interface on [bold]{escape(safe(net.name))}[/bold] "
        f"({net.mode}, {subnets}), static addresses on their config drive"
    )
    for name in node.startup.shares_reestablished:
        out.print(f"re-established read-only share mounts of {escape(safe(name))}")
    for problem in [*node.startup.problems, *node.notes]:
        out.print(f"[yellow]note:[/yellow] {escape(safe(problem))}")
    try:
        metrics = node.start_metrics_listener()
    except MetricsListenerError as exc:
        node.stop()
        raise fail(str(exc)) from exc
    guard = (
        f"bearer token from {settings.metrics.bearer_token_file}"
        if metrics.token_required
        else "no token: anyone who reaches the address can scrape"
    )
    out.print(f"Prometheus metrics at {metrics.url} ({guard})")
    base = f"http://{settings.api.host}:{settings.api.port}"
    out.print(
        f"serving {base}: compute API at /v1 (token), placement API at /placement (admin "
        f"token), OpenAPI at /openapi.json; store {settings.store_url.split('://')[0]}; "
        "press Ctrl-C to stop"
    )

    node.start()
    freeze_startup_heap()
    server = _Server(
        uvicorn.Config(
            node.app,
            host=settings.api.host,
            port=settings.api.port,
            log_level="debug" if verbose else "warning",
        )
    )
    try:
        server.run()
    finally:
        node.stop()
        out.print("stopped")
