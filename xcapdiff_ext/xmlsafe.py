"""The only place XML bytes become trees: a hardened lxml parser (STYLE §4, DESIGN rules).

No entity expansion, no DTD or network loading, libxml2's own depth/size limits
(``huge_tree=False``: nesting is capped at 256), a byte cap checked before parsing,
and documents that declare entities are refused outright.  Whitespace, comments and
processing instructions are kept: they are patchable data (spec/NOTES.md trap 5).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from .errors import DocumentTooLarge, MalformedXml, UnsafeXml

__all__ = ["DEFAULT_LIMITS", "Limits", "c14n", "parse_document", "parse_fragment"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits; ``max_bytes`` defaults to 10 MiB (DESIGN: settable)."""

    max_bytes: int = 10 * 1024 * 1024
    max_depth: int = 256

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_depth <= 0:
            raise ValueError("limits must be positive")


DEFAULT_LIMITS = Limits()

# libxml2 messages that mean "refused for safety" rather than "not XML".
_UNSAFE_WORDS = ("depth", "nesting", "amplification", "network", "failed to load", "entity")


def _parser() -> etree.XMLParser:
    # A fresh parser per call: a shared parser serialises threads (lxml FAQ) and
    # set_default_parser would change the whole process.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        recover=False,
        remove_blank_text=False,
        remove_comments=False,
        remove_pis=False,
        strip_cdata=True,
        # Never pass collect_ids=False: with libxml2 2.14 it makes the parser open
        # the external subset from local files (tests/test_xmlsafe.py guards it).
    )


def _error_line(err: etree.XMLSyntaxError) -> tuple[str, int | None]:
    # lxml-stubs: _ErrorLog is declared empty
    entry = err.error_log.last_error if err.error_log else None  # type: ignore[attr-defined]
    if entry is not None:
        return entry.message.strip(), entry.line
    return str(err), None


def parse_document(
    data: bytes, *, where: str = "document", limits: Limits = DEFAULT_LIMITS
) -> etree._ElementTree:
    """Parse ``data`` (bytes only: the XML declaration owns the encoding).

    Raises ``DocumentTooLarge``, ``MalformedXml`` or ``UnsafeXml`` naming ``where``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_document takes bytes, not {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise DocumentTooLarge(where, f"{len(data)} bytes exceeds the limit of {limits.max_bytes}")
    try:
        root = etree.fromstring(bytes(data), _parser())
    except etree.XMLSyntaxError as err:
        message, line = _error_line(err)
        if any(word in message.lower() for word in _UNSAFE_WORDS):
            raise UnsafeXml(where, message, line) from None
        raise MalformedXml(where, message, line) from None
    except ValueError as err:  # lxml: e.g. unicode strings with an encoding declaration
        raise MalformedXml(where, str(err)) from None
    tree = root.getroottree()
    _check_safe(tree, where, limits)
    return tree


def _check_safe(tree: etree._ElementTree, where: str, limits: Limits) -> None:
    dtd = tree.docinfo.internalDTD
    # lxml-stubs: DTD.iterentities and DocInfo.system_url are missing
    if dtd is not None and any(True for _ in dtd.iterentities()):  # type: ignore[attr-defined]
        raise UnsafeXml(where, "entity declarations are not accepted")
    if tree.docinfo.system_url or tree.docinfo.public_id:  # type: ignore[attr-defined]
        raise UnsafeXml(where, "external DTD references are not accepted")
    for node in tree.iter(etree.Entity):
        # lxml-stubs: iter(Entity) yields _Element (no .name); sourceline is untyped
        raise UnsafeXml(where, f"entity reference &{node.name}; is not accepted", node.sourceline)  # type: ignore[attr-defined, arg-type]
    if limits.max_depth < 256:
        _check_depth(tree.getroot(), where, limits.max_depth)


def _check_depth(root: etree._Element, where: str, max_depth: int) -> None:
    # libxml2 already stops at 256 levels; a stricter limit needs an explicit walk.
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            # lxml-stubs: sourceline is untyped (declared as ...)
            raise UnsafeXml(where, f"nesting deeper than {max_depth} levels", node.sourceline)  # type: ignore[arg-type]
        stack.extend((child, depth + 1) for child in node)


def parse_fragment(
    content: bytes, wrapper: etree._Element, *, where: str = "fragment"
) -> etree._Element:
    """Return a copy of the empty element ``wrapper`` holding ``content`` (mixed
    content: text, elements, comments, PIs), parsed with the same hardening as
    documents.  The copy is built by the parser, so declarations written inside
    ``content`` stay exactly as written (lxml would merge them when moving nodes)."""
    if len(wrapper) or wrapper.text:
        raise ValueError("parse_fragment needs an empty wrapper element")
    head = etree.tostring(wrapper, with_tail=False)
    if not head.endswith(b"/>"):
        raise ValueError("unexpected serialisation of the wrapper element")
    end = b"</" + head[1:].split(b" ", 1)[0].split(b"/", 1)[0] + b">"
    data = head[:-2] + b">" + content + end
    return parse_document(data, where=where).getroot()


def c14n(tree: etree._ElementTree | etree._Element) -> bytes:
    """Canonical XML 1.0 with comments: the equality RFC 5261 §3 and RFC 5874 §1 use."""
    if isinstance(tree, etree._Element):
        tree = tree.getroottree()
    return etree.tostring(tree, method="c14n", with_comments=True)
