"""Document and node selectors (RFC 4825 §6), the subset OpenXCAP accepts.

A node selector is ``/step/step...[/terminal]``; a step is ``name``, ``*``,
``name[n]``, ``name[@att="v"]`` or ``name[n][@att="v"]`` (quotes ``"`` or ``'``);
the terminal is ``@attr`` or ``namespace::*``.  Unprefixed element names take the
application's default namespace (RFC 4825 §6.3); prefixes come from the
``?xmlns(p=uri)`` query.  Unprefixed attribute names have no namespace.
Step names are ``(namespace, local)`` tuples, or ``"*"``.
"""

from __future__ import annotations

import copy
import re
from typing import Any

__all__ = [
    "AttributeSelector",
    "DocumentSelector",
    "DocumentSelectorError",
    "ElementSelector",
    "NamespaceSelector",
    "NodeParsingError",
    "NodeSelector",
    "Step",
    "TerminalSelector",
]


class Error(ValueError):
    pass


class NodeParsingError(Error):
    http_error = 400


class DocumentSelectorError(Error):
    http_error = 404


_STEP = re.compile(
    r"""^(?P<name>\*|[^\[\]/@*\s]+)
        (?:\[(?P<pos>[0-9]+)\])?
        (?:\[@(?P<att>[^=\]\s]+)\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')\])?$""",
    re.VERBOSE,
)
_NCNAME = re.compile(r"^[^\s:\[\]/@=\"'*]+(?::[^\s:\[\]/@=\"'*]+)?$")
_ENTITIES = (("&quot;", '"'), ("&apos;", "'"), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))


def _unescape(value: str) -> str:
    for entity, char in _ENTITIES:
        value = value.replace(entity, char)
    return value


def _split_steps(text: str) -> list[str]:
    """Split on ``/`` outside predicates and quoted values."""
    parts: list[str] = []
    buf: list[str] = []
    depth = 0
    quote: str | None = None
    for char in text:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "\"'" and depth:
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "/" and depth == 0:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(char)
    parts.append("".join(buf))
    return parts


class Step:
    def __init__(
        self,
        name: Any,
        position: int | None = None,
        att_name: str | None = None,
        att_value: str | None = None,
        text: str = "",
    ) -> None:
        self.name = name
        self.position = position
        self.att_name = att_name
        self.att_value = att_value
        self.text = text

    def __repr__(self) -> str:
        return f"Step({self.name!r}, {self.position!r}, {self.att_name!r}, {self.att_value!r})"


class ElementSelector(list):  # type: ignore[type-arg]
    """The element part of a node selector: a list of ``Step``.  ``str()`` gives its text."""

    _TAG = re.compile(r"\s*<([^ >/]+)")

    def __init__(self, steps: list[Step], namespace: str | None, namespaces: dict[str, str]):
        super().__init__(steps)
        self.namespace = namespace
        self.namespaces = namespaces
        self._original_string = "/" + "/".join(step.text for step in steps)

    def __str__(self) -> str:
        return self._original_string

    def _qname(self, qname: str) -> Any:
        if ":" in qname:
            prefix, local = qname.split(":", 1)
            if prefix not in self.namespaces:
                raise NodeParsingError(f"unbound prefix {prefix!r} in {qname!r}")
            return (self.namespaces[prefix], local)
        return (self.namespace, qname)

    def fix_star(self, element_body: bytes) -> ElementSelector:
        """A last ``*`` step without position takes the name of the element being PUT."""
        if self and self[-1].name == "*" and self[-1].position is None:
            match = self._TAG.match(element_body.decode("utf-8", "replace"))
            if match:
                fixed = copy.copy(self)
                fixed[-1] = copy.copy(self[-1])
                fixed[-1].name = self._qname(match.group(1))
                return fixed
        return self


class TerminalSelector:
    pass


class AttributeSelector(TerminalSelector):
    def __init__(self, attribute: str, name: str | None = None) -> None:
        self.attribute = attribute  # as written in the selector
        self.name = name or attribute  # Clark notation when prefixed

    def __str__(self) -> str:
        return "@" + self.attribute

    def __repr__(self) -> str:
        return f"AttributeSelector({self.attribute!r})"


class NamespaceSelector(TerminalSelector):
    def __str__(self) -> str:
        return "namespace::*"

    def __repr__(self) -> str:
        return "NamespaceSelector()"


