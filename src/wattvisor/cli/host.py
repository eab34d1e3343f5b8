"""``wattvisor host ...``: what this host is and can do."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from wattvisor.cli.context import err, state
from wattvisor.host.connection import HostConnectionError

host_app = typer.Typer(
    help="The local libvirt host: traits, inventory, libvirtd.", no_args_is_help=True
)
out = Console()


@host_app.command("traits")
def traits(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """Print the capability traits this host reports to placement."""
    from wattvisor.host.driver import HostDriver

    settings = state.settings()
    driver = HostDriver.from_settings(settings)
    try:
        caps = driver.capabilities()
        names = sorted(driver.traits())
        inventory = driver.inventory()
    except HostConnectionError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        driver.close()
    if as_json:
        print(
            json.dumps(
                {
                    "uri": driver.uri,
                    "virt_type": settings.host.virt_type,
                    "traits": names,
                    "inventory": {
                        "VCPU": inventory.vcpu,
                        "MEMORY_MB": inventory.memory_mb,
                        "DISK_GB": inventory.disk_gb,
                    },
                    "notes": list(caps.notes),
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"traits of {driver.uri} (virt_type={settings.host.virt_type})")
    table.add_column("trait")
    for name in names:
        table.add_row(name)
    out.print(table)
    out.print(
        f"inventory: VCPU={inventory.vcpu} MEMORY_MB={inventory.memory_mb} "
        f"DISK_GB={inventory.disk_gb}"
    )
    for note in caps.notes:
        out.print(f"[yellow]note:[/yellow] {note}")


@host_app.command("libvirtd-up")
def libvirtd_up() -> None:
    """Start libvirtd and virtlogd for qemu:///system unless one already answers."""
    from wattvisor.host.localvirt import LocalVirtError, ensure_libvirtd

    try:
        started = ensure_libvirtd()
    except LocalVirtError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    out.print(started.summary())
