"""Entry point of the ``wattvisor`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattvisor import __version__
from wattvisor.cli.agent import agent
from wattvisor.cli.auth import keys_app, token_app
from wattvisor.cli.catalog import add_image_commands, flavor_app
from wattvisor.cli.context import state
from wattvisor.cli.controller import controller
from wattvisor.cli.dev import dev_app
from wattvisor.cli.host import host_app
from wattvisor.cli.image import image_app
from wattvisor.cli.power import power_app
from wattvisor.cli.prometheus import prometheus_app
from wattvisor.cli.server_updates import add_server_update_commands
from wattvisor.cli.servers import server_app
from wattvisor.cli.up import up
from wattvisor.cli.users import user_app
from wattvisor.cli.volumes import volume_app
from wattvisor.cli.xml import xml_app

app = typer.Typer(
    name="wattvisor",
    help="Run VMs on libvirt/KVM hosts by capability and make their energy use visible.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"wattvisor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="WATTVISOR_CONFIG", help="TOML settings file."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state.config_file = config
    state._settings = None


app.add_typer(xml_app, name="xml")
app.add_typer(host_app, name="host")
add_image_commands(image_app)
app.add_typer(image_app, name="image")
app.add_typer(flavor_app, name="flavor")
app.add_typer(keys_app, name="keys")
app.add_typer(token_app, name="token")
add_server_update_commands(server_app)
app.add_typer(server_app, name="server")
app.add_typer(volume_app, name="volume")
app.add_typer(power_app, name="power")
app.add_typer(prometheus_app, name="prometheus")
app.add_typer(user_app, name="user")
app.command("up")(up)
app.command("controller")(controller)
app.command("agent")(agent)
app.add_typer(dev_app, name="dev")


def main() -> None:
    app()
