"""``wattvisor controller``: API + scheduler + task worker, one replica of a fleet."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from wattvisor.cli.context import fail, state
from wattvisor.cli.safe_text import safe
from wattvisor.cli.up import _check_port_free, _configure_logging, _Server

out = Console()


def controller(
    port: Annotated[int | None, typer.Option("--port", help="API port (default api.port).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a controller (API, scheduler, task worker) on the shared PostgreSQL store.

    Any number of controllers share one store (store.url); each drives the hosts
    registered there and none keeps work of its own: a controller that stops or dies
    leaves its tasks to the others. For one machine on SQLite use 'wattvisor up'.
    """
    from wattvisor.controller import Controller, ControllerStoreError

    _configure_logging(verbose)
    settings = state.settings()
    if port is not None:
        settings.api.port = port
    _check_port_free(settings.api.host, settings.api.port)
    try:
        node = Controller.build(settings)
    except ControllerStoreError as exc:
        raise fail(str(exc)) from exc
    out.print(node.admin_message)
    hosts = node.compute.hosts.list_all()
    out.print(f"hosts in the store: {len(hosts)}")
    for line in [*node.notes, *node.start()]:
        out.print(f"[yellow]note:[/yellow] {escape(safe(line))}")
    base = f"http://{settings.api.host}:{settings.api.port}"
    out.print(
        f"serving {base}: compute API at /v1, placement API at /placement, worker "
        f"{escape(safe(node.compute.servers.worker_id))}; press Ctrl-C to stop"
    )
    server = _Server(
        uvicorn.Config(
            node.app, host=settings.api.host, port=settings.api.port,
            log_level="debug" if verbose else "warning",
        )
    )  # fmt: skip
    try:
        server.run()
    finally:
        node.stop()
        out.print("stopped")
