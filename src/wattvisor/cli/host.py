"""``wattvisor host ...``: what a host is and can do, and the registered hosts (admin).

``list``, ``show``, ``enable``, ``disable``, ``join-token`` and ``traits`` are thin
clients of the admin ``/v1/hosts`` routes, so the API decides and its error
messages are shown as they are. ``traits`` shows what the running service
registered with placement; ``traits --local`` looks at this machine directly,
with this shell's settings.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from wattvisor.cli.api_client import (
    UrlOption,
    connect,
    resolve_host,
)
from wattvisor.cli.context import fail, say, state
from wattvisor.cli.output import (
    Column,
    ColumnOption,
    FormatOption,
    JsonOption,
    Output,
    OutputFormat,
    console,
    print_line,
    table,
)
from wattvisor.cli.safe_text import safe
from wattvisor.cli.up import DEFAULT_POWER_TAG
from wattvisor.host.connection import HostConnectionError

host_app = typer.Typer(
    help="Registered hosts (admin) and their traits.",
    no_args_is_help=True,
)
HOST_COLUMNS = (
    Column("ID", "id", ident=True),
    Column("Name", "name"),
    Column("URI", "libvirt_uri", ident=True),
    Column("State", "state"),
    Column("Enabled", "enabled", get=lambda h: _enabled(h, "yes", "no")),
    Column("Servers", "servers", right=True),
    Column("Energy", "energy_source"),
    Column("Local", "local", default=False),
)
TRAIT_COLUMNS = (Column("Trait", "trait", ident=True),)
out = Console()


@host_app.command("traits")
def traits(
    host: Annotated[
        str | None,
        typer.Argument(help="Host id or unique name (default: the controller's own host)."),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Discover this machine's traits with this shell's settings instead of "
            "asking the running service (they can differ: virt_type, share_local_fs).",
        ),
    ] = False,
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """The capability traits and inventory a host registered with placement (admin).

    This is what the scheduler matches servers against. --local instead works them
    out here, from this shell's settings, and says so."""
    output = Output.of(fmt, columns, as_json)
    if local:
        if host is not None:
            raise fail(f"--local describes this machine; drop the host {host!r} or --local", 2)
        document = _discovered_here()
    else:
        try:
            document = _registered(host, url)
        except typer.Exit:
            say("(without a running service, `wattvisor host traits --local` works the traits "
                "out here from this shell's settings)")  # fmt: skip
            raise
    if output.fmt is not OutputFormat.table or output.columns:
        output.record(document)
        return
    rows = [{"trait": name} for name in document["traits"]]
    console().print(table(rows, TRAIT_COLUMNS, _traits_title(document)))
    inventory = " ".join(f"{k}={v}" for k, v in document["inventory"].items())
    print_line(f"inventory: {inventory}")
    for note in document["notes"]:
        console().print(Text.assemble(("note:", "yellow"), " ", safe(note)), soft_wrap=True)


def _traits_title(document: dict[str, Any]) -> str:
    if document["source"] == "registered":
        return (f"traits host {document['name']} ({document['id']}) registered with the running "
                "service's placement")  # fmt: skip
    return (f"traits discovered here from this shell's settings ({document['uri']}, "
            f"virt_type={document['virt_type']}), not asked of the running service")  # fmt: skip


def _registered(host: str | None, url: str | None) -> dict[str, Any]:
    """What the running service registered for ``host`` (default: its local host)."""
    with connect(url) as client:
        if host is None:
            hosts: list[dict[str, Any]] = client.call("GET", "/v1/hosts")
            local_hosts = [h for h in hosts if h.get("local")]
            if not local_hosts:
                raise fail(
                    "the service has no local host registered; name one of its hosts "
                    f"({', '.join(h['name'] for h in hosts) or 'none'}) or use --local"
                )
            host_id = local_hosts[0]["id"]
        else:
            host_id = resolve_host(client, host)
        found: dict[str, Any] = client.call("GET", f"/v1/hosts/{host_id}")
        base = str(client.http.base_url)
    return {
        "source": "registered",
        "id": found["id"],
        "name": found["name"],
        "uri": found["libvirt_uri"],
        "virt_type": None,
        "traits": sorted(found["traits"]),
        "inventory": found["inventory"],
        "notes": [f"as registered with placement by the service at {base}"],
    }


def _discovered_here() -> dict[str, Any]:
    """This machine's traits worked out now, with this shell's settings."""
    from wattvisor.host.driver import HostDriver

    settings = state.settings()
    driver = HostDriver.from_settings(settings)
    try:
        caps = driver.capabilities()
        names = sorted(driver.traits())
        inventory = driver.inventory()
    except HostConnectionError as exc:
        raise fail(str(exc)) from exc
    finally:
        driver.close()
    notes = [
        "discovered from this shell's settings, not asked of the running service; "
        "`wattvisor host traits` without --local shows what the service registered",
        *caps.notes,
    ]
    if not settings.host.share_local_fs:
        notes.append(
            "host.share_local_fs is not set in these settings, so COMPUTE_SHARE_LOCAL_FS is "
            f"not listed; `wattvisor up` shares {settings.data_dir / 'power-metrics'} as "
            f"'{DEFAULT_POWER_TAG}' by default"
        )
    return {
        "source": "local",
        "id": None,
        "name": None,
        "uri": driver.uri,
        "virt_type": settings.host.virt_type,
        "traits": names,
        "inventory": {
            "VCPU": inventory.vcpu,
            "MEMORY_MB": inventory.memory_mb,
            "DISK_GB": inventory.disk_gb,
        },
        "notes": notes,
    }


