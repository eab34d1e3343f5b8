"""libvirt's own domain XML test documents: lossless round trip, validity, upgrade.

Round-trip equality is canonical XML (C14N 1.0 with comments) of the input and
the output, with nothing normalised: not even insignificant whitespace.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from guest_samples import c14n, corpus_files
from lxml import etree

from wattvisor.guest import (
    Disk,
    Domain,
    Filesystem,
    Interface,
    MemoryBacking,
    SchemaError,
    upgrade_domain_xml,
    validate_domain_xml,
)

# libvirt's deliberately invalid documents among the corpus, as domain.rng judges them.
KNOWN_INVALID = {
    "disk-cdrom-empty-network-invalid.xml",
    "disk-network-iscsi-auth-secrettype-invalid.xml",
    "luks-disk-invalid.xml",
    "machine-loadparm-s390-char-invalid.xml",
    "machine-loadparm-s390-len-invalid.xml",
    "numatune-auto-nodeset-invalid.xml",
    "pci-bus-invalid.xml",
    "pci-function-invalid.xml",
    "pci-rom-disabled-invalid.xml",
    "tpm-no-backend-invalid.xml",
    "vhost_queues-invalid.xml",
}


@pytest.fixture(scope="module")
def corpus() -> list[Path]:
    files = corpus_files()
    assert len(files) == 649
    return files


def test_every_corpus_document_round_trips_unchanged(corpus: list[Path]) -> None:
    failures = [
        path.name
        for path in corpus
        if c14n(Domain.parse(path.read_bytes()).to_xml()) != c14n(path.read_bytes())
    ]
    assert failures == []


def test_reading_every_modelled_value_leaves_the_document_unchanged(corpus: list[Path]) -> None:
    names = ["name", "uuid", "title", "memory_kib", "os_type", "kernel", "boot_devs", "emulator"]
    for path in corpus:
        raw = path.read_bytes()
        domain = Domain.parse(raw)
        for name in names:
            getattr(domain, name)
        for device in domain.devices:
            _ = device.alias
        assert c14n(domain.to_xml()) == c14n(raw), path.name


def test_changing_modelled_values_changes_only_them_in_every_document(corpus: list[Path]) -> None:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    for path in corpus:
        raw = path.read_bytes()
        domain = Domain.parse(raw)
        expected = etree.fromstring(raw, parser)
        if expected.find("name") is not None:
            domain.name = "renamed"
            expected.find("name").text = "renamed"
        disks = domain.devices.of_type(Disk)
        target = expected.find("devices/disk/target")
        if disks and target is not None:
            disks[0].target_dev = "vdz"
            target.set("dev", "vdz")
        assert c14n(domain.to_xml()) == c14n(etree.tostring(expected.getroottree())), path.name


def test_schema_rejects_exactly_the_known_invalid_documents(corpus: list[Path]) -> None:
    invalid = set()
    for path in corpus:
        try:
            validate_domain_xml(path.read_bytes())
        except SchemaError as exc:
            assert exc.line is not None and exc.detail, path.name
            invalid.add(path.name)
    assert invalid == KNOWN_INVALID
    assert len(invalid) / len(corpus) < 0.03


def test_upgrade_keeps_valid_documents_valid_and_is_idempotent(corpus: list[Path]) -> None:
    changed = 0
    for path in corpus:
        text = path.read_text(encoding="utf-8")
        result = upgrade_domain_xml(text)
        changed += result.changed
        if path.name not in KNOWN_INVALID:
            validate_domain_xml(result.xml)
        again = upgrade_domain_xml(result.xml)
        assert not again.changed and again.xml == result.xml, path.name
        if not result.changed:
            assert result.xml == text
    assert changed > 300  # most of libvirt's documents have a disk or NIC without alias


def _without_device_aliases(raw: bytes) -> bytes:
    root = etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True))
    for device in root.iterfind("devices/*"):
        for alias in device.findall("alias"):
            device.remove(alias)
    return etree.tostring(root)


def test_every_valid_document_stripped_of_aliases_stays_valid_when_upgraded(
    corpus: list[Path],
) -> None:
    """Every device the upgrade names gets its alias where libvirt's schema (and so
    libxml2's reading of its interleaves) accepts it, whatever else the device holds."""
    upgraded = 0
    failures = []
    for path in corpus:
        if path.name in KNOWN_INVALID:
            continue
        stripped = _without_device_aliases(path.read_bytes())
        validate_domain_xml(stripped)  # taking aliases away never invalidates a document
        result = upgrade_domain_xml(stripped)
        upgraded += result.changed
        try:
            validate_domain_xml(result.xml)
        except SchemaError as exc:
            failures.append(f"{path.name}: {exc}")
    assert failures == []
    assert upgraded > 350


def test_values_written_into_valid_documents_land_where_the_schema_allows(
    corpus: list[Path],
) -> None:
    for path in corpus:
        if path.name in KNOWN_INVALID:
            continue
        domain = Domain.parse(path.read_bytes())
        domain.title, domain.description, domain.on_crash = "T", "D", "destroy"
        domain.emulator = "/usr/bin/qemu-system-x86_64"
        domain.cpu_mode = domain.cpu_mode or "host-model"
        domain.current_memory_kib = domain.memory_kib
        if domain.memory_backing is None:
            domain.memory_backing = MemoryBacking()
        else:
            domain.memory_backing.access_mode = "shared"
        for disk in domain.devices.of_type(Disk):
            disk.serial, disk.driver_cache = "abc", "none"
        for nic in domain.devices.of_type(Interface):
            nic.mac = nic.mac or "52:54:00:00:00:01"
        for fs in domain.devices.of_type(Filesystem):
            fs.readonly = True
        validate_domain_xml(domain.to_xml())
