"""``wattvisor flavor ...`` and ``wattvisor image list|show|create|delete`` over ``/v1``.

Register with ``app.add_typer(flavor_app, name="flavor")`` and
``add_image_commands(image_app)`` (the ``image`` group also holds the local
``image build``). Flavors and images are found by id or name by the API itself;
extra specs and properties are checked by the API, only their ``KEY=VALUE``
spelling is checked here, before anything is sent.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from wattvisor.cli.api_client import UrlOption, connect, segment
from wattvisor.cli.context import fail, say
from wattvisor.cli.output import Column, ColumnOption, FormatOption, JsonOption, Output

flavor_app = typer.Typer(
    help="Flavors: the sizes and extra specs servers are made with.", no_args_is_help=True
)


def parse_pairs(values: list[str], option: str, example: str) -> dict[str, str]:
    """``KEY=VALUE`` option values as a mapping; a malformed or repeated key exits 2."""
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key.strip():
            raise fail(f"{option} {value!r} is not KEY=VALUE; expected e.g. {option} {example}", 2)
        key = key.strip()
        if key in pairs:
            raise fail(f"{option} {key!r} is given twice ({key}={pairs[key]} and {value}); "
                       "give each key once", 2)  # fmt: skip
        pairs[key] = item
    return pairs


FLAVOR_COLUMNS = (
    Column("ID", "id", ident=True),
    Column("Name", "name"),
    Column("vCPUs", "vcpus", right=True),
    Column("RAM MiB", "ram_mb", right=True),
    Column("Disk GiB", "disk_gb", right=True),
    Column("Extra specs", "extra_specs"),
    Column("Swap MiB", "swap_mb", right=True, default=False),
    Column("Ephemeral GiB", "ephemeral_gb", right=True, default=False),
)
IMAGE_COLUMNS = (
    Column("ID", "id", ident=True),
    Column("Name", "name"),
    Column("Boot", "boot"),
    Column("Format", "disk_format"),
    Column("Properties", "properties"),
    Column("Cmdline", "cmdline", default=False),
)


# -- flavors ----------------------------------------------------------------------------


@flavor_app.command("list")
def list_flavors(
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Every flavor, with its extra specs."""
    output = Output.of(fmt, columns, as_json)
    output.pick(FLAVOR_COLUMNS)
    with connect(url) as client:
        flavors: list[dict[str, Any]] = client.call("GET", "/v1/flavors")
    output.rows(flavors, FLAVOR_COLUMNS)


@flavor_app.command("show")
def show_flavor(
    flavor: Annotated[str, typer.Argument(help="Flavor id or name.")],
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """One flavor."""
    output = Output.of(fmt, columns, as_json)
    with connect(url) as client:
        found = client.call("GET", f"/v1/flavors/{segment(flavor)}")
    output.record(found)


@flavor_app.command("create")
def create_flavor(
    name: Annotated[str, typer.Argument(help="Flavor name.")],
    vcpus: Annotated[int, typer.Option("--vcpus", help="Virtual CPUs.")],
    ram_mb: Annotated[int, typer.Option("--ram-mb", help="Memory in MiB.")],
    disk_gb: Annotated[int, typer.Option("--disk-gb", help="Root disk in GiB.")] = 0,
    swap_mb: Annotated[int, typer.Option("--swap-mb", help="Swap disk in MiB.")] = 0,
    ephemeral_gb: Annotated[int, typer.Option("--ephemeral-gb", help="Ephemeral disk in GiB.")] = 0,
    extra_spec: Annotated[
        list[str] | None,
        typer.Option("--extra-spec", help="KEY=VALUE, repeatable, e.g. hw:power_metrics=true."),
    ] = None,
    flavor_id: Annotated[
        str | None, typer.Option("--id", help="Flavor id (default: one the API makes).")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Create a flavor (admin); the API checks the extra specs."""
    specs = parse_pairs(extra_spec or [], "--extra-spec", "hw:power_metrics=true")
    body: dict[str, Any] = {"name": name, "vcpus": vcpus, "ram_mb": ram_mb, "disk_gb": disk_gb,
                            "swap_mb": swap_mb, "ephemeral_gb": ephemeral_gb,
                            "extra_specs": specs}  # fmt: skip
    if flavor_id is not None:
        body["id"] = flavor_id
    with connect(url) as client:
        created = client.call("POST", "/v1/flavors", body)
    Output.of(None, None, as_json).record(created)


@flavor_app.command("delete")
def delete_flavor(
    flavor: Annotated[str, typer.Argument(help="Flavor id or name.")],
    url: UrlOption = None,
) -> None:
    """Delete a flavor (admin)."""
    with connect(url) as client:
        client.call("DELETE", f"/v1/flavors/{segment(flavor)}")
    say(f"flavor {flavor} deleted")


# -- images -----------------------------------------------------------------------------


def list_images(
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Every image in the catalog."""
    output = Output.of(fmt, columns, as_json)
    output.pick(IMAGE_COLUMNS)
    with connect(url) as client:
        images: list[dict[str, Any]] = client.call("GET", "/v1/images")
    output.rows(images, IMAGE_COLUMNS)


def show_image(
    image: Annotated[str, typer.Argument(help="Image id or name.")],
    fmt: FormatOption = None,
    columns: ColumnOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """One image (host paths are shown to admins only)."""
    output = Output.of(fmt, columns, as_json)
    with connect(url) as client:
        found = client.call("GET", f"/v1/images/{segment(image)}")
    output.record(found)


def create_image(
    name: Annotated[str, typer.Argument(help="Image name.")],
    kernel: Annotated[
        str | None, typer.Option("--kernel", help="Kernel path on the host (direct boot).")
    ] = None,
    initrd: Annotated[str | None, typer.Option("--initrd", help="Initrd path on the host.")] = None,
    cmdline: Annotated[str | None, typer.Option("--cmdline", help="Kernel command line.")] = None,
    disk: Annotated[
        str | None, typer.Option("--disk", help="Disk image path on the host (disk boot).")
    ] = None,
    disk_format: Annotated[str | None, typer.Option("--disk-format", help="raw or qcow2.")] = None,
    prop: Annotated[
        list[str] | None,
        typer.Option("--property", help="KEY=VALUE, repeatable, e.g. hw_vif_model=virtio."),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Register an image (admin): a kernel (+ initrd, cmdline) or a disk; paths are host paths."""
    properties = parse_pairs(prop or [], "--property", "hw_vif_model=virtio")
    fields = {"kernel_path": kernel, "initrd_path": initrd, "cmdline": cmdline,
              "disk_path": disk, "disk_format": disk_format}  # fmt: skip
    body: dict[str, Any] = {"name": name, "properties": properties}
    body.update({k: v for k, v in fields.items() if v is not None})
    with connect(url) as client:
        created = client.call("POST", "/v1/images", body)
    Output.of(None, None, as_json).record(created)


def delete_image(
    image: Annotated[str, typer.Argument(help="Image id or name.")],
    url: UrlOption = None,
) -> None:
    """Delete an image from the catalog (admin)."""
    with connect(url) as client:
        client.call("DELETE", f"/v1/images/{segment(image)}")
    say(f"image {image} deleted")


def add_image_commands(app: typer.Typer) -> None:
    """Add ``list``, ``show``, ``create`` and ``delete`` to the ``image`` group ``app``."""
    app.command("list")(list_images)
    app.command("show")(show_image)
    app.command("create")(create_image)
    app.command("delete")(delete_image)
