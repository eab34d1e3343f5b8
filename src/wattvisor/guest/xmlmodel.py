"""Declarative mapping between Python attributes and an lxml element tree.

An ``XMLObject`` wraps one lxml element; its class declares, once per value, where
that value lives (``source_dir = StrProperty("./source/@dir")``). Reading a
property reads the tree, writing it writes the tree, so parsing and writing come
from the same declaration and cannot drift apart, and whatever the model does not
declare stays in the tree untouched, in order.

Writing a value whose element is missing creates the element at a deterministic
place: each class lists, per parent tag, the order libvirt itself formats the
children in (``ORDER``); a new child goes before the first existing sibling that
comes later in that list. New elements copy the indentation of their siblings so
that a pretty-printed document stays pretty.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from copy import deepcopy
from typing import Any, ClassVar, Generic, Self, TypeVar, overload

from lxml import etree

from wattvisor.guest.errors import GuestXMLError, MalformedXMLError

T = TypeVar("T")
Element = etree._Element

# Characters XML 1.0 cannot carry at all (not even as character references).
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

_parsers = threading.local()


def _parser(for_text: bool) -> etree.XMLParser:
    """A per-thread safe parser: no network, no DTD loading, no entity expansion.

    Text input is encoded to UTF-8 before parsing, so its parser ignores whatever
    encoding an XML declaration inside the text claims.
    """
    name = "text" if for_text else "bytes"
    parser: etree.XMLParser | None = getattr(_parsers, name, None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_blank_text=False,
            encoding="utf-8" if for_text else None,
        )
        setattr(_parsers, name, parser)
    return parser


def parse_xml(xml: str | bytes, what: str = "XML") -> Element:
    """Parse ``xml`` safely and return its root element.

    Raises ``MalformedXMLError`` carrying libxml2's message and line for text that
    is not well-formed, including undeclared namespace prefixes.
    """
    if isinstance(xml, str):
        data, parser = xml.encode("utf-8", "surrogatepass"), _parser(True)
    elif isinstance(xml, bytes | bytearray):
        data, parser = bytes(xml), _parser(False)
    else:
        raise GuestXMLError(f"{what} must be str or bytes, not {type(xml).__name__}")
    if not data.strip():
        raise MalformedXMLError(f"{what} is empty", None)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno and exc.lineno > 0 else None
        raise MalformedXMLError(f"{what} is not well-formed: {exc.msg}", line) from exc


def check_text(value: str, where: str) -> str:
    """Reject characters that XML cannot carry, before anything is written."""
    if not isinstance(value, str):
        raise GuestXMLError(f"{where} must be a string, not {type(value).__name__}: {value!r}")
    bad = XML_ILLEGAL.search(value)
    if bad is not None:
        raise GuestXMLError(
            f"{where} {value!r} contains {bad.group()!r}, which XML cannot carry; "
            "use printable characters, tab, newline or carriage return"
        )
    return value


Ranks = Mapping[str, Mapping[Any, int]]


def _preceding_text(elem: Element) -> str | None:
    prev = elem.getprevious()
    parent = elem.getparent()
    if prev is not None:
        return prev.tail
    return parent.text if parent is not None else None


def _is_blank(text: str | None) -> bool:
    return text is not None and not text.strip()


def _line_indent(text: str | None) -> str | None:
    """The indentation a blank run of text ends with, if it ends a line."""
    if text is None or text.strip() or "\n" not in text:
        return None
    return text.rsplit("\n", 1)[1]


def _indent_new_subtree(child: Element, own: str) -> None:
    """Indent a freshly built subtree (no whitespace of its own) like its new siblings."""
    if not len(child) or any(n.tail for n in child.iterdescendants()):
        return
    parent = child.getparent()
    outer = _line_indent(_preceding_text(parent)) if parent is not None else None
    outer = outer or ""
    unit = own[len(outer) :] if own.startswith(outer) and len(own) > len(outer) else "  "
    etree.indent(child, space=unit, level=len(own) // len(unit))


def _insert_before(before: Element, child: Element) -> Element:
    indent = _preceding_text(before)
    before.addprevious(child)
    if _is_blank(indent):
        child.tail = indent
        own = _line_indent(indent)
        if own is not None:
            _indent_new_subtree(child, own)
    return child


def _append(parent: Element, child: Element) -> Element:
    if len(parent):
        last = parent[-1]
        indent = _preceding_text(last)
        closing = last.tail
        parent.append(child)
        if _is_blank(indent) and (closing is None or _is_blank(closing)):
            last.tail = indent
            child.tail = closing
            own = _line_indent(indent)
            if own is not None:
                _indent_new_subtree(child, own)
        return child
    parent.append(child)
    outer = _line_indent(_preceding_text(parent))
    if outer is not None and parent.text is None:
        grandparent = parent.getparent()
        above = _line_indent(_preceding_text(grandparent)) if grandparent is not None else None
        above = above or ""
        unit = outer[len(above) :] if outer.startswith(above) and len(outer) > len(above) else "  "
        parent.text = "\n" + outer + unit
        child.tail = "\n" + outer
        _indent_new_subtree(child, outer + unit)
    return child


def insert_child(parent: Element, child: Element, ranks: Ranks) -> Element:
    """Insert ``child`` into ``parent`` at the place the order table in ``ranks`` gives.

    The child goes right after the last sibling that comes no later than it in
    the parent's order (before the first known sibling if all come later, at the
    end if the order does not know the child). Scanning from the end makes
    building a document in order cost one comparison per element.
    """
    if not len(parent):
        return _append(parent, child)
    order = ranks.get(parent.tag)
    rank = None if order is None else order.get(child.tag)
    if order is None or rank is None:
        return _append(parent, child)
    later: Element | None = None
    for sibling in parent.iterchildren(reversed=True):
        sibling_rank = order.get(sibling.tag)
        if sibling_rank is None:
            continue
        if sibling_rank <= rank:
            following = sibling.getnext()
            return _append(parent, child) if following is None else _insert_before(following, child)
        later = sibling
    return _append(parent, child) if later is None else _insert_before(later, child)


def insert_after(parent: Element, child: Element, anchor: Element | None) -> Element:
    """Insert ``child`` into ``parent`` right after ``anchor`` (first when None), with the
    indentation of its new siblings; for callers that know the place better than an
    order table (see ``insert_child``)."""
    following = parent[0] if anchor is None and len(parent) else None
    if anchor is not None:
        following = anchor.getnext()
    return _append(parent, child) if following is None else _insert_before(following, child)


def remove_child(elem: Element) -> None:
    """Remove ``elem`` from its parent, keeping the surrounding indentation right."""
    parent = elem.getparent()
    if parent is None:
        return
    prev = elem.getprevious()
    before = _preceding_text(elem)
    tail = elem.tail
    if (before is None or _is_blank(before)) and (tail is None or _is_blank(tail)):
        text = tail if before is not None else None
    else:
        text = (before or "") + (tail or "") or None
    parent.remove(elem)
    if prev is None:
        parent.text = text
    else:
        prev.tail = text


def replace_child(old: Element, new: Element) -> None:
    """Put ``new`` where ``old`` is, keeping ``old``'s trailing text."""
    parent = old.getparent()
    if parent is None:
        raise GuestXMLError("cannot replace an element that has no parent")
    new.tail = old.tail
    parent.replace(old, new)


