"""``wattvisor flavor ...`` and ``wattvisor image list|show|create|delete`` over HTTP."""

from __future__ import annotations

from pathlib import Path

from cli.served_api import Served, free_port


def test_flavor_created_with_an_extra_spec_is_listed_with_it(served: Served) -> None:
    created = served.json("flavor", "create", "metered", "--vcpus", "2", "--ram-mb", "512",
                          "--disk-gb", "3", "--swap-mb", "128", "--extra-spec",
                          "hw:power_metrics=true", "--json")  # fmt: skip
    listed = {f["name"]: f for f in served.json("flavor", "list", "--json")}
    assert listed["metered"]["extra_specs"] == {"hw:power_metrics": "true"}
    metered = listed["metered"]
    assert (metered["vcpus"], metered["ram_mb"], metered["disk_gb"], metered["swap_mb"]) == (
        2,
        512,
        3,
        128,
    )
    assert "hw:power_metrics=true" in served.run("flavor", "list").stdout
    assert served.json("flavor", "show", "metered", "--json")["id"] == created["id"]
    assert served.run("flavor", "delete", "metered").exit_code == 0
    assert "metered" not in {f["name"] for f in served.json("flavor", "list", "--json")}


def test_a_malformed_extra_spec_is_refused_before_any_request(served: Served) -> None:
    before = served.json("flavor", "list", "--json")
    result = served.run("flavor", "create", "bad", "--vcpus", "1", "--ram-mb", "64",
                        "--extra-spec", "novalue")  # fmt: skip
    assert result.exit_code != 0
    assert "--extra-spec 'novalue' is not KEY=VALUE" in result.output
    assert "hw:power_metrics=true" in result.output
    assert served.json("flavor", "list", "--json") == before
    # Refused before connecting: an unreachable API is never asked.
    nowhere = f"http://127.0.0.1:{free_port()}"
    offline = served.run("flavor", "create", "bad", "--vcpus", "1", "--ram-mb", "64",
                         "--extra-spec", "=true", "--url", nowhere)  # fmt: skip
    assert offline.exit_code != 0 and "'=true' is not KEY=VALUE" in offline.output
    assert "cannot reach" not in offline.output


def test_a_repeated_extra_spec_key_is_refused(served: Served) -> None:
    result = served.run("flavor", "create", "twice", "--vcpus", "1", "--ram-mb", "64",
                        "--extra-spec", "hw:power_metrics=true",
                        "--extra-spec", "hw:power_metrics=false")  # fmt: skip
    assert result.exit_code != 0 and "'hw:power_metrics' is given twice" in result.output
    assert "twice" not in {f["name"] for f in served.json("flavor", "list", "--json")}


def test_flavor_extra_specs_are_checked_by_the_api(served: Served) -> None:
    result = served.run("flavor", "create", "odd", "--vcpus", "1", "--ram-mb", "64",
                        "--extra-spec", "hw:power_metrics=maybe")  # fmt: skip
    assert result.exit_code == 1 and "maybe" in result.output and "HTTP 4" in result.output
    assert "odd" not in {f["name"] for f in served.json("flavor", "list", "--json")}


def test_a_member_cannot_create_flavors(served: Served) -> None:
    token = served.member_token()
    result = served.run("flavor", "create", "mine", "--vcpus", "1", "--ram-mb", "64",
                        WATTVISOR_TOKEN=token)  # fmt: skip
    assert result.exit_code == 1
    assert "this needs role 'admin' (admin_required, HTTP 403)" in result.output
    assert served.run("flavor", "list", WATTVISOR_TOKEN=token).exit_code == 0


def test_image_create_with_kernel_and_properties_list_show_delete(
    served: Served, tmp_path: Path
) -> None:
    kernel, initrd = tmp_path / "bzImage", tmp_path / "initrd.img"
    kernel.write_bytes(b"kernel")
    initrd.write_bytes(b"initrd")
    created = served.json("image", "create", "busy", "--kernel", str(kernel), "--initrd",
                          str(initrd), "--cmdline", "console=ttyS0", "--property",
                          "hw_vif_model=e1000", "--json")  # fmt: skip
    assert (created["boot"], created["cmdline"]) == ("kernel", "console=ttyS0")
    assert created["initrd_path"] == str(initrd)
    listed = {i["name"]: i for i in served.json("image", "list", "--json")}
    assert listed["busy"]["properties"] == {"hw_vif_model": "e1000"}
    assert "hw_vif_model=e1000" in served.run("image", "list").stdout
    assert served.json("image", "show", created["id"], "--json")["name"] == "busy"
    # Host paths are for admins: a member sees the image without them.
    member_view = served.json("image", "show", "busy", "--json",
                              WATTVISOR_TOKEN=served.member_token())  # fmt: skip
    assert "kernel_path" not in member_view
    assert served.run("image", "delete", "busy").exit_code == 0
    assert "busy" not in {i["name"] for i in served.json("image", "list", "--json")}


def test_image_create_shows_the_api_refusal(served: Served) -> None:
    result = served.run("image", "create", "ghost", "--kernel", "/nonexistent/vmlinuz")
    assert result.exit_code == 1
    assert "'/nonexistent/vmlinuz' is not an existing file" in result.output
    bad = served.run("image", "create", "ghost", "--disk", "/x", "--property", "novalue")
    assert bad.exit_code != 0 and "--property 'novalue' is not KEY=VALUE" in bad.output
    assert "ghost" not in {i["name"] for i in served.json("image", "list", "--json")}
