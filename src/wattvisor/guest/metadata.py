"""wattvisor's instance metadata inside the domain XML (``<metadata>`` child).

Modelled on Nova's ``<nova:instance>`` but in wattvisor's own namespace, so a
domain carries who owns it, what flavor and image it was built from and which
shares it has, readable by anyone holding only the XML (``virsh dumpxml``):

    <wattvisor:instance xmlns:wattvisor="https://wattvisor.org/xmlns/libvirt/instance/1.0">
      <wattvisor:package version="0.1.0"/>
      <wattvisor:name>web-1</wattvisor:name>
      <wattvisor:creationTime>2026-11-21 23:59:01</wattvisor:creationTime>
      <wattvisor:flavor name="m1.small" id="...">
        <wattvisor:memory>2048</wattvisor:memory> ... <wattvisor:vcpus>1</wattvisor:vcpus>
        <wattvisor:extraSpecs><wattvisor:extraSpec name="hw:power_metrics">true</...>
      </wattvisor:flavor>
      <wattvisor:image uuid="..."><wattvisor:properties>...</wattvisor:properties></...>
      <wattvisor:owner><wattvisor:user uuid="...">alice</wattvisor:user>
        <wattvisor:project uuid="...">demo</wattvisor:project></wattvisor:owner>
      <wattvisor:root type="image" uuid="..."/>
      <wattvisor:shares><wattvisor:share tag="scaphandre" purpose="power_metrics"/></...>
    </wattvisor:instance>

Shares carry the mount tag and purpose only, never the host path: the XML is
shown to users, who see mount tags, not host paths.

Each dataclass field declares its place in the XML once (``_xml("flavor/@name")``);
one generic writer and one generic reader walk those declarations.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Self

from lxml import etree

from wattvisor.guest.errors import GuestXMLError, MetadataError
from wattvisor.guest.xmlmodel import (
    XML_ILLEGAL,
    Element,
    ElementPath,
    Nodes,
    built_node,
    check_text,
    parse_xml,
)

METADATA_NS = "https://wattvisor.org/xmlns/libvirt/instance/1.0"
METADATA_PREFIX = "wattvisor"
# The key virDomainSetMetadata wants alongside the namespace URI.
METADATA_KEY = METADATA_PREFIX
CREATION_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_MOUNT_TAG = re.compile(r"[A-Za-z0-9_.-]{1,36}")

Kind = Literal["str", "int", "datetime", "child", "children", "mapping"]


@dataclass(frozen=True)
class _XMLSpec:
    path: str
    kind: Kind
    cls: type[Any] | None = None
    key_attr: str = "name"


def _xml(path: str, kind: Kind = "str", cls: type[Any] | None = None) -> dict[str, _XMLSpec]:
    """Field metadata saying where the field lives in the XML (``field(metadata=...)``).

    A field without a default is required: reading XML that lacks it is an error.
    """
    return {"xml": _XMLSpec(path, kind, cls)}


def _q(tag: str) -> str:
    return f"{{{METADATA_NS}}}{tag}"


_SpecList = tuple[tuple[str, _XMLSpec, ElementPath, bool], ...]
_spec_cache: dict[tuple[type[Any], str | None], _SpecList] = {}


def _specs(cls: type[Any], namespace: str | None = METADATA_NS) -> _SpecList:
    """(field name, XML spec, compiled path, required) per field, compiled once per class."""
    specs = _spec_cache.get((cls, namespace))
    if specs is None:
        specs = tuple(
            (
                f.name,
                f.metadata["xml"],
                ElementPath(f.metadata["xml"].path, namespace),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        )
        _spec_cache[(cls, namespace)] = specs
    return specs


def _write(obj: Any, elem: Element, namespace: str | None) -> None:
    nodes: Nodes = {(): elem}
    for name, spec, path, required in _specs(type(obj), namespace):
        value = getattr(obj, name)
        kind = spec.kind
        if value is None:
            if required:
                raise MetadataError(f"{type(obj).__name__}.{name} is required")
            continue
        if kind == "str":
            text = value if isinstance(value, str) and _text_ok(value) else _bad(obj, name, value)
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise MetadataError(
                    f"{type(obj).__name__}.{name} must be an integer, not {value!r}"
                )
            text = str(value)
        elif kind == "datetime":
            text = value.astimezone(UTC).strftime(CREATION_TIME_FORMAT)
        elif kind == "child":
            _write(value, built_node(nodes, path.steps), namespace)
            continue
        else:
            if value:
                container = built_node(nodes, path.steps[:-1])
                item_tag = path.steps[-1]
                if kind == "children":
                    for item in value:
                        _write(item, etree.SubElement(container, item_tag), namespace)
                else:
                    for key, item_text in value.items():
                        item = etree.SubElement(container, item_tag)
                        item.set(spec.key_attr, _checked(key, f"{name} key"))
                        item.text = _checked(item_text, f"{name}[{key!r}]")
            continue
        node = built_node(nodes, path.steps)
        if path.attr is not None:
            node.set(path.attr, text)
        else:
            node.text = text


def _text_ok(value: str) -> bool:
    return XML_ILLEGAL.search(value) is None


def _bad(obj: Any, name: str, value: Any) -> str:
    return _checked(value, f"{type(obj).__name__}.{name}")


def _checked(value: Any, where: str) -> str:
    try:
        return check_text(value, where)
    except GuestXMLError as exc:
        raise MetadataError(str(exc)) from exc


def _read(cls: type[Any], elem: Element, namespace: str | None) -> Any:
    kwargs: dict[str, Any] = {}
    for name, spec, path, required in _specs(cls, namespace):
        if spec.kind in ("children", "mapping"):
            items = path.find_all(elem)
            if spec.kind == "children":
                assert spec.cls is not None
                kwargs[name] = tuple(_read(spec.cls, item, namespace) for item in items)
            else:
                kwargs[name] = {item.get(spec.key_attr, ""): item.text or "" for item in items}
            continue
        node = path.find(elem)
        raw: str | None = None
        if node is not None:
            raw = node.get(path.attr) if path.attr is not None else (node.text or "")
        if node is None or raw is None:
            if required:
                raise MetadataError(
                    f"<{etree.QName(elem).localname}> in the wattvisor metadata has no "
                    f"{spec.path!r}, which {cls.__name__} requires"
                )
            continue
        if spec.kind == "child":
            assert spec.cls is not None
            kwargs[name] = _read(spec.cls, node, namespace)
        elif spec.kind == "int":
            try:
                kwargs[name] = int(raw.strip(), 10)
            except ValueError as exc:
                raise MetadataError(f"{spec.path!r} is {raw!r}, not an integer") from exc
        elif spec.kind == "datetime":
            try:
                kwargs[name] = datetime.strptime(raw.strip(), CREATION_TIME_FORMAT).replace(
                    tzinfo=UTC
                )
            except ValueError as exc:
                raise MetadataError(
                    f"{spec.path!r} is {raw!r}; expected UTC time as {CREATION_TIME_FORMAT}"
                ) from exc
        else:
            kwargs[name] = raw
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"wattvisor metadata: {exc}") from exc


@dataclass(frozen=True)
class FlavorMeta:
    """The flavor the instance was built from; sizes as the flavor states them."""

    name: str = field(metadata=_xml("@name"))
    id: str = field(metadata=_xml("@id"))
    memory_mib: int | None = field(default=None, metadata=_xml("memory", "int"))
    disk_gib: int | None = field(default=None, metadata=_xml("disk", "int"))
    swap_mib: int | None = field(default=None, metadata=_xml("swap", "int"))
    ephemeral_gib: int | None = field(default=None, metadata=_xml("ephemeral", "int"))
    vcpus: int | None = field(default=None, metadata=_xml("vcpus", "int"))
    extra_specs: Mapping[str, str] = field(
        default_factory=dict, metadata=_xml("extraSpecs/extraSpec", "mapping")
    )


@dataclass(frozen=True)
class OwnerMeta:
    """The user and project that own the instance (uuid and display name of each)."""

    user_uuid: str = field(metadata=_xml("user/@uuid"))
    user_name: str = field(metadata=_xml("user"))
    project_uuid: str = field(metadata=_xml("project/@uuid"))
    project_name: str = field(metadata=_xml("project"))


@dataclass(frozen=True)
class RootMeta:
    """What the root disk came from: an image (its uuid) or a volume (its uuid)."""

    type: str = field(metadata=_xml("@type"))
    uuid: str = field(metadata=_xml("@uuid"))

    def __post_init__(self) -> None:
        if self.type not in ("image", "volume"):
            raise MetadataError(f"root type {self.type!r} is not accepted; use 'image' or 'volume'")


@dataclass(frozen=True)
class ImageMeta:
    """The image the instance was built from (uuid is '' when booted from a volume)."""

    uuid: str = field(metadata=_xml("@uuid"))
    properties: Mapping[str, str] = field(
        default_factory=dict, metadata=_xml("properties/property", "mapping")
    )


@dataclass(frozen=True)
class ShareMeta:
    """A directory shared into the guest, by mount tag and purpose (never the host path)."""

    tag: str = field(metadata=_xml("@tag"))
    purpose: str = field(metadata=_xml("@purpose"))

    def __post_init__(self) -> None:
        if not isinstance(self.tag, str) or not _MOUNT_TAG.fullmatch(self.tag):
            raise MetadataError(
                f"share mount tag {self.tag!r} is not accepted; use 1-36 characters "
                "from A-Z a-z 0-9 _ . -"
            )


@dataclass(frozen=True)
class InstanceMetadata:
    """Everything wattvisor records about an instance inside its domain XML.

    ``creation_time`` is kept in UTC to the second (the precision the XML holds);
    a naive datetime is taken as UTC.
    """

    package_version: str = field(metadata=_xml("package/@version"))
    display_name: str = field(metadata=_xml("name"))
    creation_time: datetime = field(metadata=_xml("creationTime", "datetime"))
    flavor: FlavorMeta | None = field(default=None, metadata=_xml("flavor", "child", FlavorMeta))
    image: ImageMeta | None = field(default=None, metadata=_xml("image", "child", ImageMeta))
    owner: OwnerMeta | None = field(default=None, metadata=_xml("owner", "child", OwnerMeta))
    root: RootMeta | None = field(default=None, metadata=_xml("root", "child", RootMeta))
    shares: tuple[ShareMeta, ...] = field(
        default_factory=tuple, metadata=_xml("shares/share", "children", ShareMeta)
    )

    def __post_init__(self) -> None:
        created = self.creation_time
        if not isinstance(created, datetime):
            raise MetadataError(f"creation_time must be a datetime, not {created!r}")
        created = created.replace(tzinfo=UTC) if created.tzinfo is None else created
        object.__setattr__(self, "creation_time", created.astimezone(UTC).replace(microsecond=0))
        object.__setattr__(self, "shares", tuple(self.shares))

    def to_element(self, qualified: bool = True) -> Element:
        """A new ``<wattvisor:instance>`` element declaring its namespace, as it sits
        in the domain XML; ``qualified=False`` gives the plain ``<instance>`` form."""
        if qualified:
            root = etree.Element(_q("instance"), nsmap={METADATA_PREFIX: METADATA_NS})
            _write(self, root, METADATA_NS)
        else:
            root = etree.Element("instance")
            _write(self, root, None)
        return root

    def to_xml(self) -> str:
        """The text for ``virDomainSetMetadata(VIR_DOMAIN_METADATA_ELEMENT, xml,
        METADATA_KEY, METADATA_NS, flags)``.

        It is the namespace-less ``<instance>`` form: libvirt puts the element and
        its descendants into ``METADATA_NS`` under the prefix ``METADATA_KEY`` itself,
        and refuses text that already declares that prefix. ``virDomainGetMetadata``
        returns the same form; ``from_xml`` reads both.
        """
        return etree.tostring(self.to_element(qualified=False), encoding="unicode")

    @classmethod
    def from_element(cls, element: Element) -> Self:
        """Read ``<wattvisor:instance>``, or the namespace-less ``<instance>`` that
        ``virDomainGetMetadata`` returns (libvirt strips the namespace it was asked for)."""
        if element.tag == _q("instance"):
            namespace: str | None = METADATA_NS
        elif element.tag == "instance":
            namespace = None
        else:
            raise MetadataError(
                f"element {element.tag!r} is not <{METADATA_PREFIX}:instance> in "
                f"namespace {METADATA_NS}"
            )
        result: Self = _read(cls, element, namespace)
        return result

    @classmethod
    def from_xml(cls, xml: str | bytes) -> Self:
        """Parse the text ``virDomainGetMetadata`` (or ``to_xml``) gives back."""
        return cls.from_element(parse_xml(xml, "instance metadata XML"))
