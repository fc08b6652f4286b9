"""``diff_documents``: the RFC 5261 operations that turn one XML document into another.

How it works (docs/algorithm.md has the long version):

* Both documents are parsed once.  The old tree is the *working tree*: every operation
  is applied to it as soon as it is emitted, so each selector is computed against the
  document exactly as the patch consumer will see it at that operation (RFC 5261 §3:
  operations apply in order; positions shift).
* Identical head and tail runs of a child list are skipped without serializing them:
  the two byte strings share a prefix and a suffix, and libxml2 records the line of
  every start tag.  A child whose successor's start tag ends on a line before the
  first differing byte lies entirely in the shared prefix, so it is identical; the
  element whose start tag is in the prefix but whose content is not (the *spine*) is
  diffed recursively.  The tail run is found the same way from the end and verified.
  What is left (the *window*) is serialized and aligned (``align.py``).
* Gaps between aligned children become removals (taking their indentation with
  ``ws``), one insertion carrying the new nodes *and* their indentation, or text ops.
* Attributes change in place; namespace declarations change with ``namespace::``
  operations when no name in the subtree depends on them, else the element is
  replaced.  A reorder whose operations would outweigh replacing the parent is a
  ``<replace>`` of the parent.
"""

from __future__ import annotations

from itertools import islice, repeat
from types import MappingProxyType
from typing import cast

from lxml import etree

from ..errors import UnpatchableChange
from ..xmlsafe import DEFAULT_LIMITS, Limits, parse_document
from .align import KEY_ATTRIBUTES, align, longest_increasing
from .ops import Add, Patch, PatchOp, Remove, Replace, text_content

__all__ = ["diff_documents", "diff_trees"]

XML_NS = "http://www.w3.org/XML/1998/namespace"

# Readable selector prefixes for namespaces a document binds as its default.
_KNOWN_PREFIXES = MappingProxyType(
    {
        "urn:ietf:params:xml:ns:resource-lists": "rl",
        "urn:ietf:params:xml:ns:rls-services": "rs",
        "urn:ietf:params:xml:ns:common-policy": "cp",
        "urn:ietf:params:xml:ns:pres-rules": "pr",
        "urn:ietf:params:xml:ns:pidf": "pidf",
        "urn:ietf:params:xml:ns:xcap-caps": "xc",
        "urn:ietf:params:xml:ns:watcherinfo": "wi",
    }
)
# Sibling lists up to this long are counted directly instead of indexed.
_SMALL = 32
# "d" is the xcap-diff prefix of the host document (RFC 5874 examples).
_RESERVED = frozenset({"d", "xml", "xmlns"})

_Node = etree._Element  # elements, comments and PIs alike


def diff_documents(
    old: bytes, new: bytes, *, limits: Limits = DEFAULT_LIMITS, stable: bool = False
) -> Patch:
    """Operations turning ``old`` into ``new``; ``apply_patch(old, result)`` is
    Canonical-XML-equal (with comments) to ``new``.

    ``stable`` asks for selectors that survive other edits of the same document, to
    replay the change onto a later version (a rebase): a key predicate on every step
    whose element has a key attribute (``uri``, ``name``, ``id``), even when the bare
    name is unique now, and elements added at the end of their parent appended to it
    rather than placed after their left sibling.  Applied to ``old`` such a patch gives
    ``new`` up to where whitespace between elements goes.

    Raises ``XmlInputError`` subclasses for refused input and ``UnpatchableChange``
    when only the XML prolog (DOCTYPE, version, standalone) could express the change."""
    old_tree = parse_document(old, where="old document", limits=limits)
    new_tree = parse_document(new, where="new document", limits=limits)
    return diff_trees(old_tree, new_tree, old_bytes=old, new_bytes=new, stable=stable)


def diff_trees(
    old_tree: etree._ElementTree,
    new_tree: etree._ElementTree,
    *,
    old_bytes: bytes | None = None,
    new_bytes: bytes | None = None,
    stable: bool = False,
) -> Patch:
    """Tree-level twin of ``diff_documents``.  ``old_tree`` is modified (it ends up
    equal to ``new_tree``); pass the source bytes to enable the prefix/suffix skip."""
    return _Differ(old_tree, new_tree, old_bytes, new_bytes, stable=stable).run()


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    lo, step = 0, 4096
    while lo < n:
        hi = min(n, lo + step)
        if a[lo:hi] != b[lo:hi]:
            while hi - lo > 32:
                mid = (lo + hi) // 2
                if a[lo:mid] == b[lo:mid]:
                    lo = mid
                else:
                    hi = mid
            while a[lo] == b[lo]:
                lo += 1
            return lo
        lo, step = hi, step * 2
    return n


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    la, lb = len(a), len(b)
    lo, step = 0, 4096
    while lo < limit:
        hi = min(limit, lo + step)
        if a[la - hi : la - lo] != b[lb - hi : lb - lo]:
            while hi - lo > 32:
                mid = (lo + hi) // 2
                if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
                    lo = mid
                else:
                    hi = mid
            while lo < limit and a[la - lo - 1] == b[lb - lo - 1]:
                lo += 1
            return lo
        lo, step = hi, step * 2
    return limit


def _is_element(node: _Node) -> bool:
    return isinstance(node.tag, str)


def _kind(node: _Node) -> str:
    if isinstance(node.tag, str):
        return "element"
    return "comment" if isinstance(node, etree._Comment) else "pi"


def _ser(node: _Node) -> bytes:
    return etree.tostring(node, with_tail=False)


def _split(tag: str) -> tuple[str, str]:
    if tag[0] == "{":
        uri, local = tag[1:].split("}", 1)
        return uri, local
    return "", tag


