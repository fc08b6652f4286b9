"""RFC 5261 operations as values (STYLE §7): they compare, hash and print; no lxml objects.

``sel`` is an RFC 5261 selector in the subset of spec/NOTES.md §2, written with the
prefixes of ``Patch.namespaces`` (never a default namespace).  ``content`` is the XML
text that goes between the operation's start and end tags: mixed content for element
adds and replaces (each element carries the namespace declarations it needs, so the
bytes stand alone), or the escaped text value for attribute, namespace and text ops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, cast, overload

from lxml import etree

from ..xmlsafe import parse_fragment

__all__ = ["Add", "Patch", "PatchOp", "Position", "Remove", "Replace", "Whitespace", "text_content"]

Position = Literal["before", "after", "prepend"]
Whitespace = Literal["before", "after", "both"]
_POSITIONS = (None, "before", "after", "prepend")
_WHITESPACE = (None, "before", "after", "both")


def text_content(value: str) -> bytes:
    """Escape ``value`` as XML character data (for attribute/namespace/text ops).

    Carriage returns and tabs are written as character references so that they
    survive the XML end-of-line handling of whoever parses the patch."""
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("\r", "&#13;").encode("utf-8")


@dataclass(frozen=True, slots=True)
class Add:
    """RFC 5261 §4.3 ``<add sel pos type>``."""

    sel: str
    content: bytes = b""
    pos: Position | None = None
    type: str | None = None

    def __post_init__(self) -> None:
        if not self.sel:
            raise ValueError("Add needs a sel")
        if self.pos not in _POSITIONS:
            raise ValueError(f"Add pos must be one of before/after/prepend, not {self.pos!r}")
        if self.type is not None and self.pos is not None:
            raise ValueError("Add takes pos or type, not both")
        if self.type is not None and not (
            self.type.startswith("@") or self.type.startswith("namespace::")
        ):
            raise ValueError(f"Add type must be @name or namespace::prefix, not {self.type!r}")


@dataclass(frozen=True, slots=True)
class Replace:
    """RFC 5261 §4.4 ``<replace sel>``."""

    sel: str
    content: bytes = b""

    def __post_init__(self) -> None:
        if not self.sel:
            raise ValueError("Replace needs a sel")


@dataclass(frozen=True, slots=True)
class Remove:
    """RFC 5261 §4.5 ``<remove sel ws>``."""

    sel: str
    ws: Whitespace | None = None

    def __post_init__(self) -> None:
        if not self.sel:
            raise ValueError("Remove needs a sel")
        if self.ws not in _WHITESPACE:
            raise ValueError(f"Remove ws must be before/after/both, not {self.ws!r}")


PatchOp = Add | Replace | Remove

_TAGS = {Add: "add", Replace: "replace", Remove: "remove"}


@dataclass(frozen=True, slots=True)
class Patch(Sequence[PatchOp]):
    """Operations applied in order, each to the result of the previous (RFC 5261 §3).

    ``namespaces`` holds every (prefix, URI) binding the selectors use; renderers
    declare them on the element that contains the operations."""

    ops: tuple[PatchOp, ...] = ()
    namespaces: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for prefix, uri in self.namespaces:
            if not prefix or prefix == "xml" or not uri:
                raise ValueError(f"selector prefixes must be named and bound: {prefix!r}={uri!r}")

    def __len__(self) -> int:
        return len(self.ops)

    @overload
    def __getitem__(self, index: int) -> PatchOp: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[PatchOp]: ...
    def __getitem__(self, index: int | slice) -> PatchOp | Sequence[PatchOp]:
        return self.ops[index]

    def __iter__(self) -> Iterator[PatchOp]:
        return iter(self.ops)

    def render_into(self, container: etree._Element, op_namespace: str | None) -> None:
        """Append the operations to ``container`` as ``{op_namespace}add`` etc.

        The selector prefixes are declared on ``container`` (it must be freshly built
        and must not bind them differently); the op elements use whatever prefix the
        container already has for ``op_namespace``."""
        declared = container.nsmap
        missing = {p: u for p, u in self.namespaces if declared.get(p) != u}
        if missing:  # absent, or bound to another URI (lxml cannot add declarations later)
            raise ValueError(f"container must declare {missing} (use Patch.nsmap)")
        qual = (lambda t: f"{{{op_namespace}}}{t}") if op_namespace else (lambda t: t)
        for op in self.ops:
            el = etree.SubElement(container, qual(_TAGS[type(op)]))
            el.set("sel", op.sel)
            if isinstance(op, Add):
                if op.pos is not None:
                    el.set("pos", op.pos)
                if op.type is not None:
                    el.set("type", op.type)
            if isinstance(op, Remove):
                if op.ws is not None:
                    el.set("ws", op.ws)
            elif op.content:
                _fill(el, op.content, self.nsmap)

    @property
    def nsmap(self) -> dict[str, str]:
        """The declarations ``render_into`` needs on its container."""
        return dict(self.namespaces)

    def to_xml(self, root_tag: str = "diff") -> bytes:
        """A stand-alone RFC 5261 example-style ``<diff>`` document holding the ops."""
        root = etree.Element(root_tag, nsmap=self.nsmap)
        self.render_into(root, None)
        return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _fill(el: etree._Element, content: bytes, namespaces: dict[str, str]) -> None:
    """Put ``content`` into ``el`` keeping its namespace declarations as written.

    Content may use the selector prefixes (``namespaces``, declared on the container);
    every other declaration it writes is kept on the element that writes it.  lxml
    rewrites prefixes by URI whenever a node moves between trees (a content element's
    ``xmlns="urn:x"`` would become the container's ``x:``), which changes what a
    patcher must produce where that URI is not in scope (e.g. replacing the root), so
    each node is built in place instead of moved."""
    # a fresh copy, so widening its key type to the nsmap form is safe
    scope = cast("dict[str | None, str]", dict(namespaces))
    wrapper = parse_fragment(
        content,
        # lxml-stubs: nsmap keys may be None (the default namespace)
        etree.Element("w", nsmap=scope),  # type: ignore[arg-type]
        where="patch content",
    )
    el.text = wrapper.text
    for node in wrapper:
        _copy_into(el, node, scope)


def _copy_into(parent: etree._Element, node: etree._Element, scope: dict[str | None, str]) -> None:
    if isinstance(node, etree._Comment):
        copy: etree._Element = etree.Comment(node.text)
        parent.append(copy)
    elif isinstance(node, etree._ProcessingInstruction):
        # lxml-stubs: a PI's text may be None
        copy = etree.ProcessingInstruction(node.target, node.text)  # type: ignore[arg-type]
        parent.append(copy)
    else:
        nsmap = node.nsmap
        own = {p: u for p, u in nsmap.items() if scope.get(p) != u}
        copy = etree.SubElement(parent, node.tag, nsmap=own)  # type: ignore[arg-type]
        for name, value in node.items():
            copy.set(name, value)
        copy.text = node.text
        for child in node:
            _copy_into(copy, child, nsmap)
    copy.tail = node.tail