# -- registered hosts, over the API (admin) ----------------------------------------------


@host_app.command("list")
def list_hosts(
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Every registered host with its state, servers and energy source (admin)."""
    output = Output.of(fmt, columns, as_json)
    output.pick(HOST_COLUMNS)
    with connect(url) as client:
        hosts: list[dict[str, Any]] = client.call("GET", "/v1/hosts")
    output.rows(hosts, HOST_COLUMNS)


@host_app.command("show")
def show_host(
    host_id: Annotated[str, typer.Argument(help="Host id or unique name.")],
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """One host: traits, inventory, usage (admin)."""
    output = Output.of(fmt, columns, as_json)
    with connect(url) as client:
        host = client.call("GET", f"/v1/hosts/{resolve_host(client, host_id)}")
    output.record(host)


@host_app.command("set-geolocation")
def set_geolocation(
    host_id: Annotated[str, typer.Argument(help="Host id or unique name.")],
    pairs: Annotated[
        list[str] | None,
        typer.Argument(
            help="'latitude,longitude' pairs in decimal degrees, e.g. 48.8566,2.3522 (a "
            "negative one after --: -- -33.87,151.21)."
        ),
    ] = None,
    clear: Annotated[
        bool,
        typer.Option(
            "--clear",
            help="Drop the pairs set by an admin: the host returns to the geolocation "
            "looked up from its public addresses.",
        ),
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Pin a host's geolocation (admin); kept until --clear, never replaced by a lookup."""
    if clear == bool(pairs):
        raise fail("give the pairs to set, or --clear (not both)", 2)
    body = {"geolocation": None if clear else list(pairs or [])}
    with connect(url) as client:
        host = client.call("PATCH", f"/v1/hosts/{resolve_host(client, host_id)}", body)
    if as_json:
        Output.of(None, None, True).record(host)
        return
    say(f"host {host['name']} ({host['id']}): {_geolocation_text(host)}")


def _geolocation_text(host: Mapping[str, Any]) -> str:
    """The pairs and where they came from, or why there are none."""
    pairs = " ".join(host.get("geolocation") or [])
    source = host.get("geolocation_source") or "none"
    if pairs:
        return f"geolocation {pairs} ({'set by an admin' if source == 'admin' else 'looked up'})"
    why = host.get("geolocation_reason") or ("set empty by an admin" if source == "admin" else "")
    return f"no geolocation ({why})" if why else "no geolocation"


@host_app.command("enable")
def enable_host(
    host_id: Annotated[str, typer.Argument(help="Host id or unique name.")],
    as_json: JsonOption = False,
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
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Send no new servers to the host; running ones stay (admin)."""
    body = {"reason": reason} if reason is not None else None
    with connect(url) as client:
        host = client.call("POST", f"/v1/hosts/{resolve_host(client, host_id)}/disable", body)
    _print_toggled(host, as_json)


def _print_toggled(host: dict[str, Any], as_json: bool) -> None:
    if as_json:
        Output.of(None, None, True).record(host)
        return
    say(f"host {host['name']} ({host['id']}): {_enabled(host, 'enabled', 'disabled')}")


def _enabled(host: Mapping[str, Any], yes: str, no: str) -> str:
    """``yes``, or ``no`` with the operator's reason for disabling the host."""
    if host["enabled"]:
        return yes
    return no + (f" ({host['disabled_reason']})" if host.get("disabled_reason") else "")


# -- joining (admin) ------------------------------------------------------------------------


@host_app.command("join-token")
def join_token(
    ttl: Annotated[
        str,
        typer.Option("--ttl", help="Lifetime: 30m, 1h, 7d (at most auth.max_join_token_ttl_s)."),
    ] = "1h",
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Print a single-use join token for a new host (admin).

    The token alone goes to stdout (`T=$(wattvisor host join-token)`); hand it to the
    host's agent: `wattvisor agent --controller URL --join-token T`. It registers one
    host, once, before it expires."""
    with connect(url) as client:
        issued: dict[str, Any] = client.call("POST", "/v1/hosts/join-tokens", {"ttl": ttl})
    if as_json:
        Output.of(None, None, True).record(issued)
        return
    say(
        f"join token {issued['id']} of cluster {issued['cluster_id']}, valid {issued['ttl']} "
        f"(until {issued['expires_at']}), registers one host"
    )
    sys.stdout.write(str(issued["token"]) + "\n")