def quote(value: str) -> str | None:
    """An XPath string literal for ``value``; None when it holds both quote kinds.

    Single quotes first, as in the RFC examples: inside ``sel="..."`` they need no
    escaping."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


# Windows at least this long are compared with one serialization per side.
_SPLIT_MIN = 32
_MARK = "@@xcapdiff-split-5261@@"
_MARK_BYTES = _MARK.encode("ascii")


def _same_by_split(
    o: _Node,
    n: _Node,
    w_old: list[_Node],
    w_new: list[_Node],
    before: tuple[_Node | None, _Node | None],
) -> list[bool] | None:
    """Which window pairs are identical (subtree and tail), from ONE serialization of
    each parent: a marker is appended to the text after the node before the window
    and after every window node, the parents are serialized, and the pieces between
    markers are compared.  Per-node ``tostring`` calls cost ~3 us each in call
    overhead alone; this costs one C serialization per side.  Both parents have the
    same in-scope namespaces (checked by the caller), so equal pieces mean equal
    subtrees.  The texts are restored before returning; if the marker occurs in the
    content the piece count does not match and None sends the caller per node."""
    pieces = []
    mark = _MARK
    for parent, first, nodes in ((o, before[0], w_old), (n, before[1], w_new)):
        lead = first.tail if first is not None else parent.text
        tails = [node.tail for node in nodes]
        try:
            if first is not None:
                first.tail = (lead or "") + mark
            else:
                parent.text = (lead or "") + mark
            for node, tail in zip(nodes, tails, strict=True):
                node.tail = tail + mark if tail else mark
            data = etree.tostring(parent)
        finally:
            if first is not None:
                first.tail = lead
            else:
                parent.text = lead
            for node, tail in zip(nodes, tails, strict=True):
                node.tail = tail
        split = data.split(_MARK_BYTES)
        if len(split) != len(nodes) + 2:
            return None
        pieces.append(split[1:-1])
    return [a == b for a, b in zip(pieces[0], pieces[1], strict=True)]


def _key(el: _Node) -> tuple[str, str] | None:
    """The identifying attribute of an entry: the first of uri, name, id present."""
    for attr in KEY_ATTRIBUTES:
        value = el.get(attr)
        if value is not None:
            return attr, value
    return None


def _doctype(tree: etree._ElementTree) -> tuple[str | None, ...] | None:
    # docinfo.doctype names the root element, not the DTD: read the DTD itself.
    dtd = tree.docinfo.internalDTD
    if dtd is None:
        return None
    # lxml-stubs: DTD.name, .external_id and .system_url are missing
    return (dtd.name, dtd.external_id, dtd.system_url)  # type: ignore[attr-defined]


def _stand_in(node: _Node) -> _Node:
    """What the working tree keeps of an inserted or replacing node: the engine never
    descends into it again, and later selectors only look at its kind, tag and
    attributes, so a childless copy does (a deep copy of a large subtree is costly)."""
    if isinstance(node, etree._Comment):
        return etree.Comment(node.text)
    if isinstance(node, etree._ProcessingInstruction):
        # lxml-stubs: a PI's text may be None
        return etree.ProcessingInstruction(node.target, node.text)  # type: ignore[arg-type]
    # lxml-stubs: _Attrib is not a Mapping[str, str]
    return etree.Element(node.tag, dict(node.attrib))  # type: ignore[misc]


def _declared(el: _Node) -> dict[str | None, str]:
    parent = el.getparent()
    inherited = parent.nsmap if parent is not None else {}
    return {p: u for p, u in el.nsmap.items() if inherited.get(p) != u}


class _SiblingIndex:
    """Attribute value counts among one parent's same-name element children, for
    key-predicate uniqueness checks on long child lists.

    Filled lazily per (tag, attribute) with one native XPath (name tests run in C;
    ``local-name()`` predicates are ~15x slower), then kept exact by the engine's
    mutation helpers, so a long list costs one scan, not one per operation."""

    def __init__(
        self, parent: _Node, xpaths: dict[tuple[str, str], etree.XPath] | None = None
    ) -> None:
        self.parent = parent
        # compiled name-test XPaths, shared per diff run (keyed by tag and attribute)
        self.xpaths = {} if xpaths is None else xpaths
        self.values: dict[tuple[str, str], dict[str, int]] = {}

    def _xpath(self, tag: str, attr: str) -> etree.XPath:
        compiled = self.xpaths.get((tag, attr))
        if compiled is None:
            compiled = self.xpaths[(tag, attr)] = self._compile(tag, attr)
        return compiled

    @staticmethod
    def _compile(tag: str, attr: str) -> etree.XPath:
        # Names come from parsed tags (valid NCNames); values never enter the text.
        uri, local = _split(tag)
        namespaces = {"e": uri} if uri else {}
        expr = f"e:{local}" if uri else local
        a_uri, a_local = _split(attr)
        if a_uri:
            namespaces["a"] = a_uri
        return etree.XPath(
            f"{expr}/@{'a:' if a_uri else ''}{a_local}", namespaces=namespaces, smart_strings=False
        )

    def value_count(self, tag: str, attr: str, value: str) -> int:
        counts = self.values.get((tag, attr))
        if counts is None:
            counts = {}
            for v in cast("list[str]", self._xpath(tag, attr)(self.parent)):  # .../@attr
                counts[v] = counts.get(v, 0) + 1
            self.values[(tag, attr)] = counts
        return counts.get(value, 0)

    def add(self, el: _Node, sign: int = 1) -> None:
        if not _is_element(el):
            return
        tag = el.tag
        for (t, attr), counts in self.values.items():
            if t == tag and (value := el.get(attr)) is not None:
                counts[value] = counts.get(value, 0) + sign

    def remove(self, el: _Node) -> None:
        self.add(el, -1)


class _Differ:
    def __init__(
        self,
        old_tree: etree._ElementTree,
        new_tree: etree._ElementTree,
        old: bytes | None,
        new: bytes | None,
        *,
        stable: bool = False,
    ) -> None:
        self.work, self.new = old_tree, new_tree
        self.stable = stable
        self.ops: list[PatchOp] = []
        self.prefixes: dict[str, str] = {}  # namespace URI -> selector prefix
        self.indexes: dict[_Node, _SiblingIndex] = {}
        self.same_scope: set[_Node] = set()  # working elements whose scope equals new's
        self.root_prefixes = {p for tree in (old_tree, new_tree) for p in tree.getroot().nsmap if p}
        self.xpaths: dict[tuple[str, str], etree.XPath] = {}  # sibling-index XPaths
        # Serializations of new-tree nodes (the new tree is never modified), per run.
        self.new_ser: dict[_Node, bytes] = {}
        self.line_p = 0  # no anchoring unless both byte strings are known
        if old is not None and new is not None:
            p = _common_prefix(old, new)
            s = _common_suffix(old, new, min(len(old), len(new)) - p)
            self.line_p = old.count(b"\n", 0, p) + 1
            self.line_s_old = old.count(b"\n", 0, len(old) - s) + 1
            self.line_s_new = new.count(b"\n", 0, len(new) - s) + 1
            self.end_old = old.count(b"\n") + 1
            self.end_new = new.count(b"\n") + 1
        ns = "namespace-uri()=$n and local-name()=$l"
        self.x_position = etree.XPath(f"count(preceding-sibling::*[{ns}]) + 1")
        self.x_texts_before = etree.XPath("count(preceding-sibling::text())")
        self.x_uses = etree.XPath(
            "boolean(descendant-or-self::*[namespace-uri()=$u]"
            " | descendant-or-self::*/@*[namespace-uri()=$u])"
        )

    # ------------------------------------------------------------------ driver
    def run(self) -> Patch:
        self._check_prolog()
        old_root, new_root = self.work.getroot(), self.new.getroot()
        level = (
            list(reversed(list(old_root.itersiblings(preceding=True)))),
            list(old_root.itersiblings()),
        )
        if old_root.tag != new_root.tag:
            self._replace_node(old_root, new_root, "")
        else:
            # lxml-stubs: sourceline is untyped (declared as ...)
            anchored = 0 < old_root.sourceline < self.line_p  # type: ignore[operator]
            self._diff_element(old_root, new_root, "", anchored)
        self._diff_document_level(level)
        bindings = tuple(sorted((p, u) for u, p in self.prefixes.items() if p != "xml"))
        return Patch(tuple(self.ops), bindings)

    def _check_prolog(self) -> None:
        for what, old, new in (
            ("DOCTYPE", _doctype(self.work), _doctype(self.new)),
            ("version", self.work.docinfo.xml_version, self.new.docinfo.xml_version),
            ("standalone", self.work.docinfo.standalone, self.new.docinfo.standalone),
        ):
            if old != new:
                raise UnpatchableChange(
                    f"the XML prolog changed ({what}: {old!r} -> {new!r}); "
                    "RFC 5261 cannot patch the prolog"
                )

    def _ser_new(self, node: _Node) -> bytes:
        """``_ser`` of a node of the new tree, computed once per run."""
        data = self.new_ser.get(node)
        if data is None:
            data = self.new_ser[node] = etree.tostring(node, with_tail=False)
        return data

    def _emit(self, op: PatchOp) -> None:
        self.ops.append(op)

    # --------------------------------------------------------------- selectors
    def _prefix(self, uri: str, context: _Node) -> str:
        if uri == XML_NS:
            return "xml"
        prefix = self.prefixes.get(uri)
        if prefix is not None:
            return prefix
        # Never a prefix the documents bind at their root: patch content carries the
        # document's own declarations, and a container declaration with the same prefix
        # and URI would make a renderer drop them from the content.
        taken = set(self.prefixes.values()) | _RESERVED | self.root_prefixes
        candidates = [p for p, u in context.nsmap.items() if p and u == uri]
        known = _KNOWN_PREFIXES.get(uri)
        if known:
            candidates.append(known)
        _, local = uri.rstrip("/:").rpartition(":")[0::2]
        if local[:1].isalpha() and local.replace("-", "").isalnum():
            candidates.append(local.split("-")[0][:3].lower())
        for candidate in candidates:
            if candidate not in taken and not candidate.lower().startswith("xml"):
                prefix = candidate
                break
        else:
            n = 1
            while f"ns{n}" in taken:
                n += 1
            prefix = f"ns{n}"
        self.prefixes[uri] = prefix
        return prefix

    def _qname(self, tag: str, context: _Node) -> str:
        uri, local = _split(tag)
        return f"{self._prefix(uri, context)}:{local}" if uri else local

    def _step(self, node: _Node) -> str:
        """The selector step for ``node`` among its current siblings."""
        parent = node.getparent()
        if not _is_element(node):
            # lxml's XPath takes no comment/PI context node: count in Python (rare nodes).
            before = list(node.itersiblings(preceding=True))
            if isinstance(node, etree._Comment):
                n = sum(isinstance(b, etree._Comment) for b in before) + 1
                return f"comment()[{n}]"
            # lxml-stubs: not narrowed to a PI here; a PI target is str
            target: str = node.target  # type: ignore[attr-defined]
            n = (
                sum(
                    isinstance(b, etree._ProcessingInstruction) and b.target == target
                    for b in before
                )
                + 1
            )
            return f"processing-instruction({quote(target)})[{n}]"
        name = self._qname(node.tag, node)
        if parent is None:
            return name
        tag = node.tag
        if (
            next(node.itersiblings(tag), None) is None
            and next(node.itersiblings(tag, preceding=True), None) is None
            and not (self.stable and any(k in node.attrib for k in KEY_ATTRIBUTES))
        ):
            return name  # the only one of its name: no predicate (two C-level probes)
        uri, local = _split(tag)
        # A short list: counting beats building an index.  (lxml's len() walks every
        # child, so smallness is tested by looking at most _SMALL + 1 children.)
        if parent not in self.indexes and next(islice(parent, _SMALL, None), None) is None:
            same = [c for c in parent if c.tag == tag]
            for key in self._key_order(node):
                value = cast(str, node.get(key))  # key is one of node's attributes
                literal = quote(value)
                if literal is not None and sum(c.get(key) == value for c in same) == 1:
                    return f"{name}[@{self._qname(key, node)}={literal}]"
            return f"{name}[{same.index(node) + 1}]"
        index = self._index(parent)
        for key in self._key_order(node):
            value = cast(str, node.get(key))  # key is one of node's attributes
            literal = quote(value)
            if literal is None:
                continue
            if index.value_count(node.tag, key, value) == 1:
                return f"{name}[@{self._qname(key, node)}={literal}]"
        return f"{name}[{int(cast(float, self.x_position(node, n=uri, l=local)))}]"

    @staticmethod
    def _key_order(node: _Node) -> list[str]:
        """Attributes to try as a key predicate: uri, name, id, then the others."""
        keys = [k for k in KEY_ATTRIBUTES if k in node.attrib]
        # lxml-stubs: attribute names are str, not str | bytes
        keys += [k for k in node.attrib if k not in KEY_ATTRIBUTES]  # type: ignore[misc]
        return keys

    def _index(self, parent: _Node) -> _SiblingIndex:
        index = self.indexes.get(parent)
        if index is None:
            index = self.indexes[parent] = _SiblingIndex(parent, self.xpaths)
        return index

    def _sel(self, node: _Node, parent_path: str) -> str:
        step = self._step(node)
        return f"{parent_path}/{step}" if parent_path else step

    def _text_sel(self, parent: _Node, path: str, after: _Node | None) -> str:
        """Selector of the text node that follows ``after`` (or opens ``parent``)."""
        if after is None:
            n = 1
        elif _is_element(after):
            n = int(cast(float, self.x_texts_before(after))) + 1
        else:
            n = (
                1
                + bool(parent.text)
                + sum(bool(b.tail) for b in after.itersiblings(preceding=True))
            )
        return f"{path}/text()[{n}]"

    # ---------------------------------------------------------- element level
    def _diff_element(self, o: _Node, n: _Node, parent_path: str, anchored: bool) -> None:
        path = self._sel(o, parent_path)
        if not self._diff_namespaces(o, n, path, parent_path):
            return
        self._diff_children(o, n, path, anchored)
        self._diff_attributes(o, n, parent_path)

    def _diff_namespaces(self, o: _Node, n: _Node, path: str, parent_path: str) -> bool:
        """Emit namespace:: ops; False when the element had to be replaced instead."""
        o_map = o.nsmap
        if o_map == n.nsmap:
            # Same in-scope namespaces under parents whose scopes were already found
            # equal: the declarations made here are equal too.
            parent = o.getparent()
            if (
                parent is None
                or parent in self.same_scope
                # n is at the same depth as o, so it has a parent too
                or parent.nsmap == cast(_Node, n.getparent()).nsmap
            ):
                self.same_scope.add(o)
                return True
        old_decl, new_decl = _declared(o), _declared(n)
        if old_decl == new_decl:
            return True
        changed = {
            p for p in old_decl.keys() | new_decl.keys() if old_decl.get(p) != new_decl.get(p)
        }
        expressible = (
            None not in changed
            and not any(
                self.x_uses(tree_el, u=uri)
                for p in changed
                for tree_el, uri in ((o, old_decl.get(p)), (n, new_decl.get(p)))
                if uri is not None
            )
            and not any(self._redeclared_below(el, changed) for el in (o, n))
        )
        if not expressible:
            self._replace_node(o, n, parent_path)
            return False
        for prefix in sorted(changed):  # type: ignore[type-var]
            assert prefix is not None
            if prefix not in new_decl:
                self._emit(Remove(f"{path}/namespace::{prefix}"))
            elif prefix not in old_decl:
                self._emit(Add(path, text_content(new_decl[prefix]), type=f"namespace::{prefix}"))
            else:
                self._emit(Replace(f"{path}/namespace::{prefix}", text_content(new_decl[prefix])))
        # lxml cannot change an element's declarations in place; the working tree
        # keeps the old ones, which no name below depends on (checked above).
        return True

    @staticmethod
    def _redeclared_below(el: _Node, prefixes: set[str | None]) -> bool:
        for below in el.iterdescendants():
            if _is_element(below) and any(p in _declared(below) for p in prefixes):
                return True
        return False

    def _diff_attributes(self, o: _Node, n: _Node, parent_path: str) -> None:
        if o.items() == n.items():
            return
        # lxml-stubs: _Attrib is not a Mapping[str, str]
        old_attrs: dict[str, str] = dict(o.attrib)  # type: ignore[arg-type]
        new_attrs: dict[str, str] = dict(n.attrib)  # type: ignore[arg-type]
        if old_attrs == new_attrs:
            return
        index = self.indexes.get(o.getparent())  # type: ignore[arg-type]
        for name in old_attrs:
            if name not in new_attrs:
                self._emit(Remove(f"{self._sel(o, parent_path)}/@{self._qname(name, o)}"))
                self._set_attr(o, name, None, index)
        for name, value in new_attrs.items():
            if name not in old_attrs:
                self._emit(
                    Add(
                        self._sel(o, parent_path),
                        text_content(value),
                        type=f"@{self._qname(name, n)}",
                    )
                )
                self._set_attr(o, name, value, index)
            elif old_attrs[name] != value:
                self._emit(
                    Replace(
                        f"{self._sel(o, parent_path)}/@{self._qname(name, o)}", text_content(value)
                    )
                )
                self._set_attr(o, name, value, index)

    @staticmethod
    def _set_attr(el: _Node, name: str, value: str | None, index: _SiblingIndex | None) -> None:
        if index:
            index.remove(el)
        if value is None:
            del el.attrib[name]
        else:
            el.set(name, value)
        if index:
            index.add(el)

    # ----------------------------------------------------------- child lists
    def _diff_children(self, o: _Node, n: _Node, path: str, anchored: bool) -> None:
        oc, nc = list(o), list(n)
        if not anchored and self._same_shape(oc, nc):
            if (o.text or "") != (n.text or ""):
                self._fix_text(o, path, None, oc[0] if oc else None, o.text or "", n.text or "")
            for k, y in enumerate(nc):
                x = oc[k]
                if _ser(x) != _ser(y):
                    if _is_element(x):
                        self._diff_element(x, y, path, False)
                    else:
                        x = oc[k] = self._replace_node(x, y, path)
                if (x.tail or "") != (y.tail or ""):
                    right = oc[k + 1] if k + 1 < len(oc) else None
                    self._fix_text(o, path, x, right, x.tail or "", y.tail or "")
            return
        head, spine = self._skip_head(oc, nc, anchored, (o.text or "") == (n.text or ""))
        tail = self._skip_tail(oc, nc, head + (spine is not None), anchored)
        w_old = oc[head : len(oc) - tail]
        w_new = nc[head : len(nc) - tail]
        if not w_old and not w_new and spine is None:
            lead_old = (oc[head - 1].tail if head else o.text) or ""
            lead_new = (nc[head - 1].tail if head else n.text) or ""
            if lead_old == lead_new:
                return  # nothing between the identical head and tail
        has_spine = spine is not None
        left_old = oc[head - 1] if head else None
        left_new = nc[head - 1] if head else None
        right_old = oc[len(oc) - tail] if tail else None
        changed = self._pair_by_position(o, n, w_old, w_new, has_spine, (left_old, left_new))
        if changed is not None:
            self._diff_lockstep(
                o,
                n,
                path,
                w_old,
                w_new,
                changed,
                has_spine and anchored,
                has_spine,
                (left_old, left_new, right_old),
            )
            return
        old_keys = self._classify(w_old, has_spine)
        new_keys = self._classify(w_new, has_spine)
        if self._keyed_reorder_replaces(o, n, old_keys[0], new_keys[0], path):
            return
        pairs = self._align(w_old, w_new, has_spine, old_keys, new_keys)
        if self._reorder_replaces(o, n, w_old, w_new, pairs, path):
            return
        prev_i = prev_j = -1
        for i, j, same in [*pairs, (len(w_old), len(w_new), True)]:
            if (
                i == prev_i + 1
                and j == prev_j + 1
                and i < len(w_old)
                and (left_old.tail if left_old is not None else o.text)
                == (left_new.tail if left_new is not None else n.text)
            ):
                pass  # empty gap, same text: nothing to fix (see _fix_gap)
            else:
                anchor = w_old[i] if i < len(w_old) else right_old
                self._fix_gap(
                    o,
                    n,
                    path,
                    left_old,
                    anchor,
                    w_old[prev_i + 1 : i],
                    left_new,
                    w_new[prev_j + 1 : j],
                )
            if i < len(w_old):
                if not same:
                    self._diff_element(w_old[i], w_new[j], path, anchored and spine == 0 and i == 0)
                left_old, left_new = w_old[i], w_new[j]
            prev_i, prev_j = i, j

    @staticmethod
    def _same_shape(oc: list[_Node], nc: list[_Node]) -> bool:
        """Small lists with the same tags/kinds at every position: each child pairs
        with the one at its index (the common edit inside an entry)."""
        if len(oc) != len(nc) or len(oc) > 16:
            return False
        for x, y in zip(oc, nc, strict=True):
            if x.tag != y.tag or (not _is_element(x) and type(x) is not type(y)):
                return False
            if _is_element(x) and _key(x) != _key(y):
                return False
        return True

    def _skip_head(
        self, oc: list[_Node], nc: list[_Node], anchored: bool, lead_equal: bool
    ) -> tuple[int, int | None]:
        """Length of the identical head run and whether child ``head`` is the spine.

        The lead text (``parent.text``) belongs to the first gap: when it differs,
        the head run is empty (a line-proven head implies it is equal)."""
        limit = min(len(oc), len(nc)) if lead_equal else 0
        head = 0
        if anchored and limit:
            line_p = self.line_p
            lo, hi = 1, len(oc)
            while lo < hi:  # first child whose start tag ends on or after line_p
                mid = (lo + hi) // 2
                # lxml-stubs: sourceline is untyped (declared as ...)
                if oc[mid].sourceline < line_p:  # type: ignore[operator]
                    lo = mid + 1
                else:
                    hi = mid
            head = min(lo - 1, limit)
            if head and nc[head - 1].sourceline != oc[head - 1].sourceline:
                head = 0  # not the same parse: never trust the shortcut
            if (
                head < limit
                and _is_element(oc[head])
                and oc[head].tag == nc[head].tag
                # lxml-stubs: sourceline is untyped (declared as ...)
                and oc[head].sourceline < line_p  # type: ignore[operator]
                and nc[head].sourceline < line_p  # type: ignore[operator]
            ):
                return head, head
        while (
            head < limit
            and (oc[head].tail or "") == (nc[head].tail or "")
            and _ser(oc[head]) == _ser(nc[head])
        ):
            head += 1
        return head, None

    def _skip_tail(self, oc: list[_Node], nc: list[_Node], used: int, anchored: bool) -> int:
        limit = min(len(oc), len(nc)) - used
        tail = 0
        if anchored and limit > 0:
            lo, hi = 0, limit  # largest tail whose predecessors end after the suffix start
            while lo < hi:
                mid = (lo + hi + 1) // 2
                io, jn = len(oc) - mid, len(nc) - mid
                if (
                    io >= 1
                    and jn >= 1
                    # lxml-stubs: sourceline is untyped (declared as ...)
                    and oc[io - 1].sourceline > self.line_s_old  # type: ignore[operator]
                    and nc[jn - 1].sourceline > self.line_s_new  # type: ignore[operator]
                ):
                    lo = mid
                else:
                    hi = mid - 1
            tail = lo
            if tail and not self._tail_verified(oc, nc, tail):
                tail = 0
        while (
            tail < limit
            and (oc[-1 - tail].tail or "") == (nc[-1 - tail].tail or "")
            and _ser(oc[-1 - tail]) == _ser(nc[-1 - tail])
        ):
            tail += 1
        return tail

    def _tail_verified(self, oc: list[_Node], nc: list[_Node], tail: int) -> bool:
        for io, jn in ((len(oc) - tail, len(nc) - tail), (len(oc) - 1, len(nc) - 1)):
            a, b = oc[io], nc[jn]
            # lxml-stubs: sourceline is untyped (declared as ...)
            if self.end_old - a.sourceline != self.end_new - b.sourceline:  # type: ignore[operator]
                return False
            if (a.tail or "") != (b.tail or "") or _ser(a) != _ser(b):
                return False
        return True

    @staticmethod
    def _classify(nodes: list[_Node], spine: bool) -> tuple[list[object], list[object]]:
        """(keys, tags) of window nodes: key = (tag, attribute, value) of the first
        of ``uri``/``name``/``id`` present, None for keyless elements, comments, PIs."""
        start = 1 if spine and nodes else 0
        tags: list[object] = [node.tag for node in nodes]
        # Fast path: every node an element with a uri (resource-lists, rls-services).
        uris = [node.get("uri") if isinstance(node.tag, str) else None for node in nodes[start:]]
        if None not in uris:
            keys: list[object] = [("\0spine",)] if start else []
            keys += zip(tags[start:], repeat("uri"), uris)
            return keys, tags
        keys = []
        tags = []
        if start:
            keys.append(("\0spine",))
            tags.append(nodes[0].tag)
        for k in range(start, len(nodes)):
            node = nodes[k]
            tag = node.tag
            if isinstance(tag, str):
                tags.append(tag)
                key = None
                for a in KEY_ATTRIBUTES:
                    value = node.get(a)
                    if value is not None:
                        key = (tag, a, value)
                        break
                keys.append(key)
            else:
                tags.append(None)
                keys.append(None)
        return keys, tags

    def _align(
        self,
        w_old: list[_Node],
        w_new: list[_Node],
        spine: bool,
        keys: tuple[list[object], list[object]],
        new_keys: tuple[list[object], list[object]],
    ) -> list[tuple[int, int, bool]]:
        def describe(
            nodes: list[_Node], side: bytes, cache: dict[_Node, bytes] | None
        ) -> list[bytes]:
            exact: list[bytes] = []
            tostring = etree.tostring
            start = 0
            if spine and nodes:  # never serialize the spine: it holds the change
                exact.append(b"\0spine-" + side)
                start = 1
            for k in range(start, len(nodes)):
                node = nodes[k]
                data = tostring(node, with_tail=False)
                if cache is not None:
                    cache[node] = data
                exact.append(data)
            return exact

        ok, ot = keys
        nk, nt = new_keys
        oe = describe(w_old, b"old", None)
        ne = describe(w_new, b"new", self.new_ser)
        # Texts between nodes are not part of a node's identity: the gaps fix them.
        return align(oe, ne, ok, nk, ot, nt)

    def _pair_by_position(
        self,
        o: _Node,
        n: _Node,
        w_old: list[_Node],
        w_new: list[_Node],
        spine: bool,
        before: tuple[_Node | None, _Node | None],
    ) -> list[int] | None:
        """Indexes of the changed pairs when the windows pair up by position (the common
        "several entries edited" case), else None.  A pair pairs up when it serializes
        identically (tail included) or is two elements with the same tag and key."""
        if len(w_old) != len(w_new) or len(w_old) < 2:
            return None
        same = None
        if len(w_old) >= _SPLIT_MIN and o.nsmap == n.nsmap:
            if spine:  # the spine is never compared: split what follows it
                rest = _same_by_split(o, n, w_old[1:], w_new[1:], (w_old[0], w_new[0]))
                same = None if rest is None else [True, *rest]
            else:
                same = _same_by_split(o, n, w_old, w_new, before)
        if same is None:  # per-node serializations
            tostring = etree.tostring
            same = [tostring(x) == tostring(y) for x, y in zip(w_old, w_new, strict=True)]
            if spine:
                same[0] = True  # never serialized: always diffed (see _diff_lockstep)
        changed = []
        for k, (x, y) in enumerate(zip(w_old, w_new, strict=True)):
            if same[k]:
                continue
            if x.tag != y.tag or not isinstance(x.tag, str) or _key(x) != _key(y):
                return None
            changed.append(k)
        return changed

    def _diff_lockstep(
        self,
        o: _Node,
        n: _Node,
        path: str,
        w_old: list[_Node],
        w_new: list[_Node],
        changed: list[int],
        anchored: bool,
        spine: bool,
        anchors: tuple[_Node | None, _Node | None, _Node | None],
    ) -> None:
        left_old, left_new, right_old = anchors
        lead_old = (left_old.tail if left_old is not None else o.text) or ""
        lead_new = (left_new.tail if left_new is not None else n.text) or ""
        if lead_old != lead_new:
            first = w_old[0] if w_old else right_old
            self._fix_text(o, path, left_old, first, lead_old, lead_new)
        last = len(w_old) - 1
        for k in [0, *changed] if spine else changed:
            x, y = w_old[k], w_new[k]
            if k == 0 and spine:  # never serialize the spine: it holds the change
                self._diff_element(x, y, path, anchored)
            elif _ser(x) != _ser(y):
                self._diff_element(x, y, path, False)
            if (x.tail or "") != (y.tail or ""):
                right = w_old[k + 1] if k < last else right_old
                self._fix_text(o, path, x, right, x.tail or "", y.tail or "")

    def _keyed_reorder_replaces(
        self, o: _Node, n: _Node, old_keys: list[object], new_keys: list[object], path: str
    ) -> bool:
        """Decide a large reorder before serializing anything: with unique keys on both
        sides, the longest run of keys kept in order says how many entries move."""
        if len(new_keys) < 16 or old_keys == new_keys or None in new_keys or None in old_keys:
            return False
        position = {key: i for i, key in enumerate(old_keys)}
        if len(position) != len(old_keys) or len(set(new_keys)) != len(new_keys):
            return False
        order = [position[key] for key in new_keys if key in position]
        moved = len(new_keys) - len(longest_increasing(order))
        if moved < len(new_keys) // 2:
            return False  # let the exact estimate decide
        self._replace_node(o, n, path.rsplit("/", 1)[0] if o.getparent() is not None else "")
        return True

    def _reorder_replaces(
        self,
        o: _Node,
        n: _Node,
        w_old: list[_Node],
        w_new: list[_Node],
        pairs: list[tuple[int, int, bool]],
        path: str,
    ) -> bool:
        moved_old = len(w_old) - len(pairs)
        moved_new = len(w_new) - len(pairs)
        if moved_old < 3 or moved_new < 3:
            return False
        matched_new = {j for _, j, _ in pairs}
        estimate = sum(
            len(self._ser_new(node)) + 40 for j, node in enumerate(w_new) if j not in matched_new
        ) + (40 + len(path)) * (moved_old + moved_new)
        whole = len(self._ser_new(n))
        if estimate <= whole:
            return False
        parent = o.getparent()
        self._replace_node(o, n, path.rsplit("/", 1)[0] if parent is not None else "")
        return True

    # --------------------------------------------------------------- gaps
    def _fix_gap(
        self,
        parent: _Node,
        new_parent: _Node,
        path: str,
        left: _Node | None,
        right: _Node | None,
        xs: list[_Node],
        left_new: _Node | None,
        ys: list[_Node],
    ) -> None:
        """Make the working nodes between ``left`` and ``right`` equal the new ones."""
        t = [(left.tail if left is not None else parent.text) or ""]
        t += [x.tail or "" for x in xs]
        s = [(left_new.tail if left_new is not None else new_parent.text) or ""]
        s += [y.tail or "" for y in ys]
        if not xs and not ys and t[0] == s[0]:
            return
        if (
            xs
            and len(xs) == len(ys)
            and t == s
            and all(_kind(x) == _kind(y) for x, y in zip(xs, ys, strict=True))
        ):
            for x, y in zip(xs, ys, strict=True):
                self._replace_node(x, y, path)
            return
        if xs:
            self._remove_run(parent, path, xs, t, s[0], s[-1] if ys else s[0])
        text = (left.tail if left is not None else parent.text) or ""
        if not ys:
            self._fix_text(parent, path, left, right, text, s[0])
            return
        nodes = b"".join(
            self._ser_with_tail(y, keep_tail=k < len(ys) - 1) for k, y in enumerate(ys)
        )
        last = text_content(s[-1])
        first = text_content(s[0])
        # New run goes before the existing text -- except that a first child is added
        # before the right sibling (content starting with the element) rather than
        # prepended with leading text: same size, and libxmlpatch (the RFC author's
        # implementation, which clients may use) corrupts a prepend that starts with
        # text into an element whose first child is text.
        prepend_text = left is None and right is not None and text == s[0]
        if text and text == s[-1] and not prepend_text:
            content = first + nodes
            if left is not None and right is None and self.stable and not text.strip():
                self._emit(Add(path, content))  # appended: stays last after other adds
            elif left is not None:
                self._emit(Add(self._sel(left, path), content, pos="after"))
            else:
                self._emit(Add(path, content, pos="prepend"))
        else:
            if text and text != s[0]:
                if s[0]:
                    self._emit(Replace(self._text_sel(parent, path, left), text_content(s[0])))
                else:
                    self._emit(Remove(self._text_sel(parent, path, left)))
                text = s[0]
            content = (b"" if text else first) + nodes + last
            if right is not None:
                self._emit(Add(self._sel(right, path), content, pos="before"))
            elif left is not None and not text and not self.stable:
                self._emit(Add(self._sel(left, path), content, pos="after"))
            else:
                self._emit(Add(path, content))
        self._set_gap(parent, left, right, s, ys)

    def _ser_with_tail(self, y: _Node, keep_tail: bool) -> bytes:
        data = self._ser_new(y)
        return data + text_content(y.tail or "") if keep_tail else data

    def _remove_run(
        self, parent: _Node, path: str, xs: list[_Node], t: list[str], first: str, last: str
    ) -> None:
        keep = None
        for target in (first, last):
            for q, text in enumerate(t):
                if text == target and all(not other.strip() for k, other in enumerate(t) if k != q):
                    keep = q
                    break
            if keep is not None:
                break
        for i, x in enumerate(xs, start=1):
            ws = None
            if keep is not None:
                if i <= keep and t[i - 1]:
                    ws = "before"
                elif i > keep and t[i]:
                    ws = "after"
            self._emit(Remove(self._sel(x, path), ws))  # type: ignore[arg-type]
            self._drop(parent, x, ws)

    def _drop(self, parent: _Node, x: _Node, ws: str | None) -> None:
        prev = x.getprevious()
        before = (prev.tail if prev is not None else parent.text) or ""
        after = x.tail or ""
        if ws in ("before", "both"):
            before = ""
        if ws in ("after", "both"):
            after = ""
        index = self.indexes.get(parent)
        if index:
            index.remove(x)
        parent.remove(x)
        if prev is not None:
            prev.tail = before + after or None
        else:
            parent.text = before + after or None

    def _fix_text(
        self,
        parent: _Node,
        path: str,
        left: _Node | None,
        right: _Node | None,
        text: str,
        target: str,
    ) -> None:
        if text == target:
            return
        if not text:
            content = text_content(target)
            if left is not None:
                self._emit(Add(self._sel(left, path), content, pos="after"))
            elif right is not None:
                self._emit(Add(self._sel(right, path), content, pos="before"))
            else:
                self._emit(Add(path, content))
        elif not target:
            self._emit(Remove(self._text_sel(parent, path, left)))
        else:
            self._emit(Replace(self._text_sel(parent, path, left), text_content(target)))
        if left is not None:
            left.tail = target or None
        else:
            parent.text = target or None

    def _set_gap(
        self,
        parent: _Node,
        left: _Node | None,
        right: _Node | None,
        s: list[str],
        ys: list[_Node],
    ) -> None:
        index = self.indexes.get(parent)
        # Walk by siblings: len(parent) and parent[i] each walk the child list in lxml.
        gone = left.getnext() if left is not None else next(iter(parent), None)
        while gone is not None and gone is not right:
            following = gone.getnext()
            if index:
                index.remove(gone)
            parent.remove(gone)
            gone = following
        at = parent.index(left) + 1 if left is not None else 0
        if left is not None:
            left.tail = s[0] or None
        else:
            parent.text = s[0] or None
        for k, y in enumerate(ys, start=1):
            node = _stand_in(y)
            node.tail = s[k] or None
            parent.insert(at, node)
            at += 1
            if index:
                index.add(node)

    def _replace_node(self, x: _Node, y: _Node, parent_path: str) -> _Node:
        """Emit a <replace> of ``x`` by ``y``; returns the node now in the working tree."""
        self._emit(Replace(self._sel(x, parent_path), self._ser_new(y)))
        parent = x.getparent()
        if parent is None:  # the root element: nothing below it is visited again
            return x
        index = self.indexes.get(parent)
        if index:
            index.remove(x)
        if _is_element(x) and _is_element(y):
            # Later selectors only see the tag and attributes; rewriting them in place
            # avoids detaching a large subtree (lxml then re-homes every proxy in it).
            x.tag = y.tag
            x.attrib.clear()
            x.attrib.update(dict(y.attrib))
        else:
            node = _stand_in(y)
            node.tail = x.tail
            parent.replace(x, node)
            x = node
        if index:
            index.add(x)
        return x

    # ---------------------------------------------------------- document level
    def _diff_document_level(self, olds: tuple[list[_Node], list[_Node]]) -> None:
        """Comments and PIs around the root element.  lxml cannot remove nodes at the
        document level, so this last phase tracks that level as a list of kinds."""
        new_root = self.new.getroot()
        root_name = self._qname(new_root.tag, new_root)
        before, after = olds
        level: list[tuple[str, str | None]] = [_level_kind(x) for x in before]
        level.append(("root", None))
        level += [_level_kind(x) for x in after]
        for preceding, old in ((True, before), (False, after)):
            news = list(new_root.itersiblings(preceding=preceding))
            if preceding:
                news.reverse()
            if [_ser(x) for x in old] == [_ser(y) for y in news]:
                continue
            for x in old:
                kind = _level_kind(x)
                at = level.index(kind, 0 if preceding else level.index(("root", None)))
                n = level[:at].count(kind) + 1
                if kind[0] == "comment":
                    self._emit(Remove(f"comment()[{n}]"))
                else:
                    self._emit(Remove(f"processing-instruction({quote(kind[1] or '')})[{n}]"))
                del level[at]
            if news:
                content = b"".join(_ser(y) for y in news)
                self._emit(Add(root_name, content, pos="before" if preceding else "after"))
                at = level.index(("root", None)) + (0 if preceding else 1)
                level[at:at] = [_level_kind(y) for y in news]


def _level_kind(node: _Node) -> tuple[str, str | None]:
    if isinstance(node, etree._Comment):
        return ("comment", None)
    # lxml-stubs: not narrowed to a PI here; a PI target is str
    return ("pi", node.target)  # type: ignore[attr-defined]