def _parse_step(text: str, namespace: str | None, bindings: dict[str, str]) -> Step:
    match = _STEP.match(text)
    if match is None:
        raise NodeParsingError(f"invalid step {text!r}")
    raw = match.group("name")
    if raw == "*":
        name: Any = "*"
    else:
        if not _NCNAME.match(raw):
            raise NodeParsingError(f"invalid name {raw!r}")
        if ":" in raw:
            prefix, local = raw.split(":", 1)
            if prefix not in bindings:
                raise NodeParsingError(f"unbound prefix {prefix!r} in {text!r}")
            name = (bindings[prefix], local)
        else:
            name = (namespace, raw)
    position = int(match.group("pos")) if match.group("pos") else None
    if position is not None and position < 1:
        raise NodeParsingError(f"invalid position in {text!r}")
    att_name = att_value = None
    if match.group("att"):
        att_name = _attribute_name(match.group("att"), bindings)
        value = match.group("dq") if match.group("dq") is not None else match.group("sq")
        att_value = _unescape(value or "")
    return Step(name, position, att_name, att_value, text)


def _attribute_name(qname: str, bindings: dict[str, str]) -> str:
    if not _NCNAME.match(qname):
        raise NodeParsingError(f"invalid attribute name {qname!r}")
    if ":" in qname:
        prefix, local = qname.split(":", 1)
        if prefix not in bindings:
            raise NodeParsingError(f"unbound prefix {prefix!r} in {qname!r}")
        return "{%s}%s" % (bindings[prefix], local)  # noqa: UP031
    return qname


def parse_node_selector(
    selector: str, namespace: str | None = None, bindings: dict[str, str] | None = None
) -> tuple[ElementSelector, TerminalSelector | None]:
    bindings = bindings or {}
    if not selector.startswith("/"):
        raise NodeParsingError(f"node selector must start with '/': {selector!r}")
    parts = _split_steps(selector[1:])
    terminal: TerminalSelector | None = None
    if parts and parts[-1].startswith("@"):
        written = parts.pop()[1:]
        terminal = AttributeSelector(written, _attribute_name(written, bindings))
    elif parts and parts[-1] == "namespace::*":
        parts.pop()
        terminal = NamespaceSelector()
    if not parts or any(not part for part in parts):
        raise NodeParsingError(f"invalid node selector {selector!r}")
    steps = [_parse_step(part, namespace, bindings) for part in parts]
    return ElementSelector(steps, namespace, bindings), terminal


class DocumentSelector(str):
    """``/auid/users/<xui>/<path>`` or ``/auid/global/<path>``: ``application_id``,
    ``context``, ``user_id`` (None for global), ``document_path`` (assignable)."""

    def __init__(self, selector: str) -> None:
        if selector[:1] != "/":
            raise DocumentSelectorError("Document selector does not start with /")
        body = selector[1:]
        if body.endswith("/"):
            body = body[:-1]
        if not body:
            raise DocumentSelectorError("Document selector does not contain auid")
        segments = body.split("/")
        if len(segments) < 2:
            raise DocumentSelectorError(f"Document selector does not contain context: {body!r}")
        self.application_id = segments[0]
        self.context = segments[1]
        if self.context not in ("users", "global"):
            raise DocumentSelectorError(
                f"Document selector context must be either 'users' or 'global', "
                f"not {self.context!r}: {body!r}"
            )
        self.user_id: str | None = None
        if self.context == "users":
            if len(segments) < 3:
                raise DocumentSelectorError(f"Document selector does not contain user id: {body!r}")
            self.user_id = segments[2]
            rest = segments[3:]
        else:
            rest = segments[2:]
        if not rest:
            raise DocumentSelectorError(
                f"Document selector does not contain document's path: {body!r}"
            )
        self.document_path = "/".join(rest)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"


class NodeSelector:
    """The part after ``~~``.  ``str()`` is that text as received (query included)."""

    XMLNS = re.compile(r"xmlns\((?P<nsdata>.*?)\)")
    XPATH_DEFAULT_PREFIX = "default"

    def __init__(self, selector: str, namespace: str | None = None) -> None:
        self._original_selector = selector
        sections = selector.split("?", 1)
        self.ns_bindings: dict[str, str] = {}
        if len(sections) == 2:
            for data in self.XMLNS.findall(sections[1]):
                prefix, sep, uri = data.partition("=")
                if sep:
                    self.ns_bindings[prefix.strip()] = uri.strip()
        self.element_selector, self.terminal_selector = parse_node_selector(
            sections[0], namespace, self.ns_bindings
        )

    def __str__(self) -> str:
        return self._original_selector

    def __repr__(self) -> str:
        return f"NodeSelector({self._original_selector!r})"

    def get_ns_bindings(self, default_ns: str | None) -> dict[str, Any]:
        bindings: dict[str, Any] = dict(self.ns_bindings)
        bindings[self.XPATH_DEFAULT_PREFIX] = default_ns
        return bindings
