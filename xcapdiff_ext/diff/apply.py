"""Apply RFC 5261 patch operations to a document: ``apply_patch``.

The operations run one after another on a private working tree (selectors.Document),
each seeing the result of the previous one (RFC 5261 §3); the result is serialised by
hand with the exact prefixes and declarations RFC 5261 §4.2.3 asks for, re-parsed by
``xmlsafe`` (which proves it well-formed) and written out by lxml.  Every failure is
a ``PatchError`` subclass naming the operation (0-based, document order) and its sel.

Choices where RFC 5261 is silent (see also spec/NOTES.md §2):
- ``<add type="@a">`` of an attribute that already exists: ``invalid-attribute-value``
  (use ``<replace sel=".../@a">``); empty ``<add type="@a"/>`` sets ``a=""``.
- An invalid ``sel``/``pos``/``ws``/``type`` value, or ``pos`` together with ``type``:
  ``invalid-attribute-value`` (RFC 5261 §5.1 names these attributes for that error);
  a missing ``sel``: ``invalid-diff-format``; an unknown element in the operations'
  namespace: ``invalid-patch-directive``.
- ``namespace::p`` that is only inherited (declared on an ancestor) cannot be replaced
  or removed there; a declaration still used by its element or subtree cannot be
  removed: both ``invalid-namespace-prefix``.  Replacing or adding a declaration
  re-binds the names that use the prefix (the document text is what changes).
- Whitespace-only text added before/after the root element is dropped (document-level
  whitespace is not part of the data model); anything else but comments/PIs there is
  ``invalid-root-element-operation``.
- An added no-namespace element under a default-namespaced parent gets ``xmlns=""``
  so that it keeps its expanded name.
- Rule (2) of §4.2.3 uses the immediate parent of each inserted node as the context.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from lxml import etree

from ..errors import (
    InvalidAttributeValue,
    InvalidDiffFormat,
    InvalidEntityDeclaration,
    InvalidNamespacePrefix,
    InvalidNamespaceUri,
    InvalidNodeTypes,
    InvalidPatchDirective,
    InvalidRootElementOperation,
    InvalidWhitespaceDirective,
    PatchError,
    XmlInputError,
)
from ..xmlsafe import DEFAULT_LIMITS, Limits, parse_document
from .ops import Patch
from .selectors import (
    PI,
    XML_NS,
    Attr,
    AttrRef,
    ChildRef,
    Comment,
    Document,
    Element,
    Located,
    Node,
    NsRef,
    Selector,
    SelectorSyntaxError,
    Text,
    lxml_attributes,
    own_declarations,
    select_one,
)

__all__ = ["apply_patch"]

_OPS = ("add", "replace", "remove")
_SKIP = ("body-not-changed",)
_XML_WS = " \t\r\n"


@dataclass(frozen=True, slots=True)
class _Op:
    """One parsed operation element."""

    index: int
    kind: str
    sel: str
    selector: Selector
    element: etree._Element
    namespaces: Mapping[str | None, str]
    pos: str | None = None
    type: str | None = None
    ws: str | None = None


def apply_patch(
    document: bytes,
    patch: Patch | etree._Element | bytes,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """Apply ``patch`` to ``document`` and return the patched document.

    ``patch`` is a ``Patch``, an element whose children are the operations (an
    RFC 5261 ``<diff>``, an xcap-diff ``<d:document>``), or the bytes of such an
    element's document.  Operation elements are the children in the container's own
    namespace; ``body-not-changed`` and elements of other namespaces are skipped.
    The target's XML declaration is kept only if it had one."""
    container = _container(patch, limits)
    tree = parse_document(document, where="target document", limits=limits)
    doc = Document.from_lxml(tree)
    for op in _operations(container):
        _apply(doc, op)
    return _serialise(doc, tree, document, limits)


# ------------------------------------------------------------------ the diff side


