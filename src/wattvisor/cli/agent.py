"""``wattvisor agent``: run this machine as a host of a cluster.

The first run joins (``--controller URL --join-token TOKEN``); later runs reuse the
credentials the join left under ``agent.data_dir``. The agent serves the host protocol
on ``agent.listen`` (HTTPS when ``agent.tls_cert``/``agent.tls_key`` are set) to the
cluster's controllers only, its energy on ``metrics.listen``, and heartbeats.
"""

from __future__ import annotations

import socket
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from wattvisor.cli.context import fail, state
from wattvisor.cli.up import DEFAULT_POWER_TAG, _configure_logging, _Server
from wattvisor.config import Settings

out = Console(stderr=True, highlight=False)

LISTEN_BACKLOG = 2048
"""As uvicorn's own default backlog."""


def default_power_share(settings: Settings) -> None:
    """Share ``<data_dir>/power-metrics`` with power-metrics guests unless the host says
    otherwise: ``host.share_local_fs`` left unset gets the default share, while an
    explicit ``share_local_fs = {}`` keeps the host from offering
    ``COMPUTE_SHARE_LOCAL_FS`` (hosts of one cluster need not all take such guests)."""
    host = settings.host
    if not host.share_local_fs and "share_local_fs" not in host.model_fields_set:
        power_dir = settings.data_dir / "power-metrics"
        host.share_local_fs = {str(power_dir): DEFAULT_POWER_TAG}


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (the first address a name resolves to) and
    listening."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def agent(
    controller: Annotated[
        str | None,
        typer.Option("--controller", help="URL of the controller to join (first run)."),
    ] = None,
    join_token: Annotated[
        str | None,
        typer.Option(
            "--join-token",
            envvar="WATTVISOR_JOIN_TOKEN",
            help="Single-use join token from `wattvisor host join-token` (first run).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run this machine as a host: join the cluster once, then serve it."""
    from wattvisor.agent.credentials import JoinFailed
    from wattvisor.agent.runtime import AgentSetupError, HostAgent
    from wattvisor.energy import EnergySourceError
    from wattvisor.host.connection import HostConnectionError
    from wattvisor.host.qemu_access import DataDirUnreachable
    from wattvisor.telemetry import MetricsListenerError

    _configure_logging(verbose)
    settings = state.settings()
    if controller is not None:
        settings.agent.controller = controller
    default_power_share(settings)
    try:
        node = HostAgent.build(settings)
    except (HostConnectionError, EnergySourceError, DataDirUnreachable) as exc:
        raise fail(str(exc)) from exc
    try:
        trust, joined = node.join(controller, join_token)
    except (AgentSetupError, JoinFailed) as exc:
        node.stop()
        raise fail(str(exc)) from exc
    except Exception as exc:
        node.stop()
        raise fail(f"cannot reach the controller to join: {exc}") from exc
    verb = "joined" if joined else "rejoined"
    out.print(
        f"{verb} cluster {trust.cluster_id} as host {trust.host_id} "
        f"(controller {trust.controller_url})"
    )
    for problem in node.startup.problems:
        out.print(f"note: {problem}")
    for upgraded in node.startup.upgraded:
        out.print(f"upgraded domain {upgraded.domain}: aliases {', '.join(upgraded.added_aliases)}")
    host, port = settings.agent.address
    try:
        # Bound before the first heartbeat: a controller that sees the host up can
        # call it at once, and the kernel queues those calls until uvicorn accepts.
        listening = listen_socket(host, port)
    except OSError as exc:
        node.stop()
        raise fail(f"cannot listen on agent.listen {settings.agent.listen!r}: {exc}") from exc
    try:
        node.start()
    except MetricsListenerError as exc:
        listening.close()
        node.stop()
        raise fail(str(exc)) from exc
    agent_settings = settings.agent
    out.print(
        f"serving the host protocol at {agent_settings.url}; energy: {node.sampler.source_label}"
    )
    server = _Server(
        uvicorn.Config(
            node.app(),
            host=host,
            port=port,
            log_level="debug" if verbose else "warning",
            ssl_certfile=str(agent_settings.tls_cert) if agent_settings.tls_cert else None,
            ssl_keyfile=str(agent_settings.tls_key) if agent_settings.tls_key else None,
        )
    )
    try:
        server.run(sockets=[listening])
    finally:
        listening.close()
        node.stop()
        out.print("stopped")
