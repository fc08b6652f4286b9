"""RFC 5261 ``sel`` selectors (the subset of spec/NOTES.md §2) and the tree they run on.

Selectors are evaluated by our own walker, never by building XPath strings (STYLE §4).
The walker runs over a small mutable working tree (``Document``/``Element``/...)
rather than over lxml: lxml re-maps namespace prefixes by URI whenever a node is
moved, and cannot add, change or remove a declaration on an existing element, while
RFC 5261 needs all of that to be exact (Canonical XML compares prefixes).

Namespace rules are RFC 5261 §4.2.1 exactly: a prefix in ``sel`` is looked up in the
declarations in scope at the patch operation element; an unprefixed element name is
in that scope's default namespace if there is one, else in no namespace; an
unprefixed attribute name is always in no namespace.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lxml import etree

from ..errors import InvalidNamespacePrefix, UnlocatedNode, UnsupportedIdFunction

__all__ = [
    "PI",
    "XML_NS",
    "Attr",
    "AttrEquals",
    "AttrRef",
    "ChildEquals",
    "ChildRef",
    "Comment",
    "Document",
    "Element",
    "Located",
    "Name",
    "NsRef",
    "Position",
    "Predicate",
    "Selector",
    "SelectorSyntaxError",
    "SelfEquals",
    "Step",
    "Text",
    "lxml_attributes",
    "own_declarations",
    "quote_literal",
    "select",
    "select_one",
]

XML_NS = "http://www.w3.org/XML/1998/namespace"
Namespaces = Mapping[str | None, str]


# --------------------------------------------------------------------------- tree
# Mutable on purpose: a patch is a sequence of in-place edits on one private tree
# (RFC 5261 §3); these objects never leave apply_patch.


@dataclass(eq=False, slots=True)
class Text:
    value: str


@dataclass(eq=False, slots=True)
class Comment:
    value: str


@dataclass(eq=False, slots=True)
class PI:
    target: str
    value: str


@dataclass(eq=False, slots=True)
class Attr:
    uri: str | None
    local: str
    prefix: str | None
    value: str


class Element:
    """An element with its *own* namespace declarations (``decls``; ``None`` is the
    default namespace, ``""`` an ``xmlns=""`` undeclaration) and the prefix it uses.

    An element copied from the parsed document keeps its lxml node (``lx``) and
    reads ``decls``, ``attrs`` and ``children`` from it only when first asked; until
    then that part is untouched, which the serialiser uses to let lxml write it.
    Per-parent child indexes (by name, by attribute value) are built lazily and
    must be dropped with ``invalidate()`` whenever the children list, a child's
    name or a child's attributes change."""

    __slots__ = (
        "_attrs",
        "_children",
        "_decls",
        "_idx",
        "changed",
        "local",
        "lx",
        "parent",
        "prefix",
        "uri",
    )

    def __init__(
        self,
        uri: str | None,
        local: str,
        prefix: str | None = None,
        decls: dict[str | None, str] | None = None,
        attrs: list[Attr] | None = None,
        children: list[Node] | None = None,
        parent: Element | Document | None = None,
        *,
        lx: etree._Element | None = None,
    ) -> None:
        self.uri, self.local, self.prefix = uri, local, prefix
        self.parent, self.lx = parent, lx
        # key None: the name table; key (uri, local, attr_uri, attr_local): a value table
        self._idx: dict[tuple[str | None, ...] | None, dict[Any, list[Element]]] | None = None
        self.changed = False  # children list, or a child, changed since loading
        if lx is None:
            # None (with ``lx``) until first read: loaded lazily from the lxml element
            self._decls: dict[str | None, str] | None = {} if decls is None else decls
            self._attrs: list[Attr] | None = [] if attrs is None else attrs
            self._children: list[Node] | None = [] if children is None else children
        else:
            self._decls, self._attrs, self._children = decls, attrs, children

    def __repr__(self) -> str:
        return f"Element({self.uri!r}, {self.local!r}, prefix={self.prefix!r})"

    @property
    def decls(self) -> dict[str | None, str]:
        if self._decls is None:
            assert self.lx is not None
            up = self.lx.getparent()
            self._decls = own_declarations(self.lx.nsmap, up.nsmap if up is not None else {})
        return self._decls

    @decls.setter
    def decls(self, value: dict[str | None, str]) -> None:
        self._decls = value

    @property
    def attrs(self) -> list[Attr]:
        if self._attrs is None:
            assert self.lx is not None
            self._attrs = lxml_attributes(self.lx)
        return self._attrs

    @attrs.setter
    def attrs(self, value: list[Attr]) -> None:
        self._attrs = value
        self.invalidate_parent()

    @property
    def children(self) -> list[Node]:
        if self._children is None:
            assert self.lx is not None
            lx = self.lx
            out: list[Node] = []
            if lx.text:
                out.append(Text(lx.text))
            for child in lx:
                out.append(_from_lxml(child, self))
                if child.tail:
                    out.append(Text(child.tail))
            self._children = out
        return self._children

    @children.setter
    def children(self, value: list[Node]) -> None:
        self._children = value
        self.invalidate()

    @property
    def start_untouched(self) -> bool:
        """Still backed by lxml with its declarations and attributes never read."""
        return self.lx is not None and self._decls is None and self._attrs is None

    @property
    def content_untouched(self) -> bool:
        return self.lx is not None and self._children is None

    def invalidate(self) -> None:
        """Drop the child indexes (the children list or a child changed)."""
        self._idx = None
        self.changed = True

    def invalidate_parent(self) -> None:
        if isinstance(self.parent, Element):
            self.parent.invalidate()

    def scope(self) -> dict[str | None, str]:
        """Prefix -> URI bindings in scope here (``xml`` always, no empty default)."""
        chain: list[Element] = []
        node: Element | Document | None = self
        while isinstance(node, Element):
            chain.append(node)
            node = node.parent
        scope: dict[str | None, str] = {"xml": XML_NS}
        for el in reversed(chain):
            for prefix, uri in el.decls.items():
                if uri:
                    scope[prefix] = uri
                else:
                    scope.pop(prefix, None)
        return scope

    def find_attr(self, uri: str | None, local: str) -> Attr | None:
        for attr in self.attrs:
            if attr.uri == uri and attr.local == local:
                return attr
        return None

    def attr_value(self, uri: str | None, local: str) -> str | None:
        """The value of attribute ``{uri}local`` (read-only; does not load ``attrs``)."""
        if self._attrs is None:
            assert self.lx is not None
            return self.lx.get(f"{{{uri}}}{local}" if uri is not None else local)
        for attr in self._attrs:
            if attr.uri == uri and attr.local == local:
                return attr.value
        return None

    def named(self, uri: str | None, local: str) -> list[Element]:
        """The child elements named ``{uri}local``, in order (a cached index: do not
        mutate the list)."""
        idx = self._idx
        if idx is None:
            idx = self._idx = {}
        names = idx.get(None)
        if names is None:
            table: dict[tuple[str | None, str], list[Element]] = {}
            for node in self.children:
                if isinstance(node, Element):
                    table.setdefault((node.uri, node.local), []).append(node)
            names = idx[None] = table
        return names.get((uri, local), [])

    def by_attr(
        self, uri: str | None, local: str, attr_uri: str | None, attr_local: str
    ) -> dict[str, list[Element]]:
        """Child elements named ``{uri}local`` by their ``{attr_uri}attr_local`` value
        (a cached index: do not mutate)."""
        key = (uri, local, attr_uri, attr_local)
        named = self.named(uri, local)
        idx = self._idx
        assert idx is not None
        table = idx.get(key)
        if table is None:
            table = {}
            for el in named:
                value = el.attr_value(attr_uri, attr_local)
                if value is not None:
                    table.setdefault(value, []).append(el)
            idx[key] = table
        return table

    def string_value(self) -> str:
        """XPath string-value: all descendant text, in document order."""
        parts: list[str] = []
        stack: list[Node] = list(reversed(self.children))
        while stack:
            node = stack.pop()
            if isinstance(node, Text):
                parts.append(node.value)
            elif isinstance(node, Element):
                stack.extend(reversed(node.children))
        return "".join(parts)

    def index(self, node: Node) -> int:
        return _index(self.children, node)


