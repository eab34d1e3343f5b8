"""VM exporters as Prometheus targets, read from the store: which servers, at which
address, with which labels, and the file_sd copy (libvirt's test driver, both stores)."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from compute.principals import ADMIN, ALICE, BOB
from wattvisor.compute import Compute, ImageRecord
from wattvisor.compute.errors import InvalidRequest
from wattvisor.compute.prometheus_targets import (
    FILE_SD_DUTY,
    FileSdWriter,
    service_servers,
    vm_targets,
    write_file_sd_once,
)
from wattvisor.config import Settings, load_settings
from wattvisor.store import read_transaction
from wattvisor.store.compute_tables import FlavorRow, ImageRow, ServerRow
from wattvisor.store.duties import single_duty
from wattvisor.telemetry.service_metrics import make_service_registry

SUBNET = "10.251.9.0/28"
SUBNET6 = "fd57:7476:6973:9::/64"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        host={
            "libvirt_uri": "test:///default", "virt_type": "qemu",
            "instance_name_template": f"wvp-{secrets.token_hex(4)}-%04x",
            "network": {
                "mode": "isolated", "name": f"wvtest-net-{secrets.token_hex(4)}",
                "ipv4_subnet": SUBNET, "ipv6_subnet": SUBNET6,
            },
        },
        energy={"source": "model"},
        compute={"workers": 2},
    )  # fmt: skip


def _exported_flavor(compute: Compute, port: str = "9100", **more: str) -> str:
    compute.catalog.create_flavor(
        "exported", 1, 64, extra_specs={"prometheus_exporter_port": port, **more}
    )
    return "exported"


def _boot(
    compute: Compute,
    image: ImageRecord,
    name: str,
    settle: Callable[[str], None],
    flavor: str = "tiny",
    principal: Any = ALICE,
    metadata: dict[str, str] | None = None,
) -> str:
    server = compute.servers.create(principal, name, flavor, image.id, metadata=metadata)
    settle(server.uuid)
    assert compute.servers.get(principal, server.uuid).status == "ACTIVE"
    return server.uuid


def _by_instance(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {g["labels"]["instance"]: g for g in groups}


def test_an_active_server_with_an_exporter_port_is_a_target_labelled_with_its_names(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    flavor = _exported_flavor(compute)
    web = _boot(compute, kernel_image, "web", settle, flavor)
    _boot(compute, kernel_image, "plain", settle)  # no port anywhere: no target
    engine = compute.servers.engine
    admin = vm_targets(engine, admin=True)
    assert admin == [{
        "targets": ["10.251.9.2:9100"],
        "labels": {"instance": web, "name": "web", "project": "proj-a", "flavor": "exported",
                   "host": "local-host"},
    }]  # fmt: skip
    member = vm_targets(engine, project="proj-a")
    assert member[0]["labels"] == {
        "instance": web,
        "name": "web",
        "project": "proj-a",
        "flavor": "exported",
    }
    assert vm_targets(engine, project="proj-b") == []


def test_ipv6_targets_are_in_brackets(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    _boot(compute, kernel_image, "web", settle, _exported_flavor(compute, "9464"))
    (group,) = vm_targets(compute.servers.engine, family="ipv6")
    assert group["targets"] == ["[fd57:7476:6973:9::2]:9464"]


def test_server_metadata_wins_over_the_flavor_and_the_flavor_over_the_image(
    compute: Compute, tmp_path: Path, settle: Callable[[str], None]
) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    image = compute.catalog.create_image(
        "exporting", kernel_path=str(kernel), properties={"prometheus_exporter_port": "8000"}
    )
    flavor = _exported_flavor(compute, "9100")
    from_image = _boot(compute, image, "image", settle)
    from_flavor = _boot(compute, image, "flavor", settle, flavor)
    from_server = _boot(
        compute, image, "server", settle, flavor, metadata={"prometheus_exporter_port": "7000"}
    )
    ports = {
        uuid: group["targets"][0].rsplit(":", 1)[1]
        for uuid, group in _by_instance(vm_targets(compute.servers.engine)).items()
    }
    assert ports == {from_image: "8000", from_flavor: "9100", from_server: "7000"}


def test_a_stopped_server_is_no_target_until_it_runs_again_and_a_deleted_one_never(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    engine = compute.servers.engine
    web = _boot(compute, kernel_image, "web", settle, _exported_flavor(compute))
    building = compute.servers.create(ALICE, "late", "exported", kernel_image.id)
    assert building.status == "BUILD"
    assert building.uuid not in _by_instance(vm_targets(engine))  # not ACTIVE yet
    settle(building.uuid)
    assert set(_by_instance(vm_targets(engine))) == {web, building.uuid}

    compute.servers.stop(ALICE, web)
    settle(web)
    assert compute.servers.get(ALICE, web).status == "SHUTOFF"
    assert set(_by_instance(vm_targets(engine))) == {building.uuid}
    compute.servers.start(ALICE, web)
    settle(web)
    assert set(_by_instance(vm_targets(engine))) == {web, building.uuid}

    compute.servers.delete(ALICE, web)
    settle(web)
    assert set(_by_instance(vm_targets(engine))) == {building.uuid}


def test_every_server_is_one_target_and_two_servers_never_share_one(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    flavor = _exported_flavor(compute)
    booted = [_boot(compute, kernel_image, f"s{i}", settle, flavor) for i in range(3)]
    groups = vm_targets(compute.servers.engine, admin=True)
    assert sorted(g["labels"]["instance"] for g in groups) == sorted(booted)
    targets = [t for g in groups for t in g["targets"]]
    assert len(targets) == len(set(targets)) == 3


def test_the_list_is_the_same_for_a_controller_started_afresh_on_the_store(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None], store_url: str
) -> None:
    from wattvisor.store import make_engine

    _boot(compute, kernel_image, "web", settle, _exported_flavor(compute))
    before = vm_targets(compute.servers.engine, admin=True)
    compute.close()
    fresh = make_engine(store_url)
    try:
        assert vm_targets(fresh, admin=True) == before != []
    finally:
        fresh.dispose()


def _counts(compute: Compute) -> tuple[int, int, int]:
    with read_transaction(compute.servers.engine) as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (ServerRow.__table__, FlavorRow.__table__, ImageRow.__table__)
        )


@pytest.mark.parametrize("port", ["99999", "0", "http", "9100.5", "-1"])
def test_a_bad_port_is_refused_where_it_is_saved_naming_the_value_and_nothing_is_saved(
    compute: Compute, kernel_image: ImageRecord, tmp_path: Path, port: str
) -> None:
    before = _counts(compute)
    with pytest.raises(InvalidRequest) as flavor:
        compute.catalog.create_flavor("bad", 1, 64, extra_specs={"prometheus_exporter_port": port})
    with pytest.raises(InvalidRequest) as image:
        compute.catalog.create_image(
            "bad", kernel_path=str(kernel_image.kernel_path),
            properties={"prometheus_exporter_port": port},
        )  # fmt: skip
    with pytest.raises(InvalidRequest) as server:
        compute.servers.create(
            ALICE, "bad", "tiny", kernel_image.id, metadata={"prometheus_exporter_port": port}
        )
    for refused in (flavor, image, server):
        assert f"prometheus_exporter_port='{port}'" in str(refused.value)
        assert "an integer from 1 to 65535" in str(refused.value)
    assert _counts(compute) == before


def test_a_bad_service_template_is_refused_naming_the_value(
    compute: Compute, kernel_image: ImageRecord
) -> None:
    with pytest.raises(InvalidRequest, match="service_template='web-3' is not accepted"):
        compute.servers.create(
            ALICE, "bad", "tiny", kernel_image.id, metadata={"service_template": "web-3"}
        )
    with pytest.raises(InvalidRequest, match="service_template='-2'"):
        compute.catalog.create_flavor("bad", 1, 64, extra_specs={"service_template": "-2"})


def test_the_file_is_written_by_the_duty_holder_only_and_only_when_it_changed(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None], tmp_path: Path
) -> None:
    engine = compute.servers.engine
    path = tmp_path / "sd" / "vms.json"
    assert write_file_sd_once(engine, None, path) is True
    assert json.loads(path.read_text()) == []
    assert write_file_sd_once(engine, None, path) is False
    web = _boot(compute, kernel_image, "web", settle, _exported_flavor(compute))
    assert write_file_sd_once(engine, None, path) is True
    assert [g["labels"]["instance"] for g in json.loads(path.read_text())] == [web]
    assert [p.name for p in path.parent.iterdir()] == ["vms.json"]  # no temporary left

    compute.servers.stop(ALICE, web)
    settle(web)
    with single_duty(engine, FILE_SD_DUTY) as held:  # another controller's turn
        assert held
        assert write_file_sd_once(engine, None, path) is None
    assert json.loads(path.read_text())[0]["labels"]["instance"] == web
    assert write_file_sd_once(engine, None, path) is True
    assert json.loads(path.read_text()) == []


def test_the_writer_thread_follows_the_store(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None], tmp_path: Path
) -> None:
    path = tmp_path / "vms.json"
    rounds = threading.Semaphore(0)
    writer = FileSdWriter(
        compute.servers.engine, None, path, 0.05, on_round=lambda _changed: rounds.release()
    )
    writer.start()
    try:
        assert rounds.acquire(timeout=30)
        assert json.loads(path.read_text()) == []
        web = _boot(compute, kernel_image, "web", settle, _exported_flavor(compute))
        while rounds.acquire(blocking=False):  # rounds done during the boot
            pass
        for _ in range(2):  # a round that began before the boot may have missed it
            assert rounds.acquire(timeout=30)
        assert [g["labels"]["instance"] for g in json.loads(path.read_text())] == [web]
    finally:
        writer.stop()


def test_service_metrics_name_every_server_and_its_service_template(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    from prometheus_client import generate_latest

    flavor = _exported_flavor(compute, service_template="12")
    templated = _boot(compute, kernel_image, "svc", settle, flavor)
    own = _boot(
        compute, kernel_image, "own", settle, flavor, principal=BOB,
        metadata={"service_template": "40"},
    )  # fmt: skip
    plain = _boot(compute, kernel_image, "plain", settle)
    stopped = _boot(compute, kernel_image, "stopped", settle)
    compute.servers.stop(ALICE, stopped)
    settle(stopped)
    engine = compute.servers.engine
    facts = {s.uuid: s for s in service_servers(engine)}
    assert set(facts) == {templated, own, plain, stopped}
    assert {u: s.service_template for u, s in facts.items()} == {
        templated: 12, own: 40, plain: None, stopped: None,
    }  # fmt: skip

    text = generate_latest(make_service_registry(lambda: service_servers(engine))).decode()
    image = kernel_image.name
    assert (
        f'wattvisor_server_info{{flavor="exported",host="local-host",image="{image}",'
        f'instance="{templated}",name="svc",project="proj-a"}} 1.0' in text
    )
    assert f'wattvisor_server_service_template{{instance="{templated}"}} 12.0' in text
    assert f'wattvisor_server_service_template{{instance="{own}"}} 40.0' in text
    assert f'wattvisor_server_service_template{{instance="{plain}"}} -1.0' in text
    assert "opennebula_vm_ut_flavours" not in text
    compat = make_service_registry(lambda: service_servers(engine), compat_series=True)
    assert (
        f'opennebula_vm_ut_flavours{{one_vm_id="{plain}"}} -1.0' in generate_latest(compat).decode()
    )

    compute.servers.delete(ADMIN, plain)
    settle(plain)
    assert plain not in {s.uuid for s in service_servers(engine)}