def _container(patch: Patch | etree._Element | bytes, limits: Limits) -> etree._Element:
    if isinstance(patch, Patch):
        try:
            patch = patch.to_xml()
        except (ValueError, XmlInputError) as err:
            raise InvalidDiffFormat(0, None, f"cannot render the patch: {err}") from None
    if isinstance(patch, (bytes, bytearray, memoryview)):
        try:
            return parse_document(bytes(patch), where="patch", limits=limits).getroot()
        except XmlInputError as err:
            raise InvalidDiffFormat(0, None, str(err)) from None
    if isinstance(patch, etree._Element) and isinstance(patch.tag, str):
        return patch
    raise TypeError(f"apply_patch takes a Patch, an lxml element or bytes, not {type(patch)!r}")


def _operations(container: etree._Element) -> Iterator[_Op]:
    op_ns = etree.QName(container).namespace
    index = 0
    for child in container:
        if not isinstance(child.tag, str):
            if isinstance(child, etree._Entity):
                raise InvalidEntityDeclaration(index, None, "entity reference in the diff")
            continue
        name = etree.QName(child)
        if name.namespace != op_ns or name.localname in _SKIP:
            continue
        if name.localname not in _OPS:
            raise InvalidPatchDirective(
                index, child.get("sel"), f"unknown operation <{name.localname}>"
            )
        yield _parse_op(index, name.localname, child)
        index += 1


def _parse_op(index: int, kind: str, el: etree._Element) -> _Op:
    sel = el.get("sel")
    if sel is None:
        raise InvalidDiffFormat(index, None, f"<{kind}> without sel")
    try:
        selector = Selector.from_text(sel)
    except SelectorSyntaxError as err:
        raise InvalidAttributeValue(index, sel, str(err)) from None
    pos, type_, ws = el.get("pos"), el.get("type"), el.get("ws")
    last = selector.last
    if kind == "add":
        if pos not in (None, "before", "after", "prepend"):
            raise InvalidAttributeValue(index, sel, f"invalid pos={pos!r}")
        if type_ is not None and pos is not None:
            raise InvalidAttributeValue(index, sel, "pos is not used with type")
        if type_ is not None and not _valid_type(type_):
            raise InvalidAttributeValue(index, sel, f"invalid type={type_!r}")
        if last is not None and last.kind in ("attribute", "namespace"):
            raise InvalidAttributeValue(index, sel, "<add> cannot select an attribute or namespace")
        ws = None
    elif kind == "remove":
        if ws not in (None, "before", "after", "both"):
            raise InvalidAttributeValue(index, sel, f"invalid ws={ws!r}")
        pos = type_ = None
    else:
        pos = type_ = ws = None
    return _Op(index, kind, sel, selector, el, el.nsmap, pos, type_, ws)


def _valid_type(value: str) -> bool:
    if value.startswith("namespace::"):
        return _is_ncname(value[len("namespace::") :])
    if value.startswith("@"):
        parts = value[1:].split(":")
        return 1 <= len(parts) <= 2 and all(_is_ncname(p) for p in parts)
    return False


def _is_ncname(text: str) -> bool:
    try:
        etree.QName(text)
    except ValueError:
        return False
    return bool(text) and ":" not in text


# ------------------------------------------------------------------- operations


def _apply(doc: Document, op: _Op) -> None:
    target = select_one(doc, op.selector, op.namespaces, op_index=op.index, sel=op.sel)
    if op.kind == "add":
        if op.type is not None:
            _add_typed(target, op)
        else:
            _add_nodes(target, op)
    elif op.kind == "replace":
        _replace(target, op)
    else:
        _remove(target, op)


def _element_target(target: Located, op: _Op) -> Element:
    if isinstance(target, ChildRef) and isinstance(target.node, Element):
        return target.node
    raise InvalidNodeTypes(op.index, op.sel, "the selected node is not an element")