class ElementPath:
    """A simple location: child element tags, optionally ending in ``@attribute``."""

    __slots__ = ("attr", "spec", "steps")

    def __init__(self, spec: str, namespace: str | None = None) -> None:
        parts = [p for p in spec.split("/") if p not in ("", ".")]
        self.attr: str | None = None
        if parts and parts[-1].startswith("@"):
            self.attr = parts.pop()[1:]
        if any(not re.fullmatch(r"[A-Za-z_][\w.-]*", p) for p in parts):
            raise ValueError(f"unsupported path {spec!r}: use tag/tag/@attr")
        self.steps: tuple[str, ...] = tuple(
            f"{{{namespace}}}{p}" if namespace else p for p in parts
        )
        self.spec = spec

    def parent(self) -> ElementPath:
        """The path of the element holding the last step (``a/b/@c`` -> ``a``)."""
        result = ElementPath(".")
        result.steps = self.steps[:-1]
        result.spec = "/".join(self.steps[:-1]) or "."
        return result

    def find(self, elem: Element) -> Element | None:
        node = elem
        for tag in self.steps:
            child = next(node.iterchildren(tag), None)
            if child is None:
                return None
            node = child
        return node

    def find_all(self, elem: Element) -> list[Element]:
        nodes = [elem]
        for tag in self.steps:
            nodes = [c for n in nodes for c in n.iterchildren(tag)]
        return nodes

    def ensure(self, elem: Element, ranks: Ranks) -> Element:
        node = elem
        for tag in self.steps:
            child = next(node.iterchildren(tag), None)
            if child is None:
                child = insert_child(node, node.makeelement(tag), ranks)
            node = child
        return node


