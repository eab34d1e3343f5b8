"""wattvisor's instance metadata: shape, round trip, and living inside a domain."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from guest_samples import build_guest, c14n
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from wattvisor.guest import (
    METADATA_NS,
    Domain,
    FlavorMeta,
    ImageMeta,
    InstanceMetadata,
    MetadataError,
    OwnerMeta,
    RootMeta,
    ShareMeta,
    validate_domain_xml,
)

NS = {"w": METADATA_NS}


def test_metadata_xml_has_nova_shape_in_wattvisor_namespace(metadata: InstanceMetadata) -> None:
    root = etree.fromstring(etree.tostring(metadata.to_element()))
    assert root.tag == f"{{{METADATA_NS}}}instance" and root.prefix == "wattvisor"
    assert METADATA_NS == "https://wattvisor.org/xmlns/libvirt/instance/1.0"
    children = [etree.QName(c).localname for c in root]
    assert children == [
        "package", "name", "creationTime", "flavor", "image", "owner", "root", "shares",
    ]  # fmt: skip
    assert root.find("w:package", NS).get("version") == "0.1.0"
    assert root.findtext("w:creationTime", namespaces=NS) == "2026-11-21 23:59:01"
    flavor = root.find("w:flavor", NS)
    assert (flavor.get("name"), flavor.get("id")) == ("m1.small", "2")
    assert [etree.QName(c).localname for c in flavor] == [
        "memory", "disk", "swap", "ephemeral", "vcpus", "extraSpecs",
    ]  # fmt: skip
    spec = flavor.find("w:extraSpecs/w:extraSpec", NS)
    assert (spec.get("name"), spec.text) == ("hw:power_metrics", "true")
    user = root.find("w:owner/w:user", NS)
    assert (user.get("uuid"), user.text) == ("a11ce000-0000-4000-8000-000000000001", "alice")
    assert root.find("w:root", NS).attrib == {
        "type": "image",
        "uuid": "c0ffee00-0000-4000-8000-000000000001",
    }
    prop = root.find("w:image/w:properties/w:property", NS)
    assert (prop.get("name"), prop.text) == ("os", "linux")
    share = root.find("w:shares/w:share", NS)
    assert dict(share.attrib) == {"tag": "scaphandre", "purpose": "power_metrics"}


def test_shares_record_mount_tag_and_purpose_never_a_host_path() -> None:
    assert [f.name for f in dataclasses.fields(ShareMeta)] == ["tag", "purpose"]
    with pytest.raises(MetadataError, match="mount tag '/var/lib/x'"):
        ShareMeta(tag="/var/lib/x", purpose="power_metrics")


def test_metadata_parses_back_equal(metadata: InstanceMetadata) -> None:
    assert InstanceMetadata.from_xml(metadata.to_xml()) == metadata
    qualified = etree.tostring(metadata.to_element())
    assert InstanceMetadata.from_xml(qualified) == metadata
    minimal = InstanceMetadata("1", "x", datetime(2020, 1, 1, tzinfo=UTC))
    assert InstanceMetadata.from_xml(minimal.to_xml()) == minimal


def test_creation_time_is_utc_to_the_second() -> None:
    cet = timezone(timedelta(hours=1))
    meta = InstanceMetadata("1", "x", datetime(2026, 1, 1, 1, 30, 5, 999, tzinfo=cet))
    assert meta.creation_time == datetime(2026, 1, 1, 0, 30, 5, tzinfo=UTC)
    assert "<creationTime>2026-01-01 00:30:05</creationTime>" in meta.to_xml()
    naive = InstanceMetadata("1", "x", datetime(2026, 1, 1, 0, 30, 5))
    assert naive.creation_time.tzinfo is UTC


def test_missing_or_bad_parts_raise_metadata_error() -> None:
    with pytest.raises(MetadataError, match="'image' or 'volume'"):
        RootMeta(type="snapshot", uuid="x")
    xml = (
        f'<wattvisor:instance xmlns:wattvisor="{METADATA_NS}">'
        "<wattvisor:name>x</wattvisor:name></wattvisor:instance>"
    )
    with pytest.raises(MetadataError, match="package/@version"):
        InstanceMetadata.from_xml(xml)
    with pytest.raises(MetadataError, match="not <wattvisor:instance>"):
        InstanceMetadata.from_xml("<instances/>")
    bad_time = (
        InstanceMetadata("1", "x", datetime(2020, 1, 1))
        .to_xml()
        .replace("2020-01-01 00:00:00", "yesterday")
    )
    with pytest.raises(MetadataError, match="'yesterday'"):
        InstanceMetadata.from_xml(bad_time)


def test_text_xml_cannot_carry_is_refused_and_the_domain_keeps_its_metadata(
    metadata: InstanceMetadata,
) -> None:
    domain = build_guest(metadata)
    before = domain.to_xml()
    bad = dataclasses.replace(metadata, display_name="nul\x00")
    with pytest.raises(MetadataError, match="display_name"):
        domain.instance_metadata = bad
    assert domain.to_xml() == before


def test_setting_metadata_replaces_only_wattvisor_element(metadata: InstanceMetadata) -> None:
    xml = """<domain type='qemu'>
  <name>n</name>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:name>n</nova:name></nova:instance>
  </metadata>
  <memory>1024</memory>
  <os><type>hvm</type></os>
</domain>"""
    domain = Domain.parse(xml)
    assert domain.instance_metadata is None
    domain.instance_metadata = metadata
    assert domain.instance_metadata == metadata
    changed = dataclasses.replace(metadata, display_name="renamed")
    domain.instance_metadata = changed
    assert Domain.parse(domain.to_xml()).instance_metadata == changed
    assert domain.to_xml().count("wattvisor:instance xmlns") == 1
    domain.instance_metadata = None
    assert c14n(domain.to_xml()) == c14n(xml)
    validate_domain_xml(build_guest(metadata).to_xml())


_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="".join(
            [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"] + ["\ufffe", "\uffff"]
        ),
    ),
    max_size=20,
)
_tags = st.from_regex(r"[A-Za-z0-9_.-]{1,36}", fullmatch=True)
_ints = st.none() | st.integers(min_value=0, max_value=2**40)
_flavors = st.builds(
    FlavorMeta,
    name=_text,
    id=_text,
    memory_mib=_ints,
    disk_gib=_ints,
    swap_mib=_ints,
    ephemeral_gib=_ints,
    vcpus=_ints,
    extra_specs=st.dictionaries(_text, _text, max_size=3),
)
_metas = st.builds(
    InstanceMetadata,
    package_version=_text,
    display_name=_text,
    creation_time=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
    ),
    flavor=st.none() | _flavors,
    image=st.none() | st.builds(ImageMeta, uuid=_text, properties=st.dictionaries(_text, _text)),
    owner=st.none() | st.builds(OwnerMeta, _text, _text, _text, _text),
    root=st.none() | st.builds(RootMeta, type=st.sampled_from(["image", "volume"]), uuid=_text),
    shares=st.lists(st.builds(ShareMeta, tag=_tags, purpose=_text), max_size=3).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(_metas)
def test_any_metadata_round_trips_through_its_xml(meta: InstanceMetadata) -> None:
    assert InstanceMetadata.from_xml(meta.to_xml()) == meta
    assert InstanceMetadata.from_xml(etree.tostring(meta.to_element())) == meta
    domain = Domain.parse("<domain type='qemu'><name>n</name></domain>")
    domain.instance_metadata = meta
    assert Domain.parse(domain.to_xml()).instance_metadata == meta