def _add_nodes(target: Located, op: _Op) -> None:
    if not isinstance(target, ChildRef):
        raise InvalidNodeTypes(op.index, op.sel, "cannot add children here")
    if op.pos in (None, "prepend"):
        parent: Element | Document = _element_target(target, op)
        at = 0 if op.pos == "prepend" else len(parent.children)
    else:
        parent = target.parent
        at = target.index + (1 if op.pos == "after" else 0)
    nodes = _import_content(op, parent)
    if isinstance(parent, Document):
        nodes = _document_level(nodes, op)
    _insert(parent, at, nodes)


def _document_level(nodes: list[Node], op: _Op) -> list[Node]:
    kept: list[Node] = []
    for node in nodes:
        if isinstance(node, Text) and not node.value.strip(_XML_WS):
            continue
        if not isinstance(node, (Comment, PI)):
            raise InvalidRootElementOperation(
                op.index,
                op.sel,
                "only comments and processing instructions may be added beside the root",
            )
        kept.append(node)
    return kept


def _insert(parent: Element | Document, at: int, nodes: list[Node]) -> None:
    parent.children[at:at] = nodes
    for node in nodes:
        if isinstance(node, Element):
            node.parent = parent
    _merge_text(parent, at, at + len(nodes))


def _changed(parent: Element | Document) -> None:
    """The children list of ``parent`` changed: drop its child indexes."""
    if isinstance(parent, Element):
        parent.invalidate()


def _merge_text(parent: Element | Document, lo: int = 0, hi: int | None = None) -> None:
    """Adjacent text nodes are one text node; empty ones do not exist (XPath model).

    Only ``children[lo:hi]`` and one neighbour on each side can need it (the rest
    is already merged), so only that window is rewritten."""
    children = parent.children
    lo = max(lo - 1, 0)
    hi = len(children) if hi is None else min(hi + 1, len(children))
    merged: list[Node] = []
    for node in children[lo:hi]:
        if isinstance(node, Text):
            if not node.value:
                continue
            if merged and isinstance(merged[-1], Text):
                merged[-1] = Text(merged[-1].value + node.value)
                continue
        merged.append(node)
    children[lo:hi] = merged
    _changed(parent)


def _add_typed(target: Located, op: _Op) -> None:
    element = _element_target(target, op)
    value = _text_only(op, InvalidAttributeValue)
    assert op.type is not None
    if op.type.startswith("namespace::"):
        prefix = op.type[len("namespace::") :]
        _check_binding(op, prefix, value)
        if prefix in element.decls:
            raise InvalidNamespacePrefix(
                op.index, op.sel, f"prefix {prefix!r} is already declared here"
            )
        element.decls[prefix] = value
        _rebind(element, prefix, value, op)
        return
    qname = op.type[1:]
    prefix, _, local = qname.rpartition(":")
    uri: str | None = None
    if prefix:
        uri = XML_NS if prefix == "xml" else op.namespaces.get(prefix)
        if not uri:
            raise InvalidNamespacePrefix(
                op.index, op.sel, f"prefix {prefix!r} is not declared at the operation"
            )
    if element.find_attr(uri, local) is not None:
        raise InvalidAttributeValue(
            op.index, op.sel, f"attribute {qname!r} exists already; use <replace>"
        )
    chosen = _attribute_prefix(uri, prefix or None, element, op)
    element.attrs.append(Attr(uri, local, chosen, value))
    element.invalidate_parent()


def _attribute_prefix(
    uri: str | None, diff_prefix: str | None, element: Element, op: _Op
) -> str | None:
    if uri is None:
        return None
    choice = _choose_prefix(uri, diff_prefix, element.scope(), element, attribute=True)
    if choice is not _MISSING:
        return choice
    assert diff_prefix is not None
    if diff_prefix in element.scope():
        raise InvalidNamespacePrefix(
            op.index,
            op.sel,
            f"prefix {diff_prefix!r} is bound to another URI in the target",
        )
    element.decls[diff_prefix] = uri
    return diff_prefix


