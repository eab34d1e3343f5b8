"""``wattvisor dev ...``: development helpers for one machine, not needed to run the service."""

from __future__ import annotations

from typing import Annotated

import typer

from wattvisor.cli.context import fail

dev_app = typer.Typer(
    help="Development helpers for this machine (a libvirtd without systemd).",
    no_args_is_help=True,
)


@dev_app.command("libvirtd-up")
def libvirtd_up(
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the daemon to answer.")
    ] = 60.0,
) -> None:
    """Start libvirtd and virtlogd for qemu:///system unless one already answers.

    For development and test machines without a service manager; the daemons keep
    running after the command ends. Hosts installed from packages use their own service.
    """
    from wattvisor.devtools.libvirtd import LocalVirtError, libvirtd_up_summary

    try:
        summary = libvirtd_up_summary(timeout_s=timeout)
    except LocalVirtError as exc:
        raise fail(str(exc)) from exc
    print(summary)
