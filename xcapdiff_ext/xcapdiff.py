"""RFC 5874 xcap-diff documents as values, with a builder, a strict parser and the
one-change recipe of spec/NOTES.md §6 (``document_entry``).

The xcap-diff namespace is always written with the prefix ``d`` and no default
namespace is ever put in scope, because a default namespace changes the meaning of
unprefixed names in patch selectors and patch content (NOTES trap 1).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from lxml import etree

from .diff.ops import Add, Patch, PatchOp, Remove, Replace
from .errors import XcapDiffError, XmlInputError
from .xmlsafe import DEFAULT_LIMITS, Limits, c14n, parse_document, parse_fragment

__all__ = [
    "MEDIA_TYPE",
    "XCAP_DIFF_NS",
    "AttributeEntry",
    "DocumentElement",
    "DocumentEntry",
    "ElementEntry",
    "Entry",
    "InvalidXcapDiff",
    "XcapDiff",
    "build_xcap_diff",
    "document_elements",
    "document_entry",
    "parse_xcap_diff",
]

XCAP_DIFF_NS = "urn:ietf:params:xml:ns:xcap-diff"
MEDIA_TYPE = "application/xcap-diff+xml"

_D = f"{{{XCAP_DIFF_NS}}}"
_OPS = {f"{_D}add": "add", f"{_D}replace": "replace", f"{_D}remove": "remove"}
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
# XML 1.0 Char production: what an attribute value or text node can hold at all.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class InvalidXcapDiff(XmlInputError):
    """Well-formed XML that is not a usable xcap-diff document (RFC 5874 §3, §4)."""


def _check_text(what: str, value: str) -> None:
    if _NOT_XML_CHAR.search(value):
        raise ValueError(f"{what} contains a character XML 1.0 cannot carry: {value!r}")


def _check_relative(what: str, sel: str) -> None:
    """``sel`` is a relative-path reference against xcap-root (NOTES trap 3)."""
    if not isinstance(sel, str) or not sel:
        raise ValueError(f"{what} sel must be a non-empty string")
    _check_text(f"{what} sel", sel)
    if sel.startswith("/") or ":" in sel.split("/", 1)[0]:
        raise ValueError(f"{what} sel must be a path relative to xcap-root: {sel!r}")


def _check_etag(name: str, etag: str | None) -> None:
    if etag is None:
        return
    if not isinstance(etag, str) or not etag:
        raise ValueError(f"{name} must be a non-empty string or None, not {etag!r}")
    _check_text(name, etag)


@dataclass(frozen=True, slots=True)
class DocumentEntry:
    """``<d:document>``: one change of one XCAP document (RFC 5874 §3, NOTES §1 table).

    ``previous_etag`` only = removed; ``new_etag`` only = created/exists; both = changed,
    with a ``patch`` from version previous to version new, ``body_not_changed``, or
    neither (the client re-fetches).  ETags are written without HTTP quotes."""

    sel: str
    previous_etag: str | None
    new_etag: str | None
    patch: Patch | None = None
    body_not_changed: bool = False

    def __post_init__(self) -> None:
        _check_relative("document", self.sel)
        _check_etag("previous_etag", self.previous_etag)
        _check_etag("new_etag", self.new_etag)
        patch, at = self.patch, f"document {self.sel!r}"
        if self.previous_etag is None and self.new_etag is None:
            raise ValueError(f"{at}: needs previous_etag, new_etag or both")
        if patch is not None and not isinstance(patch, Patch):
            raise TypeError(f"{at}: patch must be a Patch or None")
        if patch is not None and self.body_not_changed:
            raise ValueError(f"{at}: patch and body-not-changed exclude each other")
        if patch is not None and not patch.ops:
            raise ValueError(f"{at}: an empty patch is body_not_changed=True")
        both = self.previous_etag is not None and self.new_etag is not None
        if (patch is not None or self.body_not_changed) and not both:
            raise ValueError(f"{at}: patch or body-not-changed needs both etags")


@dataclass(frozen=True, slots=True)
class ElementEntry:
    """``<d:element>``: current state of one XCAP element (component state, not a patch).

    ``sel`` is an XCAP node-selector URI relative to xcap-root.  ``content`` is the
    element serialized on its own (UTF-8, with the namespace declarations it needs, no
    XML declaration); ``None`` writes an empty ``<d:element>`` (exists but not shown)."""

    sel: str
    exists: bool = True
    content: bytes | None = None

    def __post_init__(self) -> None:
        _check_relative("element", self.sel)
        if self.content is not None:
            if not isinstance(self.content, bytes):
                raise TypeError(f"element {self.sel!r}: content must be bytes or None")
            head, at = self.content.lstrip()[:2], f"element {self.sel!r}"
            if not head.startswith(b"<") or head in (b"<?", b"<!"):
                raise ValueError(f"{at}: content must be one serialized element")
            if not self.exists:
                raise ValueError(f"{at}: exists=False carries no content")


@dataclass(frozen=True, slots=True)
class AttributeEntry:
    """``<d:attribute>``: current value of one XCAP attribute; ``exists=False`` = removed.

    An existing attribute always has a string value (``None`` is normalised to ``""``)."""

    sel: str
    exists: bool = True
    value: str | None = None

    def __post_init__(self) -> None:
        _check_relative("attribute", self.sel)
        if not self.exists and self.value is not None:
            raise ValueError(f"attribute {self.sel!r}: exists=False carries no value")
        if self.exists and self.value is None:
            object.__setattr__(self, "value", "")
        if self.value is not None:
            _check_text(f"attribute {self.sel!r} value", self.value)


Entry = DocumentEntry | ElementEntry | AttributeEntry


@dataclass(frozen=True, slots=True)
class XcapDiff:
    """One xcap-diff document: entries in document order, all relative to ``xcap_root``
    (an absolute http(s) URI, normalised to end with ``/``: NOTES trap 3)."""

    xcap_root: str
    entries: tuple[Entry, ...] = ()

    def __post_init__(self) -> None:
        root = self.xcap_root
        if not isinstance(root, str):
            raise TypeError("xcap_root must be a string")
        _check_text("xcap_root", root)
        parts = urlsplit(root)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ValueError(f"xcap_root must be an absolute http(s) URI, not {root!r}")
        if parts.query or parts.fragment or any(c.isspace() for c in root):
            raise ValueError(f"xcap_root: no query, fragment or spaces: {root!r}")
        if not root.endswith("/"):
            object.__setattr__(self, "xcap_root", root + "/")
        entries = tuple(self.entries)
        for entry in entries:
            if not isinstance(entry, (DocumentEntry, ElementEntry, AttributeEntry)):
                raise TypeError(f"not an xcap-diff entry: {entry!r}")
        object.__setattr__(self, "entries", entries)


# --------------------------------------------------------------------------- build


def build_xcap_diff(diff: XcapDiff) -> bytes:
    """Serialize ``diff`` (UTF-8, XML declaration, prefix ``d``, no added whitespace).

    Raises ``ValueError`` when a patch binds ``d`` to another namespace or a piece of
    content is not well-formed (``MalformedXml`` is a ``ValueError``)."""
    root = etree.Element(f"{_D}xcap-diff", nsmap={"d": XCAP_DIFF_NS})
    root.set("xcap-root", diff.xcap_root)
    for entry in diff.entries:
        if isinstance(entry, DocumentEntry):
            _build_document(root, entry)
        elif isinstance(entry, ElementEntry):
            el = etree.SubElement(root, f"{_D}element")
            el.set("sel", entry.sel)
            if not entry.exists:
                el.set("exists", "false")
            if entry.content is not None:
                tree = parse_document(entry.content, where=f"element {entry.sel} content")
                content = tree.getroot()
                if content.getprevious() is not None or content.getnext() is not None:
                    raise ValueError(f"element {entry.sel!r}: content must be one element only")
                el.append(content)
        else:
            el = etree.SubElement(root, f"{_D}attribute")
            el.set("sel", entry.sel)
            if not entry.exists:
                el.set("exists", "false")
            elif entry.value:
                el.text = entry.value
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _build_document(root: etree._Element, entry: DocumentEntry) -> None:
    nsmap = {"d": XCAP_DIFF_NS}
    if entry.patch is not None:
        bound = entry.patch.nsmap
        if bound.get("d", XCAP_DIFF_NS) != XCAP_DIFF_NS:
            raise ValueError(
                f"document {entry.sel!r}: the patch binds prefix 'd' to {bound['d']!r}; "
                "'d' is reserved for the xcap-diff namespace"
            )
        nsmap.update(bound)
    el = etree.SubElement(root, f"{_D}document", nsmap=nsmap)
    el.set("sel", entry.sel)
    if entry.previous_etag is not None:
        el.set("previous-etag", entry.previous_etag)
    if entry.new_etag is not None:
        el.set("new-etag", entry.new_etag)
    if entry.body_not_changed:
        etree.SubElement(el, f"{_D}body-not-changed")
    elif entry.patch is not None:
        entry.patch.render_into(el, XCAP_DIFF_NS)


# --------------------------------------------------------------------------- parse


@dataclass(frozen=True, slots=True)
class DocumentElement:
    """A raw ``<d:document>`` for appliers that take the operations as XML (the element
    keeps every namespace declaration in scope, including a default namespace)."""

    sel: str
    previous_etag: str | None
    new_etag: str | None
    element: etree._Element


def _fail(where: str, node: etree._Element, detail: str) -> InvalidXcapDiff:
    # lxml-stubs: sourceline is untyped (declared as ...)
    return InvalidXcapDiff(where, detail, node.sourceline)  # type: ignore[arg-type]


def _is_node(node: etree._Element) -> bool:
    """True for elements; comments and PIs are skipped everywhere in xcap-diff."""
    return isinstance(node.tag, str)


def _check_no_text(where: str, el: etree._Element, what: str) -> None:
    texts = [el.text] + [child.tail for child in el]
    if any(t and t.strip() for t in texts):
        raise _fail(where, el, f"text is not allowed inside {what}")


def _scan(data: bytes, limits: Limits, where: str) -> tuple[str, list[etree._Element]]:
    """Parse and check the frame: root, xcap-root, the order of children."""
    root = parse_document(data, where=where, limits=limits).getroot()
    if root.tag != f"{_D}xcap-diff":
        raise _fail(where, root, f"root must be {_D}xcap-diff, not {root.tag}")
    xcap_root = root.get("xcap-root")
    if xcap_root is None:
        raise _fail(where, root, "<xcap-diff> needs an xcap-root attribute")
    _check_no_text(where, root, "<xcap-diff>")
    entries: list[etree._Element] = []
    extension_seen = False
    for child in root:
        if not _is_node(child):
            continue
        ns = etree.QName(child).namespace
        if ns == XCAP_DIFF_NS:
            if child.tag not in (f"{_D}document", f"{_D}element", f"{_D}attribute"):
                raise _fail(where, child, f"unknown xcap-diff element {child.tag}")
            if extension_seen:
                raise _fail(where, child, f"{child.tag} after an extension element")
            if child.get("sel") is None:
                raise _fail(where, child, f"{child.tag} needs a sel attribute")
            entries.append(child)
        elif ns is None:
            raise _fail(where, child, f"element <{child.tag}> has no namespace")
        else:
            extension_seen = True  # RFC 5874 §4: receivers ignore unknown extensions
    return xcap_root, entries


def _document_children(where: str, el: etree._Element) -> tuple[list[etree._Element], bool]:
    """The operation elements of a ``<d:document>`` and whether it says body-not-changed."""
    _check_no_text(where, el, "<document>")
    ops: list[etree._Element] = []
    body_not_changed = False
    others = 0
    for child in el:
        if not _is_node(child):
            continue
        if child.tag in _OPS:
            ops.append(child)
        elif child.tag == f"{_D}body-not-changed":
            if body_not_changed:
                raise _fail(where, child, "<body-not-changed> appears twice")
            if len(child) or (child.text and child.text.strip()):
                raise _fail(where, child, "<body-not-changed> must be empty")
            body_not_changed = True
        elif etree.QName(child).namespace in (XCAP_DIFF_NS, None):
            raise _fail(where, child, f"unexpected element {child.tag} in <document>")
        else:
            others += 1
    if body_not_changed and (ops or others):
        raise _fail(where, el, "<body-not-changed> excludes operations, extensions")
    return ops, body_not_changed


def document_elements(
    data: bytes, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[DocumentElement, ...]:
    """Every ``<d:document>`` of an xcap-diff, raw, in document order (a chain for one
    ``sel`` must be applied in this order).  Checks the same frame as ``parse_xcap_diff``
    but keeps the operations as lxml elements, so a default namespace in scope stays
    meaningful to an RFC 5261 applier.  Raises ``InvalidXcapDiff`` / ``XmlInputError``."""
    where = "xcap-diff"
    _, entries = _scan(data, limits, where)
    out = []
    for el in entries:
        if el.tag != f"{_D}document":
            continue
        _document_children(where, el)
        sel = el.get("sel", "")
        out.append(DocumentElement(sel, el.get("previous-etag"), el.get("new-etag"), el))
    return tuple(out)


def parse_xcap_diff(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> XcapDiff:
    """Parse an xcap-diff document strictly (RFC 5874 §4 schema rules plus the value
    invariants of this module).  Unknown elements in other namespaces are ignored.

    Raises ``InvalidXcapDiff`` (or another ``XmlInputError``) naming the line; also
    when a patch relies on a default namespace, which a ``Patch`` cannot express (use
    ``document_elements`` to apply such a document raw)."""
    where = "xcap-diff"
    xcap_root, elements = _scan(data, limits, where)
    entries: list[Entry] = []
    for el in elements:
        try:
            entries.append(_entry(where, el))
        except (ValueError, TypeError) as err:
            if isinstance(err, XmlInputError):
                raise
            raise _fail(where, el, str(err)) from err
    try:
        return XcapDiff(xcap_root, tuple(entries))
    except (ValueError, TypeError) as err:
        raise InvalidXcapDiff(where, str(err)) from err


def _exists(where: str, el: etree._Element) -> bool:
    raw = el.get("exists")
    if raw is None:
        return True
    value = _BOOLEANS.get(raw.strip())
    if value is None:
        raise _fail(where, el, f"exists must be true/false/1/0, not {raw!r}")
    return value


def _entry(where: str, el: etree._Element) -> Entry:
    sel = el.get("sel")
    assert sel is not None  # checked by _scan
    if el.tag == f"{_D}document":
        ops, body_not_changed = _document_children(where, el)
        prev, new = el.get("previous-etag"), el.get("new-etag")
        patch = _patch(where, ops) if ops else None
        return DocumentEntry(sel, prev, new, patch, body_not_changed)
    exists = _exists(where, el)
    if el.tag == f"{_D}element":
        _check_no_text(where, el, "<element>")
        children = [child for child in el if _is_node(child)]
        if len(children) > 1:
            raise _fail(where, el, "<element> holds at most one element")
        content = None
        if children:
            content = etree.tostring(
                copy.deepcopy(children[0]),
                encoding="UTF-8",
                xml_declaration=False,
                with_tail=False,
            )
        return ElementEntry(sel, exists, content)
    if any(_is_node(child) for child in el):
        raise _fail(where, el, "<attribute> holds text only")
    value = (el.text or "") + "".join(child.tail or "" for child in el)
    if not exists:
        if value.strip():
            raise _fail(where, el, "<attribute exists='false'> must be empty")
        return AttributeEntry(sel, False, None)
    return AttributeEntry(sel, True, value)


# RFC 5261 selector scan: which names in sel/type would change meaning under a default
# namespace.  String literals are blanked first; '@name', 'namespace::p' and function
# names (followed by '(') are not element names.
_LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"")
_NAME = re.compile(r"(@|namespace::)?([^\W\d][\w.\-]*(?::[^\W\d][\w.\-]*)?)(\s*\()?")


def _selector_names(sel: str) -> tuple[set[str], bool]:
    """(prefixes used, whether an unprefixed element name occurs)."""
    prefixes: set[str] = set()
    unprefixed = False
    for match in _NAME.finditer(_LITERAL.sub("''", sel)):
        axis, name, call = match.groups()
        if call or axis == "namespace::":
            continue
        if ":" in name:
            prefixes.add(name.split(":", 1)[0])
        elif axis is None:
            unprefixed = True
    return prefixes, unprefixed


def _op_content(op: etree._Element) -> bytes:
    """The exact bytes between the op's start and end tags: declarations written inside
    the content stay, declarations inherited from the xcap-diff stay outside (they are
    carried by ``Patch.namespaces``), as RFC 5261 §4.2.3 distinguishes them."""
    text = etree.tostring(op, encoding="UTF-8", xml_declaration=False, with_tail=False)
    end_of_start = text.index(b">")  # libxml2 escapes '>' inside attribute values
    if text[end_of_start - 1 : end_of_start] == b"/":
        return b""
    return text[end_of_start + 1 : text.rindex(b"</")]


def _signature(root: etree._Element) -> list[tuple[object, ...]]:
    sig: list[tuple[object, ...]] = [(root.text,)]
    for node in root.iterdescendants():
        attrs = tuple(sorted(node.attrib.items())) if _is_node(node) else ()
        sig.append((node.tag, attrs, node.text, node.tail))
    return sig


def _patch(where: str, ops: list[etree._Element]) -> Patch:
    namespaces: dict[str, str] = {}
    values: list[PatchOp] = []
    for index, op in enumerate(ops, 1):
        kind = _OPS[op.tag]
        sel = op.get("sel")
        if not sel:
            raise _fail(where, op, f"<{kind}> #{index} needs a sel attribute")
        op_type = op.get("type")
        prefixes, unprefixed = _selector_names(sel)
        if op_type is not None:
            prefixes |= _selector_names(op_type)[0]
        default = op.nsmap.get(None)
        if default and unprefixed:
            raise _fail(
                where,
                op,
                f"<{kind} sel={sel!r}>: the default namespace {default!r} is in scope, so "
                "its unprefixed names mean that namespace (RFC 5261 §4.2.1, NOTES trap 1); "
                "a Patch cannot express this (apply it raw via document_elements)",
            )
        uses_xcap_diff = any(
            etree.QName(node).namespace == XCAP_DIFF_NS
            or any(etree.QName(a).namespace == XCAP_DIFF_NS for a in node.attrib)
            for node in op.iterdescendants()
            if _is_node(node)
        )
        for prefix, uri in op.nsmap.items():
            if prefix is None:
                continue
            if uri == XCAP_DIFF_NS and prefix not in prefixes and not uses_xcap_diff:
                continue
            if namespaces.setdefault(prefix, uri) != uri:
                raise _fail(
                    where,
                    op,
                    f"prefix {prefix!r} is bound to two namespaces in one <document>",
                )
        if kind == "remove":
            if len(op) or (op.text and op.text.strip()):
                raise _fail(where, op, f"<remove sel={sel!r}> must be empty")
            values.append(Remove(sel, op.get("ws")))  # type: ignore[arg-type]
            continue
        content = _op_content(op)
        if kind == "add":
            values.append(Add(sel, content, op.get("pos"), op_type))  # type: ignore[arg-type]
        else:
            values.append(Replace(sel, content))
    patch = Patch(tuple(values), tuple(sorted(namespaces.items())))
    _check_self_contained(where, ops, patch)
    return patch


def _check_self_contained(where: str, ops: list[etree._Element], patch: Patch) -> None:
    """Each op's content, parsed under only ``patch.namespaces``, must mean what it meant
    in the xcap-diff (fails when it inherits a default namespace: NOTES trap 1)."""
    for op, value in zip(ops, patch.ops, strict=True):
        if isinstance(value, Remove) or not value.content:
            continue
        wrapper = etree.Element("wrapper", nsmap=patch.nsmap)
        try:
            reparsed = parse_fragment(value.content, wrapper, where=where)
        except XmlInputError as err:
            raise _fail(where, op, f"patch content cannot stand alone: {err.detail}") from err
        if _signature(reparsed) != _signature(op):
            raise _fail(
                where,
                op,
                f"content of <{etree.QName(op).localname} sel={value.sel!r}> relies on the "
                f"default namespace {op.nsmap.get(None)!r} of the xcap-diff document "
                "(NOTES trap 1); a Patch cannot express this",
            )


# --------------------------------------------------------------------------- recipe


def document_entry(
    sel: str,
    old: bytes | None,
    new: bytes | None,
    previous_etag: str | None,
    new_etag: str | None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[DocumentEntry | None, str | None]:
    """The ``<d:document>`` for one change of one document (NOTES §6), and why it has no
    patch when it has none.

    Created (``old`` None) → ``new_etag`` only; deleted (``new`` None) → ``previous_etag``
    only; same etag → ``(None, "etag unchanged")``; same C14N → body-not-changed;
    otherwise a patch that has been applied to ``old`` and gave ``new`` (C14N-equal), as
    it will be serialized.  Any failure gives both etags without a patch plus the reason;
    never a wrong patch.  Raises ``ValueError`` only for missing etags (caller's bug)."""
    if old is None and new is None:
        return None, "no document before or after the change"
    if old is None:
        return DocumentEntry(sel, None, new_etag), None
    if new is None:
        return DocumentEntry(sel, previous_etag, None), None
    if previous_etag is None or new_etag is None:
        raise ValueError(f"document {sel!r}: a modification needs both etags")
    if previous_etag == new_etag:
        return None, "etag unchanged"
    fallback = DocumentEntry(sel, previous_etag, new_etag)
    try:
        old_tree = parse_document(old, where=f"{sel} (old)", limits=limits)
        old_c14n = c14n(old_tree)
    except XcapDiffError as err:
        return fallback, f"old document: {type(err).__name__}: {err}"
    try:
        new_tree = parse_document(new, where=f"{sel} (new)", limits=limits)
        new_c14n = c14n(new_tree)
    except XcapDiffError as err:
        return fallback, f"new document: {type(err).__name__}: {err}"
    if old_c14n == new_c14n:
        return DocumentEntry(sel, previous_etag, new_etag, body_not_changed=True), None

    from .diff.apply import apply_patch
    from .diff.engine import diff_trees
    from .errors import UnpatchableChange

    try:
        # The trees parsed above (diff_trees consumes old_tree as its working copy).
        patch = diff_trees(old_tree, new_tree, old_bytes=old, new_bytes=new)
    except UnpatchableChange as err:
        return fallback, f"unpatchable: {err}"
    except XcapDiffError as err:
        return fallback, f"diff failed: {type(err).__name__}: {err}"
    if not patch.ops:
        # The documents differ (C14N), so an empty patch cannot be right.
        return fallback, "self-check mismatch: empty patch for different documents"
    entry = DocumentEntry(sel, previous_etag, new_etag, patch)
    # Self-check on the serialized form: exactly what a client will apply.
    try:
        wire = build_xcap_diff(XcapDiff("http://self-check.invalid/", (entry,)))
        (raw,) = document_elements(wire)
        result = apply_patch(old, raw.element, limits=limits)
        result_c14n = c14n(parse_document(result, where=f"{sel} (patched)", limits=limits))
    except XcapDiffError as err:  # PatchError, bad patched output
        return fallback, f"self-check failed: {type(err).__name__}: {err}"
    except ValueError as err:  # the patch could not be serialized
        return fallback, f"patch not serializable: {err}"
    if result_c14n != new_c14n:
        return fallback, "self-check mismatch"
    return entry, None