Node = Element | Text | Comment | PI


@dataclass(eq=False, slots=True)
class Document:
    """The document node: the root element plus document-level comments and PIs."""

    children: list[Node] = field(default_factory=list)

    @property
    def root(self) -> Element:
        for node in self.children:
            if isinstance(node, Element):
                return node
        raise ValueError("document without root element")

    def index(self, node: Node) -> int:
        return _index(self.children, node)

    def to_text(self) -> str:
        """The document nodes as XML text, every prefix and declaration as held."""
        out: list[str] = []
        for node in self.children:
            _write(node, out)
        return "".join(out)

    @classmethod
    def from_lxml(cls, tree: etree._ElementTree) -> Document:
        """Copy an lxml tree (prefixes and declarations exactly as parsed)."""
        root = tree.getroot()
        doc = cls()
        before = list(root.itersiblings(preceding=True))
        for node in [*reversed(before), root, *root.itersiblings()]:
            doc.children.append(_from_lxml(node, doc))
        return doc


def _index(children: list[Node], node: Node) -> int:
    # Nodes compare by identity (no __eq__), so list.index finds this very node.
    try:
        return children.index(node)
    except ValueError:
        raise ValueError("node is not a child here") from None


def lxml_attributes(el: etree._Element) -> list[Attr]:
    """The attributes of ``el`` with the prefixes they are written with.

    lxml only exposes ``{uri}local``; the prefix is read with XPath ``name()``
    (a fixed expression, the position passed as a variable)."""
    attrs: list[Attr] = []
    for i, (key, value) in enumerate(el.attrib.items(), start=1):
        qname = etree.QName(key)
        prefix: str | None = None
        if qname.namespace is not None:
            written = str(el.xpath("name(@*[$i])", i=i))
            prefix = written.split(":", 1)[0] if ":" in written else None
        # lxml-stubs: attribute values are str, not str | bytes
        attrs.append(Attr(qname.namespace, qname.localname, prefix, value))  # type: ignore[arg-type]
    return attrs