Nodes = dict[tuple[str, ...], Element]


def built_node(nodes: Nodes, steps: tuple[str, ...]) -> Element:
    """The element at ``steps`` of a document being built in order, appended if new."""
    node = nodes.get(steps)
    if node is not None:
        return node
    node = nodes[()]
    for depth in range(1, len(steps) + 1):
        prefix = steps[:depth]
        child = nodes.get(prefix)
        if child is None:
            child = nodes[prefix] = etree.SubElement(node, prefix[-1])
        node = child
    return node


class Buildable:
    """A declaration that can also write its value into a brand-new element.

    Building a new object does not go through ``write``: the class sorts its
    declarations by libvirt's element order once (``_build_plan``) and each
    declaration appends its elements, so building costs no sibling scans.
    """

    name: str
    path: ElementPath

    def build(self, nodes: Nodes, value: Any) -> None:
        raise NotImplementedError


class XMLObject:
    """Base of every model class: a view onto one lxml element.

    ``TAG`` is the element name; ``ORDER`` maps a parent tag (the object's own tag
    or a descendant's) to the order libvirt formats that parent's children in.
    """

    TAG: ClassVar[str] = ""
    ORDER: ClassVar[Mapping[str, Sequence[str]]] = {}
    _ranks: ClassVar[dict[str, dict[Any, int]]] = {}

    __slots__ = ("_elem",)
    _elem: Element

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._ranks = {
            parent: {tag: rank for rank, tag in enumerate(tags)}
            for parent, tags in cls.ORDER.items()
        }

    def __init__(self, element: Element | None = None) -> None:
        self._elem = element if element is not None else etree.Element(self.TAG)

    @classmethod
    def wrap(cls, element: Element) -> Self:
        """View ``element`` (owned by its tree; nothing is copied)."""
        obj = cls.__new__(cls)
        obj._elem = element
        return obj

    @property
    def element(self) -> Element:
        """The lxml element behind this object (mutations show up in both)."""
        return self._elem

    @classmethod
    def _build_plan(cls) -> dict[str, Buildable]:
        """Declarations sorted by where their element goes (computed once per class)."""
        plan: dict[str, Buildable] | None = cls.__dict__.get("_plan_cache")
        if plan is not None:
            return plan
        found: dict[str, Buildable] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Buildable):
                    found[name] = value

        def key(item: tuple[str, Buildable]) -> tuple[int, ...]:
            parent, ranks = cls.TAG, []
            for step in item[1].path.steps:
                ranks.append(cls._ranks.get(parent, {}).get(step, 1_000_000))
                parent = step
            return tuple(ranks)

        plan = dict(sorted(found.items(), key=key))
        cls._plan_cache = plan  # type: ignore[attr-defined]
        return plan

    def _set(self, **values: object) -> None:
        """Write the given values into this object's new, still empty element.

        ``None`` (and ``False`` for flags, empty lists) means absent. Only used on
        an element that nobody else holds yet, so a bad value raising half-way
        leaves nothing visible behind.
        """
        plan = self._build_plan()
        if len(values) > len(plan) or any(name not in plan for name in values):
            unknown = sorted(set(values) - set(plan))
            raise TypeError(f"{type(self).__name__} has no XML value {unknown}")
        nodes: Nodes = {(): self._elem}
        for name, prop in plan.items():
            value = values.get(name)
            if value is None or value is False or value == []:
                continue
            prop.build(nodes, value)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, XMLObject) and type(other) is type(self) and other._elem is self._elem
        )

    def __hash__(self) -> int:
        return id(self._elem)

    def to_xml(self, pretty: bool = True) -> str:
        """This element alone as XML text, e.g. for ``attachDeviceFlags``.

        ``pretty`` re-indents a copy from column 0 (an element taken from an indented
        document would otherwise keep its old, deeper indentation); ``False`` gives
        the element's text exactly as it sits in its document.
        """
        if not pretty:
            return etree.tostring(self._elem, encoding="unicode", with_tail=False)
        copy = deepcopy(self._elem)
        copy.tail = None
        etree.indent(copy, space="  ")
        return etree.tostring(copy, encoding="unicode")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.to_xml()[:120]!r}>"


