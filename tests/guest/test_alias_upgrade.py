"""Upgrading existing domains: missing ``ua-`` aliases added, nothing else touched."""

from __future__ import annotations

import re

from guest_samples import LEGACY_XML, VOLUME_ID, c14n
from lxml import etree

from wattvisor.guest import ATTACHABLE_KINDS, Domain, upgrade_domain_xml, validate_domain_xml


def _aliases(xml: str) -> dict[str, str | None]:
    root = etree.fromstring(xml.encode())
    return {
        f"{dev.tag}{i}": (dev.find("alias").get("name") if dev.find("alias") is not None else None)
        for i, dev in enumerate(root.find("devices"))
        if isinstance(dev.tag, str)
    }


def test_attachable_devices_get_aliases_and_others_are_left_alone() -> None:
    result = upgrade_domain_xml(LEGACY_XML)
    aliases = _aliases(result.xml)
    assert aliases["disk1"] == f"ua-{VOLUME_ID}"  # serial is a volume id: used as is
    assert aliases["disk3"] == "ua-keep-me"  # an existing user alias is never replaced
    for key in ("disk2", "filesystem5", "interface6", "hostdev7"):
        assert re.fullmatch(r"ua-[0-9a-f-]{36}", aliases[key] or ""), key
    assert aliases["controller4"] is None and aliases["video8"] is None
    assert aliases["memballoon9"] is None and aliases["emulator0"] is None
    assert {c.device for c in result.changes} == {"disk", "filesystem", "interface", "hostdev"}
    assert set(ATTACHABLE_KINDS) >= {"disk", "interface", "filesystem", "hostdev"}


def test_changes_say_which_device_got_which_alias_and_what_it_replaced() -> None:
    result = upgrade_domain_xml(LEGACY_XML)
    assert result.changed and len(result.changes) == 5
    by_key = {c.key: c for c in result.changes}
    assert by_key[f"serial={VOLUME_ID}"].alias == f"ua-{VOLUME_ID}"
    replaced = by_key["target=vdb"]
    assert replaced.previous == "virtio-disk1"
    assert "virtio-disk1" in replaced.describe() and replaced.alias in replaced.describe()
    assert by_key["mac=52:54:00:ab:cd:ef"].device == "interface"
    assert by_key["target=scaphandre"].device == "filesystem"


def test_upgrade_is_deterministic_and_idempotent() -> None:
    first = upgrade_domain_xml(LEGACY_XML)
    assert upgrade_domain_xml(LEGACY_XML).xml == first.xml
    second = upgrade_domain_xml(first.xml)
    assert not second.changed and second.changes == []
    assert second.xml == first.xml


def test_aliases_depend_on_the_domain_and_the_device_not_on_chance() -> None:
    other = upgrade_domain_xml(LEGACY_XML.replace("4dea22b3-1d52", "00000000-1d52"))
    mine = upgrade_domain_xml(LEGACY_XML)
    assert _aliases(other.xml)["disk2"] != _aliases(mine.xml)["disk2"]
    assert _aliases(other.xml)["disk1"] == _aliases(mine.xml)["disk1"]  # the volume id


def test_upgrade_touches_nothing_but_the_aliases() -> None:
    result = upgrade_domain_xml(LEGACY_XML)
    upgraded = etree.fromstring(result.xml.encode())
    original = etree.fromstring(LEGACY_XML.encode())
    for tree in (upgraded, original):
        for alias in tree.iter("alias"):
            alias.getparent().remove(alias)

    # Whitespace differs only around the removed aliases; compare without it.
    def strip(tree: etree._Element) -> bytes:
        for node in tree.iter():
            node.tail = node.tail.strip() if node.tail else None
            if len(node):
                node.text = node.text.strip() if node.text else None
        return etree.tostring(tree, method="c14n")

    assert strip(upgraded) == strip(original)
    assert '\n      <alias name="ua-' in result.xml  # indented like its siblings
    validate_domain_xml(result.xml)


def test_an_up_to_date_document_comes_back_byte_for_byte() -> None:
    text = upgrade_domain_xml(LEGACY_XML).xml.replace('"', "'") + "\n<!-- trailing -->\n"
    result = upgrade_domain_xml(text)
    assert result.xml == text and not result.changed


def test_clashing_derived_alias_takes_the_next_value() -> None:
    first = upgrade_domain_xml(LEGACY_XML)
    taken = next(c.alias for c in first.changes if c.key == "target=vdb")
    clash = LEGACY_XML.replace("<alias name='ua-keep-me'/>", f"<alias name='{taken}'/>")
    result = upgrade_domain_xml(clash)
    vdb = next(c for c in result.changes if c.key == "target=vdb")
    assert vdb.alias != taken
    names = [a.get("name") for a in etree.fromstring(result.xml.encode()).iter("alias")]
    assert len(names) == 6 and len(set(names)) == 6 == len(Domain.parse(result.xml).aliases())
    assert c14n(upgrade_domain_xml(result.xml).xml) == c14n(result.xml)