def own_declarations(
    nsmap: Mapping[str | None, str], parent_nsmap: Mapping[str | None, str]
) -> dict[str | None, str]:
    """Declarations written on an element: its lxml nsmap minus its parent's."""
    own = {p: u for p, u in nsmap.items() if parent_nsmap.get(p, "") != u}
    for prefix in parent_nsmap:
        if prefix is None and parent_nsmap[prefix] and prefix not in nsmap:
            own[None] = ""
    return own


def _from_lxml(node: etree._Element, parent: Element | Document) -> Node:
    """Wrap an lxml node; an element's declarations, attributes and children are
    read from it lazily (see ``Element``)."""
    if isinstance(node, etree._Comment):
        return Comment(node.text or "")
    if isinstance(node, etree._ProcessingInstruction):
        return PI(str(node.target), node.text or "")
    tag = node.tag
    if not isinstance(tag, str):
        raise TypeError(f"unsupported node {node!r}")
    if tag[0] == "{":
        uri, _, local = tag[1:].partition("}")
        return Element(uri, local, node.prefix, parent=parent, lx=node)
    return Element(None, tag, None, parent=parent, lx=node)


def _qname(prefix: str | None, local: str) -> str:
    return f"{prefix}:{local}" if prefix else local


def _write(node: Node, out: list[str]) -> None:
    if isinstance(node, Text):
        out.append(_escape_text(node.value))
    elif isinstance(node, Comment):
        out.append(f"<!--{node.value}-->")
    elif isinstance(node, PI):
        out.append(f"<?{node.target} {node.value}?>" if node.value else f"<?{node.target}?>")
    else:
        name = _qname(node.prefix, node.local)
        out.append("<" + name)
        for prefix, uri in node.decls.items():
            out.append(f' {_qname("xmlns", prefix) if prefix else "xmlns"}="{_escape_attr(uri)}"')
        for attr in node.attrs:
            out.append(f' {_qname(attr.prefix, attr.local)}="{_escape_attr(attr.value)}"')
        if not node.children:
            out.append("/>")
            return
        out.append(">")
        for child in node.children:
            _write(child, out)
        out.append(f"</{name}>")


def _escape_text(value: str) -> str:
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("\r", "&#13;")


def _escape_attr(value: str) -> str:
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return value.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")


# ----------------------------------------------------------------------- selector


class SelectorSyntaxError(ValueError):
    """``sel`` is not in the RFC 5261 subset we accept."""


@dataclass(frozen=True, slots=True)
class Name:
    """A QName as written in ``sel``; ``local == "*"`` is the element wildcard."""

    prefix: str | None
    local: str

    def to_text(self) -> str:
        return f"{self.prefix}:{self.local}" if self.prefix else self.local


@dataclass(frozen=True, slots=True)
class Position:
    n: int


@dataclass(frozen=True, slots=True)
class AttrEquals:
    name: Name
    value: str


@dataclass(frozen=True, slots=True)
class ChildEquals:
    name: Name
    value: str


@dataclass(frozen=True, slots=True)
class SelfEquals:
    value: str