class ValueProperty(Buildable, Generic[T]):
    """A typed value at a path: an attribute (``./target/@dev``) or element text."""

    # True when ``format`` is the identity for str values (lets building skip it).
    _plain_str: ClassVar[bool] = False

    def __init__(self, path: str, *, namespace: str | None = None) -> None:
        self.path = ElementPath(path, namespace)
        self.name = path

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def parse(self, raw: str) -> T:
        raise NotImplementedError

    def format(self, value: T) -> str:
        raise NotImplementedError

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: XMLObject, owner: type) -> T | None: ...
    def __get__(self, obj: XMLObject | None, owner: type) -> Self | T | None:
        if obj is None:
            return self
        return self.read(obj._elem)

    def __set__(self, obj: XMLObject, value: T | None) -> None:
        self.write(obj._elem, value, obj._ranks)

    def read(self, elem: Element) -> T | None:
        node = self.path.find(elem)
        if node is None:
            return None
        if self.path.attr is not None:
            raw = node.get(self.path.attr)
            if raw is None:
                return None
        else:
            raw = node.text or ""
        return self.parse(raw)

    def write(self, elem: Element, value: T | None, ranks: Ranks) -> None:
        if value is None:
            node = self.path.find(elem)
            if node is None:
                return
            if self.path.attr is not None:
                if self.path.attr in node.attrib:
                    del node.attrib[self.path.attr]
            elif node is not elem:
                remove_child(node)
            else:
                node.text = None
            return
        text = check_text(self.format(value), self.name)
        node = self.path.ensure(elem, ranks)
        if self.path.attr is not None:
            node.set(self.path.attr, text)
        else:
            node.text = text

    def build(self, nodes: Nodes, value: Any) -> None:
        text = value if type(value) is str and self._plain_str else self.format(value)
        if XML_ILLEGAL.search(text) is not None:
            check_text(text, self.name)
        steps = self.path.steps
        node = nodes.get(steps)
        if node is None:
            node = built_node(nodes, steps)
        if self.path.attr is not None:
            node.set(self.path.attr, text)
        else:
            node.text = text


class StrProperty(ValueProperty[str]):
    """A string value."""

    _plain_str = True

    def parse(self, raw: str) -> str:
        return raw

    def format(self, value: str) -> str:
        if not isinstance(value, str):
            raise GuestXMLError(f"{self.name} must be a string, not {value!r}")
        return value


class IntProperty(ValueProperty[int]):
    """A decimal integer value."""

    def parse(self, raw: str) -> int:
        try:
            return int(raw.strip(), 10)
        except ValueError as exc:
            raise GuestXMLError(
                f"{self.name} ({self.path.spec}) is {raw!r}, which is not a decimal integer"
            ) from exc

    def format(self, value: int) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GuestXMLError(f"{self.name} must be an integer, not {value!r}")
        return str(value)


class YesNoProperty(ValueProperty[bool]):
    """A libvirt ``yes``/``no`` (or ``on``/``off``) attribute as a bool."""

    def __init__(self, path: str, *, true: str = "yes", false: str = "no") -> None:
        super().__init__(path)
        self._true, self._false = true, false

    def parse(self, raw: str) -> bool:
        if raw in (self._true, "yes", "on"):
            return True
        if raw in (self._false, "no", "off"):
            return False
        raise GuestXMLError(f"{self.name} is {raw!r}; expected {self._true!r} or {self._false!r}")

    def format(self, value: bool) -> str:
        return self._true if value else self._false


