"""Recognising QEMU processes and reading guest names the way libvirt writes them."""

from __future__ import annotations

from wattvisor.energy.qemu_cmdline import (
    QemuIdentity,
    is_qemu_argv,
    parse_qemu_argv,
    split_qemu_opts,
)

LIBVIRT_ARGV = [
    "/usr/bin/qemu-system-x86_64",
    "-name",
    "guest=instance-0000002a,debug-threads=on",
    "-S",
    "-uuid",
    "6695EB01-F6A4-8304-79AA-97F2502E193F",
    "-m",
    "512",
]


def test_libvirt_command_line_gives_name_and_lowercase_uuid() -> None:
    assert parse_qemu_argv(LIBVIRT_ARGV) == QemuIdentity(
        name="instance-0000002a", uuid="6695eb01-f6a4-8304-79aa-97f2502e193f"
    )


def test_doubled_commas_in_a_name_are_one_literal_comma() -> None:
    argv = ["qemu-system-aarch64", "-name", "guest=web,,eu,,1,debug-threads=on"]
    identity = parse_qemu_argv(argv)
    assert identity is not None
    assert identity.name == "web,eu,1"


def test_plain_and_equals_forms_of_name() -> None:
    assert parse_qemu_argv(["/usr/libexec/qemu-kvm", "-name", "db"]) == QemuIdentity("db", None)
    assert parse_qemu_argv(["kvm", "-name=guest=x,,y"]) == QemuIdentity("x,y", None)


def test_rhel_and_debian_binaries_count_as_qemu_but_others_do_not() -> None:
    assert is_qemu_argv(["/usr/libexec/qemu-kvm"])
    assert is_qemu_argv(["/usr/bin/kvm"])
    assert is_qemu_argv(["qemu-system-riscv64"])
    assert not is_qemu_argv(["/usr/bin/qemu-img", "info", "x"])
    assert not is_qemu_argv(["/usr/bin/python3", "qemu-system-x86_64"])
    assert not is_qemu_argv([])
    assert parse_qemu_argv(["/usr/bin/bash", "-name", "guest=x"]) is None


def test_qemu_without_name_has_no_name() -> None:
    assert parse_qemu_argv(["qemu-system-x86_64", "-m", "64"]) == QemuIdentity(None, None)


def test_split_keeps_empty_fields_and_trailing_comma_semantics() -> None:
    assert split_qemu_opts("a,,b,c=d") == ["a,b", "c=d"]
    assert split_qemu_opts("a,") == ["a", ""]
    assert split_qemu_opts(",,,,") == [",,"]