Predicate = Position | AttrEquals | ChildEquals | SelfEquals
StepKind = Literal["element", "text", "comment", "processing-instruction", "attribute", "namespace"]


@dataclass(frozen=True, slots=True)
class Step:
    """One location step.  ``name``: the element test (``*`` allowed), the attribute
    name, ``Name(None, prefix)`` for ``namespace::prefix``, or the PI target."""

    kind: StepKind
    name: Name | None = None
    predicates: tuple[Predicate, ...] = ()

    def __post_init__(self) -> None:
        if self.kind in ("element", "attribute", "namespace") and self.name is None:
            raise ValueError(f"a {self.kind} step needs a name")
        if self.kind in ("attribute", "namespace") and self.predicates:
            raise ValueError(f"a {self.kind} step takes no predicates")
        if self.kind not in ("element",) and any(
            not isinstance(p, Position) for p in self.predicates
        ):
            raise ValueError(f"a {self.kind} step takes only [n] predicates")

    @property
    def is_final_only(self) -> bool:
        return self.kind != "element"

    def to_text(self) -> str:
        if self.kind == "element":
            head = self.name.to_text() if self.name else "*"
        elif self.kind == "attribute":
            head = "@" + (self.name.to_text() if self.name else "")
        elif self.kind == "namespace":
            head = "namespace::" + (self.name.local if self.name else "")
        elif self.kind == "processing-instruction":
            head = "processing-instruction(%s)" % (
                _quote_or_raise(self.name.local) if self.name else ""
            )
        else:
            head = self.kind + "()"
        return head + "".join(_predicate_text(p) for p in self.predicates)


def _predicate_text(pred: Predicate) -> str:
    if isinstance(pred, Position):
        return f"[{pred.n}]"
    if isinstance(pred, AttrEquals):
        return f"[@{pred.name.to_text()}={_quote_or_raise(pred.value)}]"
    if isinstance(pred, ChildEquals):
        return f"[{pred.name.to_text()}={_quote_or_raise(pred.value)}]"
    return f"[.={_quote_or_raise(pred.value)}]"


