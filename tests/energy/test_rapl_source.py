"""RAPL powercap source on synthetic trees with the kernel's layout."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from support.synthetic_host import SyntheticPowercap
from wattvisor.energy.sources import (
    EnergyReadError,
    EnergySourceError,
    RaplSource,
    SampleWindow,
    counter_delta,
)

WINDOW = SampleWindow(interval_s=2.0, busy_fraction=0.5)


def _joules(source: RaplSource) -> float:
    return source.read(WINDOW).energy_joules


def test_first_reading_is_a_baseline(powercap: SyntheticPowercap) -> None:
    powercap.add_zone("intel-rapl:0", "package-0", energy_uj=5_000_000)
    reading = RaplSource(powercap.root).read(WINDOW)
    assert reading.is_baseline
    assert reading.energy_joules == 0.0


def test_single_socket_host_energy_is_the_package(powercap: SyntheticPowercap) -> None:
    powercap.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000)
    powercap.add_zone("intel-rapl:0:0", "core", energy_uj=500_000)
    powercap.add_zone("intel-rapl:0:1", "uncore")
    source = RaplSource(powercap.root)
    source.read(WINDOW)
    powercap.add_energy("intel-rapl:0", 30_000_000)
    powercap.add_energy("intel-rapl:0:0", 20_000_000)
    assert _joules(source) == pytest.approx(30.0)
    assert [z.name for z in source.zones] == ["package-0"]


def test_two_sockets_and_dram_are_summed_without_core(powercap: SyntheticPowercap) -> None:
    powercap.add_zone("intel-rapl:0", "package-0")
    powercap.add_zone("intel-rapl:0:0", "core")
    powercap.add_zone("intel-rapl:0:1", "dram")
    powercap.add_zone("intel-rapl:1", "package-1")
    powercap.add_zone("intel-rapl:1:0", "core")
    powercap.add_zone("intel-rapl:1:1", "dram")
    source = RaplSource(powercap.root)
    source.read(WINDOW)
    for key, uj in [
        ("intel-rapl:0", 40),
        ("intel-rapl:1", 50),
        ("intel-rapl:0:1", 4),
        ("intel-rapl:1:1", 6),
        ("intel-rapl:0:0", 30),
        ("intel-rapl:1:0", 35),
    ]:
        powercap.add_energy(key, uj * 1_000_000)
    reading = source.read(WINDOW)
    assert reading.energy_joules == pytest.approx(100.0)
    assert sorted(reading.zones) == [
        "intel-rapl:0",
        "intel-rapl:0:1",
        "intel-rapl:1",
        "intel-rapl:1:1",
    ]


def test_psys_alone_is_host_energy_when_present(powercap: SyntheticPowercap) -> None:
    powercap.add_zone("intel-rapl:0", "package-0")
    powercap.add_zone("intel-rapl:0:2", "dram")
    powercap.add_zone("intel-rapl:1", "psys")
    source = RaplSource(powercap.root)
    source.read(WINDOW)
    powercap.add_energy("intel-rapl:0", 20_000_000)
    powercap.add_energy("intel-rapl:0:2", 3_000_000)
    powercap.add_energy("intel-rapl:1", 45_000_000)
    assert _joules(source) == pytest.approx(45.0)
    assert "psys" in source.describe()


def test_mmio_duplicates_are_not_counted(powercap: SyntheticPowercap) -> None:
    powercap.add_zone("intel-rapl:0", "package-0")
    powercap.add_zone("intel-rapl-mmio:0", "package-0", control_type="intel-rapl-mmio")
    source = RaplSource(powercap.root)
    source.read(WINDOW)
    powercap.add_energy("intel-rapl:0", 10_000_000)
    powercap.add_energy("intel-rapl-mmio:0", 10_000_000)
    assert _joules(source) == pytest.approx(10.0)
    assert [z.path.name for z in source.zones] == ["intel-rapl:0"]


def test_nested_device_layout_is_read_like_the_class_layout(
    powercap: SyntheticPowercap,
) -> None:
    powercap.add_zone("intel-rapl:0", "package-0")
    powercap.add_zone("intel-rapl:0:0", "dram")
    nested = RaplSource(powercap.devices / "intel-rapl")
    assert sorted(z.name for z in nested.zones) == ["dram", "package-0"]


def test_wraparound_mid_sample_counts_only_the_energy_used(
    powercap: SyntheticPowercap,
) -> None:
    maximum = 262_143_328_850
    powercap.add_zone("intel-rapl:0", "package-0", energy_uj=maximum - 2_000_000)
    source = RaplSource(powercap.root)
    source.read(WINDOW)
    powercap.add_energy("intel-rapl:0", 5_000_000)
    assert powercap.read("intel-rapl:0") < 5_000_000
    assert _joules(source) == pytest.approx(5.0)


def test_drop_that_cannot_be_a_wrap_is_a_reset_not_a_huge_reading(
    powercap: SyntheticPowercap,
) -> None:
    powercap.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000_000)
    source = RaplSource(powercap.root)
    source.read(WINDOW)
    powercap.set_energy("intel-rapl:0", 10)
    assert _joules(source) == 0.0
    powercap.add_energy("intel-rapl:0", 7_000_000)
    assert _joules(source) == pytest.approx(7.0)


def test_counter_delta_without_known_range_is_zero_on_decrease() -> None:
    assert counter_delta(100, 50, 0) == 0
    assert counter_delta(90, 10, 100) == 20
    assert counter_delta(10, 30, 100) == 20


def test_missing_tree_says_which_module_to_load(tmp_path: Path) -> None:
    with pytest.raises(EnergySourceError, match="modprobe intel_rapl_msr") as info:
        RaplSource(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(info.value)


def test_tree_without_rapl_zones_says_what_was_found(tmp_path: Path) -> None:
    (tmp_path / "dtpm").mkdir()
    with pytest.raises(EnergySourceError, match=r"no RAPL zones .*dtpm.*model"):
        RaplSource(tmp_path)


def test_vanished_counter_fails_that_reading_only(powercap: SyntheticPowercap) -> None:
    powercap.add_zone("intel-rapl:0", "package-0")
    source = RaplSource(powercap.root)
    source.read(WINDOW)
    os.unlink(powercap.energy_file("intel-rapl:0"))
    with pytest.raises(EnergyReadError, match="energy_uj"):
        source.read(WINDOW)
    powercap.set_energy("intel-rapl:0", 3_000_000)
    source.reset_baseline()
    assert source.read(WINDOW).is_baseline
    powercap.add_energy("intel-rapl:0", 1_000_000)
    assert _joules(source) == pytest.approx(1.0)


def test_root_only_energy_file_gives_the_platypus_remedy() -> None:
    """As on Linux >= 5.10, energy_uj is 0400 root; an unprivileged reader is told what to do."""
    base = Path(tempfile.mkdtemp(prefix="wattvisor-rapl-"))
    try:
        tree = SyntheticPowercap(base)
        tree.add_zone("intel-rapl:0", "package-0", energy_uj=42)
        for dirpath, _dirs, files in os.walk(base):
            os.chmod(dirpath, 0o755)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o444)
        os.chmod(tree.energy_file("intel-rapl:0"), 0o400)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            os.close(read_end)
            message = "opened"
            try:
                os.setgid(65534)
                os.setuid(65534)
                RaplSource(tree.root)
            except EnergySourceError as exc:
                message = str(exc)
            except BaseException as exc:
                message = f"unexpected {exc!r}"
            os.write(write_end, message.encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode()
        os.waitpid(child, 0)
        assert "permission denied" in message
        assert "CVE-2020-8694" in message
        assert str(tree.energy_file("intel-rapl:0").resolve()) in message or "energy_uj" in message
    finally:
        shutil.rmtree(base)


MODULES_WITH_RAPL = (
    "intel_rapl_msr 20480 0 - Live 0x0000000000000000\n"
    "intel_rapl_common 40960 1 intel_rapl_msr, Live 0x0000000000000000\n"
    "kvm_intel 380928 0 - Live 0x0000000000000000\n"
)


def test_missing_zones_with_driver_loaded_points_at_unsupported_cpu(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.write_text(MODULES_WITH_RAPL)
    with pytest.raises(EnergySourceError, match=r"intel_rapl_common, intel_rapl_msr is loaded"):
        RaplSource(tmp_path / "powercap", modules_file=modules)


def test_missing_zones_without_driver_says_none_is_loaded(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.write_text("kvm_intel 380928 0 - Live 0x0000000000000000\n")
    with pytest.raises(EnergySourceError, match=r"no RAPL module is loaded .*modprobe"):
        RaplSource(tmp_path / "powercap", modules_file=modules)


def test_unreadable_module_list_is_said_plainly(tmp_path: Path) -> None:
    with pytest.raises(EnergySourceError, match=r"modules is unreadable"):
        RaplSource(tmp_path / "powercap", modules_file=tmp_path / "modules")
