"""Hypothesis strategies: XCAP-like documents and random edits of them.

Documents mix several namespaces (a default one included), attributes with quotes
and ampersands, whitespace runs, mixed text, comments and processing instructions
(also around the root).  Each namespace URI is bound to one prefix only; RFC 5261
§4.2.3 lets a patcher pick any prefix for a URI bound twice, which C14N would see.
Edits are applied to a parsed copy, so the pair (old, new) is always well formed.
"""

from __future__ import annotations

import copy

from hypothesis import strategies as st
from lxml import etree

NAMESPACES = {
    None: "urn:ietf:params:xml:ns:resource-lists",
    "cp": "urn:ietf:params:xml:ns:common-policy",
    "x": "urn:example:ext",
}
TAGS = [
    "{urn:ietf:params:xml:ns:resource-lists}list",
    "{urn:ietf:params:xml:ns:resource-lists}entry",
    "{urn:ietf:params:xml:ns:resource-lists}display-name",
    "{urn:ietf:params:xml:ns:common-policy}rule",
    "{urn:example:ext}note",
    "plain",
]
ATTRS = ["uri", "name", "id", "{urn:example:ext}flag", "{http://www.w3.org/XML/1998/namespace}lang"]

values = st.sampled_from(
    ["a", "b", "sip:alice@example.com", "x'y", 'q"r', "both'\"", "a&b", "<t>", "é", ""]
)
texts = st.one_of(
    st.sampled_from(["", "\n", "\n  ", "\n    ", " ", "hello", "a&b<c>", "\t", "x y"]),
    st.text(alphabet="ab \n&<>'\"é", max_size=6),
)


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> etree._Element:
    el = etree.Element(draw(st.sampled_from(TAGS)))
    for name in draw(st.lists(st.sampled_from(ATTRS), max_size=3, unique=True)):
        el.set(name, draw(values))
    el.text = draw(texts) or None
    if depth < 3:
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["el", "el", "el", "comment", "pi"]))
            if kind == "el":
                child = draw(elements(depth + 1))
            elif kind == "comment":
                child = etree.Comment(draw(st.sampled_from(["c", " note ", "x-y"])))
            else:
                child = etree.ProcessingInstruction(draw(st.sampled_from(["p", "q"])), "d")
            child.tail = draw(texts) or None
            el.append(child)
    return el


@st.composite
def documents(draw: st.DrawFn) -> etree._ElementTree:
    root = etree.Element("{urn:ietf:params:xml:ns:resource-lists}resource-lists", nsmap=NAMESPACES)
    root.text = draw(texts) or None
    for _ in range(draw(st.integers(0, 5))):
        child = draw(elements(1))
        child.tail = draw(texts) or None
        root.append(child)
    tree = root.getroottree()
    for _ in range(draw(st.integers(0, 2))):
        root.addprevious(etree.Comment(draw(st.sampled_from(["top", "head"]))))
    if draw(st.booleans()):
        root.addnext(etree.ProcessingInstruction("end", "x"))
    return tree


def _nodes(tree: etree._ElementTree) -> list[etree._Element]:
    return list(tree.getroot().iter())


@st.composite
def edits(draw: st.DrawFn, tree: etree._ElementTree) -> etree._ElementTree:
    """A copy of ``tree`` with 1..4 random edits (the kinds XCAP PUT/DELETE make, and more)."""
    tree = copy.deepcopy(tree)
    for _ in range(draw(st.integers(1, 4))):
        nodes = _nodes(tree)
        node = draw(st.sampled_from(nodes))
        op = draw(
            st.sampled_from(
                [
                    "text",
                    "tail",
                    "attr",
                    "del-attr",
                    "insert",
                    "remove",
                    "replace",
                    "move",
                    "rename",
                    "comment",
                ]
            )
        )
        parent = node.getparent()
        if op == "text" and isinstance(node.tag, str):
            node.text = draw(texts) or None
        elif op == "tail" and parent is not None:
            node.tail = draw(texts) or None
        elif op == "attr" and isinstance(node.tag, str):
            node.set(draw(st.sampled_from(ATTRS)), draw(values))
        elif op == "del-attr" and isinstance(node.tag, str) and node.attrib:
            del node.attrib[draw(st.sampled_from(sorted(node.attrib)))]
        elif op == "insert" and isinstance(node.tag, str):
            child = draw(elements(2))
            child.tail = draw(texts) or None
            node.insert(draw(st.integers(0, len(node))), child)
        elif op == "remove" and parent is not None:
            prev = node.getprevious()
            if draw(st.booleans()):  # keep the surrounding text, as XCAP DELETE does
                joined = node.tail or ""
                if prev is not None:
                    prev.tail = (prev.tail or "") + joined or None
                else:
                    parent.text = (parent.text or "") + joined or None
            parent.remove(node)
        elif op == "replace" and parent is not None:
            new = draw(elements(2))
            new.tail = node.tail
            parent.replace(node, new)
        elif op == "move" and parent is not None and len(parent) > 1:
            tail = node.tail
            parent.remove(node)
            node.tail = tail
            parent.insert(draw(st.integers(0, len(parent))), node)
        elif op == "rename" and isinstance(node.tag, str) and parent is not None:
            node.tag = draw(st.sampled_from(TAGS))
        elif op == "comment" and isinstance(node.tag, str):
            node.insert(draw(st.integers(0, len(node))), etree.Comment("new"))
    return tree


def serialize(tree: etree._ElementTree, pretty: bool = False) -> bytes:
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=pretty)


@st.composite
def document_pairs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    old = draw(documents())
    new = draw(edits(old))
    return serialize(old), serialize(new)