def _check_binding(op: _Op, prefix: str, uri: str) -> None:
    if prefix in ("xml", "xmlns"):
        raise InvalidNamespacePrefix(op.index, op.sel, f"prefix {prefix!r} cannot be declared")
    if not uri or uri in (XML_NS, "http://www.w3.org/2000/xmlns/"):
        raise InvalidNamespaceUri(op.index, op.sel, f"invalid namespace URI {uri!r}")


def _rebind(element: Element, prefix: str, uri: str, op: _Op) -> None:
    """Give every name using ``prefix`` under ``element``'s declaration the new URI."""
    stack = [element]
    while stack:
        el = stack.pop()
        if el is not element and prefix in el.decls:
            continue
        el.invalidate_parent()
        if el.prefix == prefix:
            el.uri = uri
        for attr in el.attrs:
            if attr.prefix == prefix:
                attr.uri = uri
        names = [(a.uri, a.local) for a in el.attrs]
        if len(set(names)) != len(names):
            raise InvalidNamespaceUri(op.index, op.sel, "the new URI makes two attributes equal")
        stack.extend(c for c in el.children if isinstance(c, Element))


def _uses_prefix(element: Element, prefix: str) -> bool:
    stack = [element]
    while stack:
        el = stack.pop()
        if el is not element and prefix in el.decls:
            continue
        if el.prefix == prefix or any(a.prefix == prefix for a in el.attrs):
            return True
        stack.extend(c for c in el.children if isinstance(c, Element))
    return False


def _replace(target: Located, op: _Op) -> None:
    if isinstance(target, AttrRef):
        target.attr.value = _text_only(op, InvalidNodeTypes)
        target.element.invalidate_parent()
        return
    if isinstance(target, NsRef):
        uri = _text_only(op, InvalidNodeTypes)
        if target.prefix not in target.element.decls:
            raise InvalidNamespacePrefix(
                op.index, op.sel, "the namespace is not declared on this element"
            )
        _check_binding(op, target.prefix, uri)
        target.element.decls[target.prefix] = uri
        _rebind(target.element, target.prefix, uri, op)
        return
    node, parent = target.node, target.parent
    if isinstance(node, Text):
        node.value = _text_only(op, InvalidNodeTypes)
        at = target.index
        _merge_text(parent, at, at + 1)
        return
    nodes = _import_content(op, parent)
    if len(nodes) != 1 or type(nodes[0]) is not type(node):
        raise InvalidNodeTypes(
            op.index,
            op.sel,
            f"<replace> of a {type(node).__name__.lower()} needs exactly one node of that type",
        )
    at = target.index
    del parent.children[at]
    _changed(parent)
    _insert(parent, at, nodes)


def _remove(target: Located, op: _Op) -> None:
    if op.ws is not None and (not isinstance(target, ChildRef) or isinstance(target.node, Text)):
        raise InvalidWhitespaceDirective(
            op.index, op.sel, "ws applies to elements, comments and PIs only"
        )
    if isinstance(target, AttrRef):
        target.element.attrs.remove(target.attr)
        target.element.invalidate_parent()
        return
    if isinstance(target, NsRef):
        element = target.element
        if target.prefix not in element.decls:
            raise InvalidNamespacePrefix(
                op.index, op.sel, "the namespace is not declared on this element"
            )
        if _uses_prefix(element, target.prefix):
            raise InvalidNamespacePrefix(
                op.index, op.sel, f"prefix {target.prefix!r} is still in use"
            )
        del element.decls[target.prefix]
        return
    node, parent = target.node, target.parent
    if isinstance(node, Element) and isinstance(parent, Document):
        raise InvalidRootElementOperation(op.index, op.sel, "the root element cannot be removed")
    at = target.index
    remove = {at}
    if op.ws in ("before", "both"):
        remove.add(_whitespace_sibling(parent, at - 1, op))
    if op.ws in ("after", "both"):
        remove.add(_whitespace_sibling(parent, at + 1, op))
    for i in sorted(remove, reverse=True):
        del parent.children[i]
    _changed(parent)
    low = min(remove)
    _merge_text(parent, low, low)