def quote_literal(value: str) -> str | None:
    """``value`` as an XPath literal (``'v'``, else ``"v"``); None if it holds both quotes.

    XPath 1.0 literals have no escapes, so such a value cannot be written."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _quote_or_raise(value: str) -> str:
    quoted = quote_literal(value)
    if quoted is None:
        raise ValueError(f"value {value!r} holds both quote characters")
    return quoted


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed ``sel``.  ``id_value`` is set when the path starts with ``id('x')``."""

    steps: tuple[Step, ...]
    absolute: bool = False
    id_value: str | None = None

    def __post_init__(self) -> None:
        if not self.steps and self.id_value is None:
            raise ValueError("a selector needs at least one step")
        for step in self.steps[:-1]:
            if step.is_final_only:
                raise ValueError(f"{step.to_text()} may only be the last step")

    @property
    def last(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    def to_text(self) -> str:
        parts = [s.to_text() for s in self.steps]
        if self.id_value is not None:
            parts.insert(0, f"id({_quote_or_raise(self.id_value)})")
        return ("/" if self.absolute else "") + "/".join(parts)

    @classmethod
    def from_text(cls, text: str) -> Selector:
        """Parse ``text``; raises ``SelectorSyntaxError`` outside the subset."""
        return _Parser(text).parse()


_NCNAME = re.compile(r"[^\W\d][\w.\-·]*")
_DIGITS = re.compile(r"[0-9]+")


class _Parser:
    """Recursive descent over the selector text (no XPath engine involved)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, what: str) -> SelectorSyntaxError:
        return SelectorSyntaxError(f"selector {self.text!r}, offset {self.pos}: {what}")

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def take(self, token: str) -> bool:
        if self.peek(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.take(token):
            raise self.fail(f"expected {token!r}")

    def ncname(self) -> str:
        match = _NCNAME.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a name")
        self.pos = match.end()
        return match.group()

    def qname(self, *, wildcard: bool = False) -> Name:
        if wildcard and self.take("*"):
            return Name(None, "*")
        first = self.ncname()
        if self.peek(":") and not self.peek("::"):
            self.pos += 1
            return Name(first, self.ncname())
        return Name(None, first)

    def literal(self) -> str:
        if self.pos >= len(self.text) or self.text[self.pos] not in "'\"":
            raise self.fail("expected a quoted literal")
        quote = self.text[self.pos]
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            raise self.fail("unterminated literal")
        value = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return value

    def equals_literal(self) -> str:
        self.spaces()
        self.expect("=")
        self.spaces()
        return self.literal()

    def spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def position(self) -> Position:
        match = _DIGITS.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a position")
        self.pos = match.end()
        return Position(int(match.group()))

    def predicates(self, *, positional_only: bool) -> tuple[Predicate, ...]:
        preds: list[Predicate] = []
        while self.take("["):
            self.spaces()
            pred: Predicate
            if _DIGITS.match(self.text, self.pos):
                pred = self.position()
            elif positional_only:
                raise self.fail("only [n] is allowed here")
            elif self.take("@"):
                name = self.qname()
                pred = AttrEquals(name, self.equals_literal())
            elif self.take("."):
                pred = SelfEquals(self.equals_literal())
            else:
                name = self.qname()
                pred = ChildEquals(name, self.equals_literal())
            self.spaces()
            self.expect("]")
            preds.append(pred)
        return tuple(preds)

    def step(self) -> Step:
        if self.take("@"):
            return Step("attribute", self.qname())
        if self.take("namespace::"):
            return Step("namespace", Name(None, self.ncname()))
        for kind in ("text", "comment"):
            if self.take(kind + "()"):
                return Step(kind, None, self.predicates(positional_only=True))
        if self.take("processing-instruction("):
            self.spaces()
            target = None if self.peek(")") else Name(None, self.literal())
            self.spaces()
            self.expect(")")
            return Step("processing-instruction", target, self.predicates(positional_only=True))
        name = self.qname(wildcard=True)
        if self.peek("("):
            raise self.fail(f"function {name.to_text()}() is not in the RFC 5261 subset")
        return Step("element", name, self.predicates(positional_only=False))

    def parse(self) -> Selector:
        absolute = self.take("/")
        id_value = None
        steps: list[Step] = []
        if self.take("id("):
            self.spaces()
            id_value = self.literal()
            self.spaces()
            self.expect(")")
            if self.pos < len(self.text):
                self.expect("/")
            else:
                return self._build(steps, absolute, id_value)
        while True:
            if self.peek("/"):
                raise self.fail("'//' and empty steps are not in the subset")
            steps.append(self.step())
            if self.pos == len(self.text):
                break
            self.expect("/")
            if steps[-1].is_final_only:
                raise self.fail(f"{steps[-1].to_text()} may only be the last step")
        return self._build(steps, absolute, id_value)

    def _build(self, steps: list[Step], absolute: bool, id_value: str | None) -> Selector:
        try:
            return Selector(tuple(steps), absolute, id_value)
        except ValueError as err:
            raise self.fail(str(err)) from None


# ---------------------------------------------------------------------- evaluation


@dataclass(frozen=True, eq=False, slots=True)
class ChildRef:
    """An element, text, comment or PI and the element or document holding it."""

    parent: Element | Document
    node: Node

    @property
    def index(self) -> int:
        return self.parent.index(self.node)


@dataclass(frozen=True, eq=False, slots=True)
class AttrRef:
    element: Element
    attr: Attr


@dataclass(frozen=True, eq=False, slots=True)
class NsRef:
    """A namespace node of ``element`` (it may be declared on an ancestor)."""

    element: Element
    prefix: str
    uri: str


Located = ChildRef | AttrRef | NsRef


class _Resolver:
    def __init__(self, namespaces: Namespaces, op_index: int, sel: str | None) -> None:
        self.namespaces, self.op_index, self.sel = namespaces, op_index, sel

    def uri(self, name: Name, *, attribute: bool) -> str | None:
        if name.prefix is None:
            return None if attribute else (self.namespaces.get(None) or None)
        if name.prefix == "xml":
            return XML_NS
        uri = self.namespaces.get(name.prefix)
        if not uri:
            raise InvalidNamespacePrefix(
                self.op_index,
                self.sel,
                f"prefix {name.prefix!r} is not declared at the operation",
            )
        return uri


def select(
    document: Document,
    selector: Selector,
    namespaces: Namespaces,
    *,
    op_index: int = 0,
    sel: str | None = None,
) -> list[Located]:
    """Every node ``selector`` matches, in document order (RFC 5261 §4.1).

    Raises ``InvalidNamespacePrefix`` for an undeclared prefix and
    ``UnsupportedIdFunction`` for ``id()``."""
    sel = selector.to_text() if sel is None else sel
    if selector.id_value is not None:
        raise UnsupportedIdFunction(op_index, sel, "id() is not supported (no ID-typed attributes)")
    resolve = _Resolver(namespaces, op_index, sel)
    contexts: list[Element | Document] = [document]
    for step in selector.steps[:-1]:
        contexts = [
            ref.node
            for ref in _step(contexts, step, resolve)
            if isinstance(ref, ChildRef) and isinstance(ref.node, Element)
        ]
    return _step(contexts, selector.steps[-1], resolve)


def select_one(
    document: Document,
    selector: Selector,
    namespaces: Namespaces,
    *,
    op_index: int = 0,
    sel: str | None = None,
) -> Located:
    """The single node ``selector`` matches, else ``UnlocatedNode`` (RFC 5261 §4.1)."""
    sel = selector.to_text() if sel is None else sel
    found = select(document, selector, namespaces, op_index=op_index, sel=sel)
    if len(found) != 1:
        raise UnlocatedNode(op_index, sel, f"selector matches {len(found)} nodes, not exactly one")
    return found[0]


def _step(contexts: list[Element | Document], step: Step, resolve: _Resolver) -> list[Located]:
    out: list[Located] = []
    if step.kind == "attribute":
        assert step.name is not None
        uri = resolve.uri(step.name, attribute=True)
        for ctx in contexts:
            if isinstance(ctx, Element):
                attr = ctx.find_attr(uri, step.name.local)
                if attr is not None:
                    out.append(AttrRef(ctx, attr))
        return out
    if step.kind == "namespace":
        assert step.name is not None
        for ctx in contexts:
            if isinstance(ctx, Element):
                bound = ctx.scope().get(step.name.local)
                if bound:
                    out.append(NsRef(ctx, step.name.local, bound))
        return out
    test = _node_test(step, resolve)
    named = (
        step.kind == "element"
        and step.name is not None
        and not (step.name.local == "*" and step.name.prefix is None)
    )
    for ctx in contexts:
        preds = step.predicates
        matched: list[Node]
        if named and isinstance(ctx, Element):
            # Indexed lookups; equal to the scan below (same nodes, document order).
            assert step.name is not None
            uri = resolve.uri(step.name, attribute=False)
            first = preds[0] if preds else None
            if isinstance(first, AttrEquals):
                attr_uri = resolve.uri(first.name, attribute=True)
                table = ctx.by_attr(uri, step.name.local, attr_uri, first.name.local)
                matched = list(table.get(first.value, ()))
                preds = preds[1:]
            else:
                matched = list(ctx.named(uri, step.name.local))
        else:
            matched = [node for node in ctx.children if test(node)]
        for pred in preds:
            matched = _filter(matched, pred, resolve)
        out.extend(ChildRef(ctx, node) for node in matched)
    return out


def _node_test(step: Step, resolve: _Resolver) -> Callable[[Node], bool]:
    if step.kind == "text":
        return lambda node: isinstance(node, Text)
    if step.kind == "comment":
        return lambda node: isinstance(node, Comment)
    if step.kind == "processing-instruction":
        target = step.name.local if step.name else None
        return lambda node: isinstance(node, PI) and (target is None or node.target == target)
    assert step.name is not None
    if step.name.local == "*" and step.name.prefix is None:
        return lambda node: isinstance(node, Element)
    uri = resolve.uri(step.name, attribute=False)
    local = step.name.local
    return lambda node: isinstance(node, Element) and node.uri == uri and node.local == local


def _filter(nodes: list[Node], pred: Predicate, resolve: _Resolver) -> list[Node]:
    if isinstance(pred, Position):
        return [nodes[pred.n - 1]] if 1 <= pred.n <= len(nodes) else []
    if isinstance(pred, SelfEquals):
        return [n for n in nodes if _string_value(n) == pred.value]
    if isinstance(pred, AttrEquals):
        uri = resolve.uri(pred.name, attribute=True)
        out: list[Node] = []
        for n in nodes:
            if isinstance(n, Element) and n.attr_value(uri, pred.name.local) == pred.value:
                out.append(n)
        return out
    uri = resolve.uri(pred.name, attribute=False)
    return [
        n
        for n in nodes
        if isinstance(n, Element)
        and any(
            isinstance(c, Element)
            and c.uri == uri
            and c.local == pred.name.local
            and c.string_value() == pred.value
            for c in n.children
        )
    ]


def _string_value(node: Node) -> str:
    if isinstance(node, Element):
        return node.string_value()
    if isinstance(node, PI):
        return node.value
    return node.value
