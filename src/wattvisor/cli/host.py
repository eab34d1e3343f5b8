"""``wattvisor host ...``: what this host is and can do, and the registered hosts (admin).

``traits`` and ``libvirtd-up`` look at this machine directly; ``list``, ``show``,
``register``, ``enable`` and ``disable`` are thin clients of the admin ``/v1/hosts``
routes, so the API decides and its error messages are shown as they are.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wattvisor.cli.api_client import (
    JsonOption,
    UrlOption,
    connect,
    print_json,
    print_record,
    resolve_host,
)
from wattvisor.cli.context import err, state
from wattvisor.host.connection import HostConnectionError

host_app = typer.Typer(
    help="This libvirt host (traits, libvirtd) and the registered hosts (admin).",
    no_args_is_help=True,
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


# -- registered hosts, over the API (admin) ----------------------------------------------


@host_app.command("list")
def list_hosts(as_json: JsonOption = False, url: UrlOption = None) -> None:
    """Every registered host with its state, servers and energy source (admin)."""
    with connect(url) as client:
        hosts: list[dict[str, Any]] = client.call("GET", "/v1/hosts")
    if as_json:
        print_json(hosts)
        return
    table = Table("ID", "Name", "URI", "State", "Enabled", "Servers", "Energy", box=None)
    for h in hosts:
        table.add_row(h["id"], escape(h["name"]), escape(h["libvirt_uri"]), h["state"],
                      escape(_enabled(h, "yes", "no")), str(h["servers"]),
                      h["energy_source"])  # fmt: skip
    out.print(table)


@host_app.command("show")
def show_host(
    host_id: Annotated[str, typer.Argument(help="Host id or unique name.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """One host: traits, inventory, usage (admin)."""
    with connect(url) as client:
        host = client.call("GET", f"/v1/hosts/{resolve_host(client, host_id)}")
    print_record(host, as_json)


@host_app.command("register")
def register_host(
    uri: Annotated[str, typer.Argument(help="libvirt URI, e.g. qemu+ssh://host2/system.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Host name (default: the API's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the host as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Connect the API to another libvirt host and register it with placement (admin)."""
    body: dict[str, Any] = {"uri": uri}
    if name is not None:
        body["name"] = name
    with connect(url) as client:
        host = client.call("POST", "/v1/hosts", body)
    print_record(host, as_json)


@host_app.command("enable")
def enable_host(
    host_id: Annotated[str, typer.Argument(help="Host id or unique name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the host as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Let new servers go to the host again (admin)."""
    with connect(url) as client:
        host = client.call("POST", f"/v1/hosts/{resolve_host(client, host_id)}/enable")
    _print_toggled(host, as_json)


@host_app.command("disable")
def disable_host(
    host_id: Annotated[str, typer.Argument(help="Host id or unique name.")],
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why, shown in `host list`.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the host as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Send no new servers to the host; running ones stay (admin)."""
    body = {"reason": reason} if reason is not None else None
    with connect(url) as client:
        host = client.call("POST", f"/v1/hosts/{resolve_host(client, host_id)}/disable", body)
    _print_toggled(host, as_json)


def _print_toggled(host: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(host)
        return
    state_text = _enabled(host, "enabled", "disabled")
    err.print(f"host {host['name']} ({host['id']}): {escape(state_text)}")


def _enabled(host: dict[str, Any], yes: str, no: str) -> str:
    """``yes``, or ``no`` with the operator's reason for disabling the host."""
    if host["enabled"]:
        return yes
    return no + (f" ({host['disabled_reason']})" if host.get("disabled_reason") else "")