def _whitespace_sibling(parent: Element | Document, at: int, op: _Op) -> int:
    if 0 <= at < len(parent.children):
        sibling = parent.children[at]
        if isinstance(sibling, Text) and not sibling.value.strip(_XML_WS):
            return at
    raise InvalidWhitespaceDirective(
        op.index, op.sel, "the adjacent sibling is not a whitespace-only text node"
    )


def _text_only(op: _Op, error: type[PatchError]) -> str:
    """The text content of an operation that takes a value (attribute, namespace, text)."""
    for child in op.element:
        raise error(op.index, op.sel, f"expected text only, found {_kind(child)}")
    return op.element.text or ""


def _kind(node: etree._Element) -> str:
    if isinstance(node, etree._Comment):
        return "a comment"
    if isinstance(node, etree._ProcessingInstruction):
        return "a processing instruction"
    return "an element"


# ------------------------------------------------------- content (RFC 5261 §4.2.3)


class _Missing(enum.Enum):
    """No prefix of the target is bound to the URI."""

    MISSING = "missing"


_MISSING = _Missing.MISSING


def _import_content(op: _Op, parent: Element | Document) -> list[Node]:
    """The op's child nodes as new target nodes, names mapped onto target prefixes."""
    scope: dict[str | None, str] = (
        parent.scope() if isinstance(parent, Element) else {"xml": XML_NS}
    )
    context = parent if isinstance(parent, Element) else None
    diff_scope = op.element.nsmap
    nodes: list[Node] = []
    if op.element.text:
        nodes.append(Text(op.element.text))
    for child in op.element:
        nodes.append(_import_node(child, diff_scope, scope, context, op))
        if child.tail:
            nodes.append(Text(child.tail))
    return nodes


def _import_node(
    node: etree._Element,
    diff_parent_scope: Mapping[str | None, str],
    scope: Mapping[str | None, str],
    context: Element | None,
    op: _Op,
) -> Node:
    if isinstance(node, etree._Comment):
        return Comment(node.text or "")
    if isinstance(node, etree._ProcessingInstruction):
        return PI(str(node.target), node.text or "")
    if not isinstance(node.tag, str):
        raise InvalidEntityDeclaration(op.index, op.sel, "entity reference in the content")
    diff_scope = node.nsmap
    decls = own_declarations(diff_scope, diff_parent_scope)
    inner = dict(scope)
    for prefix, uri in decls.items():
        if uri:
            inner[prefix] = uri
        else:
            inner.pop(prefix, None)
    name = etree.QName(node)
    el = Element(name.namespace, name.localname, None, decls)
    el_prefix = _choose_prefix(name.namespace, node.prefix, inner, context, attribute=False)
    if el_prefix is _MISSING:
        if name.namespace is None:
            el.decls[None] = ""
            inner.pop(None, None)
            el_prefix = None
        else:
            el.decls[node.prefix] = name.namespace
            inner[node.prefix] = name.namespace
            el_prefix = node.prefix
    el.prefix = el_prefix
    for attr in lxml_attributes(node):
        if attr.uri is not None:
            chosen = _choose_prefix(attr.uri, attr.prefix, inner, el, attribute=True)
            if chosen is _MISSING:
                if el.decls.get(attr.prefix, attr.uri) != attr.uri:
                    raise InvalidNamespacePrefix(
                        op.index, op.sel, f"prefix {attr.prefix!r} clashes"
                    )
                el.decls[attr.prefix] = attr.uri
                inner[attr.prefix] = attr.uri
                chosen = attr.prefix
            attr.prefix = chosen
        el.attrs.append(attr)
    if node.text:
        el.children.append(Text(node.text))
    for child in node:
        new = _import_node(child, diff_scope, inner, el, op)
        if isinstance(new, Element):
            new.parent = el
        el.children.append(new)
        if child.tail:
            el.children.append(Text(child.tail))
    return el


