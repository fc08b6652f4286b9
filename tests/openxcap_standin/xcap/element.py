"""Element GET/PUT/DELETE on the stored bytes, as OpenXCAP does them.

OpenXCAP locates an element by the byte offsets a streaming parser reports and splices
the document: everything outside the element keeps its exact bytes (declaration,
whitespace, comments).  This module does the same with expat:

- ``find``: (start, end) of the one element selected, None if none, ``SelectorError``
  if several.
- ``put``: replace the selected element, or insert the new one when absent: after the
  last sibling of the same name, else as the parent's last child; ``name[n]`` goes
  after the (n-1)th same-name sibling (before the first one for n = 1).  Returns
  ``(new_document, created)``, or None when there is no parent.  The new bytes are
  inserted as given, with no whitespace added.
- ``delete``: the document without the element's bytes (its surrounding whitespace stays).

Quirk kept from OpenXCAP: inserting into an empty-element parent (``<list/>``) puts
the new element after it, so the application's GET(PUT(x)) == x check then fails (409).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from xml.parsers import expat

__all__ = [
    "LocatorError",
    "SelectorError",
    "check_xml_fragment",
    "delete",
    "find",
    "get",
    "put",
    "select",
]


class LocatorError(ValueError):
    pass


class SelectorError(LocatorError):
    http_error = 404

    def __init__(self, selector: Any) -> None:
        super().__init__(f"The requested node selector {selector} matches more than one element")


class _Node:
    __slots__ = ("attrs", "children", "content_end", "end", "name", "start")

    def __init__(self, name: tuple[str | None, str], attrs: dict[str, str], start: int) -> None:
        self.name = name
        self.attrs = attrs
        self.start = start
        self.end = start
        self.content_end = start  # where a new last child goes
        self.children: list[_Node] = []


def _split(name: str) -> tuple[str | None, str]:
    uri, sep, local = name.rpartition(" ")
    return (uri, local) if sep else (None, name)


def _clark(name: str) -> str:
    uri, sep, local = name.rpartition(" ")
    return "{%s}%s" % (uri, local) if sep else name  # noqa: UP031


def check_xml_fragment(element: bytes) -> None:
    """Raise ``expat.ExpatError`` unless ``element`` is one well-formed element
    (namespace prefixes are not checked)."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def no_doctype(*_args: Any) -> None:
        raise expat.ExpatError("DOCTYPE is not allowed in an element")

    parser.StartDoctypeDeclHandler = no_doctype
    parser.Parse(element, True)


def _parse(document: bytes) -> _Node:
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Node] = []
    found: list[_Node] = []
    fresh: list[_Node | None] = [None]  # the element whose start tag was the last event

    def start(name: str, attrs: dict[str, str]) -> None:
        node = _Node(
            _split(name), {_clark(k): v for k, v in attrs.items()}, parser.CurrentByteIndex
        )
        (stack[-1].children if stack else found).append(node)
        stack.append(node)
        fresh[0] = node

    def end(_name: str) -> None:
        node = stack.pop()
        index = parser.CurrentByteIndex
        if fresh[0] is node and document[index - 2 : index] == b"/>":
            node.end = node.content_end = index  # <name .../>: expat reports its end
        else:
            node.content_end = index  # at "</name>"
            node.end = document.index(b">", index) + 1
        fresh[0] = None

    def other(*_args: Any) -> None:
        fresh[0] = None

    def no_doctype(*_args: Any) -> None:
        raise LocatorError("documents with a DOCTYPE are not supported")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = other
    parser.CommentHandler = other
    parser.ProcessingInstructionHandler = other
    parser.StartCdataSectionHandler = other
    parser.StartDoctypeDeclHandler = no_doctype
    parser.Parse(document, True)
    return found[0]


def select(
    root: Any,
    steps: list[Any],
    children: Callable[[Any], Iterable[Any]],
    name: Callable[[Any], tuple[str | None, str]],
    attr: Callable[[Any, str], str | None],
) -> list[Any]:
    """The nodes ``steps`` select under the document element ``root`` (RFC 4825 §6.3:
    positions count the siblings that match the step's name)."""

    def matches_name(step: Any, node: Any) -> bool:
        return step.name == "*" or tuple(step.name) == name(node)

    def matches_att(step: Any, node: Any) -> bool:
        return step.att_name is None or attr(node, step.att_name) == step.att_value

    first = steps[0]
    if not (matches_name(first, root) and first.position in (None, 1) and matches_att(first, root)):
        return []
    current = [root]
    for step in steps[1:]:
        selected = []
        for parent in current:
            count = 0
            for child in children(parent):
                if not matches_name(step, child):
                    continue
                count += 1
                if step.position is not None and step.position != count:
                    continue
                if matches_att(step, child):
                    selected.append(child)
        current = selected
    return current


def _select_nodes(root: _Node, steps: list[Any]) -> list[_Node]:
    return select(root, steps, lambda n: n.children, lambda n: n.name, lambda n, k: n.attrs.get(k))


def find(document: bytes, selector: Any) -> tuple[int, int] | None:
    nodes = _select_nodes(_parse(document), list(selector))
    if not nodes:
        return None
    if len(nodes) > 1:
        raise SelectorError(selector)
    return nodes[0].start, nodes[0].end


def get(document: bytes, selector: Any) -> bytes | None:
    location = find(document, selector)
    return None if location is None else document[location[0] : location[1]]


def delete(document: bytes, selector: Any) -> bytes | None:
    location = find(document, selector)
    return None if location is None else document[: location[0]] + document[location[1] :]


def _insert_point(root: _Node, steps: list[Any]) -> int | None:
    if len(steps) < 2:
        return None
    parents = _select_nodes(root, steps[:-1])
    if not parents:
        return None
    if len(parents) > 1:
        raise SelectorError("/".join(getattr(s, "text", "?") for s in steps))
    parent, last = parents[0], steps[-1]
    same = [c for c in parent.children if last.name == "*" or tuple(last.name) == c.name]
    if last.position is None:
        return same[-1].end if same and last.name != "*" else parent.content_end
    if last.position == 1 and same:
        return same[0].start
    if last.position >= 2 and len(same) >= last.position - 1:
        return same[last.position - 2].end
    return parent.content_end


def put(document: bytes, selector: Any, element: bytes) -> tuple[bytes, bool] | None:
    root = _parse(document)
    nodes = _select_nodes(root, list(selector))
    if len(nodes) > 1:
        raise SelectorError(selector)
    if nodes:
        start, end, created = nodes[0].start, nodes[0].end, False
    else:
        point = _insert_point(root, list(selector))
        if point is None:
            return None
        start = end = point
        created = True
    return document[:start] + element + document[end:], created
