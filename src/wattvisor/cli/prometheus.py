"""``wattvisor prometheus config``: a scrape configuration for this deployment.

The configuration finds its targets through the API (``http_sd_configs``), so it
stays right as agents join and servers start, stop or go away; Prometheus only needs
the token files it names. Nothing is asked of the API here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattvisor.cli.api_client import UrlOption
from wattvisor.cli.context import fail, state
from wattvisor.telemetry.scrape_config import Deployment, deployment_scrape_config, render_config

prometheus_app = typer.Typer(help="Prometheus: scrape configuration.", no_args_is_help=True)
DEFAULT_TOKEN_FILE = Path("/etc/prometheus/wattvisor.token")


@prometheus_app.command("config")
def config(
    url: UrlOption = None,
    member: Annotated[
        bool,
        typer.Option(
            "--member",
            help="Only the exporters inside your project's servers, with your own token "
            "(no agents, no service metrics: those are an admin's).",
        ),
    ] = False,
    token_file: Annotated[
        Path,
        typer.Option(
            "--token-file",
            help="Where Prometheus reads the API token (an admin's; with --member yours): "
            "create it with `wattvisor token create` and make it readable by Prometheus only.",
        ),
    ] = DEFAULT_TOKEN_FILE,
    metrics_token_file: Annotated[
        Path | None,
        typer.Option(
            "--metrics-token-file",
            help="Where Prometheus reads the /metrics token of the agents "
            "(default: metrics.bearer_token_file when set).",
        ),
    ] = None,
    scrape_interval: Annotated[
        float, typer.Option("--scrape-interval", min=1, max=3600, help="Seconds between scrapes.")
    ] = 15.0,
    refresh_interval: Annotated[
        float,
        typer.Option(
            "--refresh-interval", min=1, max=3600, help="Seconds between target list refreshes."
        ),
    ] = 30.0,
) -> None:
    """Print a complete Prometheus configuration (YAML) for this deployment."""
    settings = state.settings()
    api_url = url or f"http://{settings.api.host}:{settings.api.port}"
    fleet = settings.store_url.startswith("postgresql")
    metrics_token = metrics_token_file or settings.metrics.bearer_token_file
    deployment = Deployment(
        api_url=api_url, token_file=token_file, member=member,
        metrics_token_file=metrics_token, agent_ca_file=settings.agent.ca_file,
        local_metrics=None if fleet else settings.metrics.listen,
        scrape_interval_s=scrape_interval, refresh_interval_s=refresh_interval,
    )  # fmt: skip
    try:
        built = deployment_scrape_config(deployment)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    comments = [
        f"Prometheus configuration for the wattvisor deployment at {api_url}",
        f"Prometheus reads the API token from {token_file}"
        + (" (a member's: only that project's servers)" if member else " (an admin's)"),
    ]
    if metrics_token is not None and not member:
        comments.append(f"and the agents' /metrics token from {metrics_token}")
    print(render_config(built, comments), end="")