def _choose_prefix(
    uri: str | None,
    diff_prefix: str | None,
    scope: Mapping[str | None, str],
    context: Element | None,
    *,
    attribute: bool,
) -> str | _Missing | None:
    """RFC 5261 §4.2.3: the target prefix for ``uri``, or ``_MISSING`` if none is in scope."""
    if uri is None:
        return None if attribute or not scope.get(None) else _MISSING
    candidates = [p for p, u in scope.items() if u == uri and not (attribute and p is None)]
    if not candidates:
        return _MISSING
    if diff_prefix in candidates:
        return diff_prefix
    if context is not None and context.uri == uri and context.prefix in candidates:
        return context.prefix
    ordered = sorted(candidates, key=lambda p: (p is not None, p or ""))
    if diff_prefix is None:
        return ordered[0]
    before = [p for p in ordered if p is None or p < diff_prefix]
    return before[-1] if before else ordered[0]


# ------------------------------------------------------------------ serialisation


def _serialise(doc: Document, tree: etree._ElementTree, original: bytes, limits: Limits) -> bytes:
    declared = bytes(original[:64]).lstrip(b"\xef\xbb\xbf").startswith(b"<?xml")
    standalone = tree.docinfo.standalone if declared else None
    if _lxml_can_write(tree, original):
        body = _fast_text(doc).encode("utf-8")
        data = b'<?xml version="1.0" encoding="UTF-8"?>\n' + body
    else:
        body = doc.to_text().encode("utf-8")
        data = b'<?xml version="1.0" encoding="UTF-8"?>\n' + _doctype(tree) + body
    try:
        result = parse_document(data, where="patched document", limits=limits)
    except XmlInputError as err:
        raise InvalidDiffFormat(0, None, f"the patched document is not acceptable: {err}") from None
    return bytes(
        # lxml-stubs: standalone=None (keep as parsed) is valid
        etree.tostring(result, encoding="UTF-8", xml_declaration=declared, standalone=standalone)  # type: ignore[arg-type]
    )


def _doctype(tree: etree._ElementTree) -> bytes:
    """The DOCTYPE (with internal subset) as lxml wrote it, or nothing."""
    # lxml-stubs: DocInfo.doctype is missing
    if not tree.docinfo.doctype and tree.docinfo.internalDTD is None:  # type: ignore[attr-defined]
        return b""
    full = bytes(etree.tostring(tree, encoding="UTF-8", xml_declaration=False))
    root = tree.getroot()
    tops = [
        *reversed(list(root.itersiblings(preceding=True))),
        root,
        *root.itersiblings(),
    ]
    body = b"".join(bytes(etree.tostring(n, encoding="UTF-8", with_tail=False)) for n in tops)
    if full.endswith(body):
        return full[: len(full) - len(body)]
    return str(tree.docinfo.doctype).encode("utf-8") + b"\n"  # type: ignore[attr-defined]


# Fast path: let lxml write every part of the original tree the patch left untouched.
# Only when that text is exactly what ``Document.to_text`` would give after re-parsing:
# no DTD, an ASCII-compatible encoding, and no namespace declaration below the root
# (so no subtree has redundant declarations to drop, and the root element, written
# whole, needs no inherited ones).  The original lxml tree is changed in place to the
# patched structure: removed nodes are taken out, texts set, and every node written
# by hand (new ones, comments, PIs) becomes a marker PI that is replaced in the text;
# an element whose declarations or attributes were read gets its start tag rewritten.

_MARK = "xcapdiff-splice-7f3a"
_MARK_RE = re.compile(r"<\?" + _MARK + r" ([sn])(\d+)\?>")
_START_RE = re.compile(r'<[^\s/>]+(?:\s+[^\s=/>]+\s*=\s*"[^"]*")*\s*')
_ASCII_ENCODINGS = ("UTF-8", "UTF8", "US-ASCII", "ASCII")