class FlagProperty(Buildable):
    """A bool that is True when an (empty) element is present, like ``<readonly/>``."""

    def __init__(self, path: str) -> None:
        self.path = ElementPath(path)
        if self.path.attr is not None or not self.path.steps:
            raise ValueError(f"a flag needs an element path, not {path!r}")
        self.name = path

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: XMLObject, owner: type) -> bool: ...
    def __get__(self, obj: XMLObject | None, owner: type) -> Self | bool:
        if obj is None:
            return self
        return self.path.find(obj._elem) is not None

    def __set__(self, obj: XMLObject, value: bool) -> None:
        node = self.path.find(obj._elem)
        if value and node is None:
            self.path.ensure(obj._elem, obj._ranks)
        elif not value and node is not None:
            remove_child(node)

    def build(self, nodes: Nodes, value: Any) -> None:
        if value:
            built_node(nodes, self.path.steps)


class AttrListProperty(Buildable):
    """The same attribute of every element at a path, e.g. ``<boot dev=.../>`` list."""

    def __init__(self, path: str, attr: str, choices: Sequence[str] | None = None) -> None:
        self.path = ElementPath(path)
        self.attr = attr
        self.name = path
        self.choices = tuple(choices) if choices is not None else None

    def _check(self, values: Sequence[str]) -> list[str]:
        checked = [check_text(v, self.name) for v in values]
        if self.choices is not None:
            for value in checked:
                if value not in self.choices:
                    raise GuestXMLError(
                        f"{self.name} value {value!r} is not accepted; use one of "
                        + ", ".join(self.choices)
                    )
        return checked

    def build(self, nodes: Nodes, value: Any) -> None:
        checked = self._check(value)
        parent = built_node(nodes, self.path.steps[:-1])
        for item in checked:
            etree.SubElement(parent, self.path.steps[-1]).set(self.attr, item)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: XMLObject, owner: type) -> list[str]: ...
    def __get__(self, obj: XMLObject | None, owner: type) -> Self | list[str]:
        if obj is None:
            return self
        return [v for n in self.path.find_all(obj._elem) if (v := n.get(self.attr)) is not None]

    def __set__(self, obj: XMLObject, values: Sequence[str]) -> None:
        checked = self._check(values)
        for node in self.path.find_all(obj._elem):
            remove_child(node)
        if not checked:
            return
        parent = self.path.parent().ensure(obj._elem, obj._ranks)
        for value in checked:
            node = insert_child(parent, parent.makeelement(self.path.steps[-1]), obj._ranks)
            node.set(self.attr, value)


X = TypeVar("X", bound=XMLObject)


class ChildProperty(Buildable, Generic[X]):
    """A child element viewed as its own model object (``None`` when absent).

    Assigning an object puts its element in place of the present one (or at its
    ordered place); assigning ``None`` removes the element.
    """

    def __init__(self, cls: type[X], path: str) -> None:
        self.cls = cls
        self.path = ElementPath(path)
        self.name = path

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: XMLObject, owner: type) -> X | None: ...
    def __get__(self, obj: XMLObject | None, owner: type) -> Self | X | None:
        if obj is None:
            return self
        node = self.path.find(obj._elem)
        return None if node is None else self.cls.wrap(node)

    def __set__(self, obj: XMLObject, value: X | None) -> None:
        current = self.path.find(obj._elem)
        if value is None:
            if current is not None:
                remove_child(current)
            return
        new = value.element
        if new is current:
            return
        if new.getparent() is not None:
            raise GuestXMLError(f"{self.name}: the <{new.tag}> given already belongs to a domain")
        if current is not None:
            replace_child(current, new)
            return
        parent = self.path.parent().ensure(obj._elem, obj._ranks)
        insert_child(parent, new, obj._ranks)

    def build(self, nodes: Nodes, value: Any) -> None:
        new = value.element
        if new.getparent() is not None:
            raise GuestXMLError(f"{self.name}: the <{new.tag}> given already belongs to a domain")
        built_node(nodes, self.path.steps[:-1]).append(new)