def _lxml_can_write(tree: etree._ElementTree, original: bytes) -> bool:
    info = tree.docinfo
    # lxml-stubs: DocInfo.doctype is missing
    if info.doctype or info.internalDTD is not None:  # type: ignore[attr-defined]
        return False
    encoding = (info.encoding or "UTF-8").upper().replace("_", "-")
    if encoding not in _ASCII_ENCODINGS and not encoding.startswith("ISO-8859-"):
        return False
    data = bytes(original)
    if _MARK.encode() in data:
        return False
    return data.count(b"xmlns") == len(tree.getroot().nsmap)


def _fast_text(doc: Document) -> str:
    hand: list[str] = []
    out: list[str] = []
    for node in doc.children:
        if isinstance(node, Element) and node.lx is not None:
            start = not node.start_untouched
            if not node.content_untouched:
                _sync(node, hand)
            text = str(etree.tostring(node.lx, encoding=str, with_tail=False))
            if start:
                text = _new_start(node) + text[_START_RE.match(text).end() :]  # type: ignore[union-attr]
            out.append(_splice(text, hand))
        else:
            _write_node(node, out)
    return "".join(out)


def _write_node(node: Node, out: list[str]) -> None:
    tmp = Document([node])
    out.append(tmp.to_text())


def _new_start(el: Element) -> str:
    """The start tag of ``el`` as ``Document.to_text`` writes it, without ``>``."""
    text = Document([Element(el.uri, el.local, el.prefix, el.decls, el.attrs)]).to_text()
    return text[: -len("/>")]


def _marker(kind: str, hand: list[str], text: str) -> etree._ProcessingInstruction:
    hand.append(text)
    return etree.ProcessingInstruction(_MARK, f"{kind}{len(hand) - 1}")


def _sync(el: Element, hand: list[str]) -> None:
    """Make ``el.lx``'s content match ``el.children`` (markers for hand-written nodes)."""
    lx = el.lx
    assert lx is not None
    children = el.children
    if not el.changed:
        # Same nodes and texts as lxml holds: only descend where something was read.
        for node in children:
            if isinstance(node, Element) and node.lx is not None:
                if node._children is not None:
                    _sync(node, hand)
                if node._attrs is not None or node._decls is not None:
                    node.lx.addprevious(_marker("s", hand, _new_start(node)))
        return
    kept = {id(c.lx) for c in children if isinstance(c, Element) and c.lx is not None}
    for child in list(lx):
        if id(child) not in kept:
            lx.remove(child)
    order = [c.lx for c in children if isinstance(c, Element) and c.lx is not None]
    if len(order) != len(lx) or any(a is not b for a, b in zip(order, lx, strict=False)):
        raise AssertionError("kept nodes out of order")
    prev: etree._Element | None = None
    pending = ""

    def flush() -> None:
        if prev is None:
            lx.text = pending or None
        else:
            prev.tail = pending or None

    for node in children:
        if isinstance(node, Text):
            pending += node.value
            continue
        flush()
        pending = ""
        if isinstance(node, Element) and node.lx is not None:
            if not node.content_untouched:
                _sync(node, hand)
            if not node.start_untouched:
                node.lx.addprevious(_marker("s", hand, _new_start(node)))
            prev = node.lx
            continue
        out: list[str] = []
        _write_node(node, out)
        mark = _marker("n", hand, "".join(out))
        if prev is None:
            lx.insert(0, mark)
        else:
            tail = prev.tail
            prev.addnext(mark)
            prev.tail = tail  # lxml < 5 moves prev's tail onto the inserted node
            mark.tail = None
        prev = mark
    flush()


def _splice(text: str, hand: list[str]) -> str:
    parts = _MARK_RE.split(text)
    out = [parts[0]]
    for i in range(1, len(parts), 3):
        kind, n, after = parts[i], int(parts[i + 1]), parts[i + 2]
        if kind == "s":
            after = after[_START_RE.match(after).end() :]  # type: ignore[union-attr]
        out.append(hand[n])
        out.append(after)
    return "".join(out)
