"""RFC 5874 xcap-diff values: RFC examples, build/parse round trips, XSD validity,
and the one-change recipe ``document_entry``."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from xcapdiff_ext.diff.ops import Add, Patch, Remove, Replace, text_content
from xcapdiff_ext.errors import MalformedXml, UnpatchableChange, XmlInputError
from xcapdiff_ext.xcapdiff import (
    MEDIA_TYPE,
    XCAP_DIFF_NS,
    AttributeEntry,
    DocumentEntry,
    ElementEntry,
    InvalidXcapDiff,
    XcapDiff,
    build_xcap_diff,
    document_elements,
    document_entry,
    parse_xcap_diff,
)
from xcapdiff_ext.xmlsafe import c14n, parse_document

from .shared import VECTORS, assert_valid_xcap_diff, shared_path

ROOT = "http://xcap.example.com/"
JOE = "tests/users/sip:joe@example.com/index"


def vector(name: str) -> bytes:
    return shared_path("vectors", *name.split("/")).read_bytes()


def canon(data: bytes) -> bytes:
    return c14n(parse_document(data))


def build(diff: XcapDiff) -> bytes:
    """build_xcap_diff plus the checks every output must pass."""
    data = build_xcap_diff(diff)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert_valid_xcap_diff(data)
    tree = etree.fromstring(data)
    for el in tree.iter(f"{{{XCAP_DIFF_NS}}}*"):
        assert el.prefix == "d"
        assert None not in el.nsmap  # never a default namespace (NOTES trap 1)
    return data


# --------------------------------------------------------------------------- RFC examples

XCAP_DIFF_VECTORS = sorted(
    [
        p
        for p in (VECTORS / "rfc5874").glob("*.xml")
        if not p.name.startswith(("A-", "A.1-put", "A.2-put"))
    ]
    + list((VECTORS / "rfc5875").glob("*notify*.xml"))
    + [VECTORS / "derived" / "trap-prefixed-ok.xml"]
)


def test_vectors_are_there() -> None:
    # A missing shared tree must fail, never skip (and never collect zero cases).
    assert len(XCAP_DIFF_VECTORS) == 20, XCAP_DIFF_VECTORS


@pytest.mark.parametrize("path", XCAP_DIFF_VECTORS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rfc_example_parses_and_rebuilds(path) -> None:  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    assert_valid_xcap_diff(data)
    diff = parse_xcap_diff(data)
    assert diff.xcap_root.endswith("/")
    again = parse_xcap_diff(build(diff))
    assert again == diff


def test_rfc5874_s5_example_values() -> None:
    diff = parse_xcap_diff(vector("rfc5874/s5-example.xml"))
    assert diff.xcap_root == "http://xcap.example.com/root/"
    doc, element, attribute = diff.entries
    assert doc == DocumentEntry(
        "resource-lists/users/sip:joe@example.com/coworkers", "8a77f8d", "7ahggs"
    )
    assert isinstance(element, ElementEntry) and element.exists and element.content is not None
    assert element.sel.endswith("service%5b@uri='sip:marketing@example.com'%5d")
    # The element's content keeps its expanded names: the default namespace of the
    # xcap-diff document (rls-services) travels with it, the d: binding does not.
    content = etree.fromstring(element.content)
    assert content.tag == "{urn:ietf:params:xml:ns:rls-services}service"
    assert content[0][0].tag == "{urn:ietf:params:xml:ns:resource-lists}entry"
    assert b"xcap-diff" not in element.content
    assert attribute == AttributeEntry(
        "rls-services/users/sip:joe@example.com/index/~~/*/service/@uri",
        True,
        "sip:marketing@example.com",
    )


def test_rfc5874_a1_forms() -> None:
    created = parse_xcap_diff(vector("rfc5874/A.1-created.xml")).entries
    modified = parse_xcap_diff(vector("rfc5874/A.1-modified.xml")).entries
    removed = parse_xcap_diff(vector("rfc5874/A.1-removed.xml")).entries
    sel = "tests/users/sip:joe@example.com/another_document"
    assert created == (DocumentEntry(sel, None, "terteer"),)
    assert modified == (DocumentEntry(sel, "terteer", "huwiias"),)
    assert removed == (DocumentEntry(sel, "huwiias", None),)


def test_rfc5874_a2_chain_values() -> None:
    diff = parse_xcap_diff(vector("rfc5874/A.2-chain.xml"))
    assert [(e.previous_etag, e.new_etag) for e in diff.entries] == [  # type: ignore[union-attr]
        ("7ahggs", "fgherhryt3"),
        ("fgherhryt3", "dgdgdfgrrr"),
        ("dgdgdfgrrr", "63hjjsll"),
    ]
    first = diff.entries[0]
    assert isinstance(first, DocumentEntry)
    assert first.patch == Patch((Add("*", b"<foo>this is a new element</foo>"),))
    bar = diff.entries[1]
    assert isinstance(bar, DocumentEntry) and bar.patch is not None
    assert bar.patch.ops[0].content == b"<bar>this is a bar element\n</bar>"  # type: ignore[union-attr]


def test_attribute_exists_zero_and_empty_notify() -> None:
    removed = parse_xcap_diff(vector("rfc5875/A.5-notify-attribute-removed.xml"))
    assert removed.entries == (
        AttributeEntry("tests/users/sip:joe@example.com/index/~~/doc/@id", False),
    )
    assert b'exists="false"' in build(removed)
    assert parse_xcap_diff(vector("rfc5875/A.5-notify-initial-empty.xml")) == XcapDiff(ROOT)


def test_default_namespace_trap_is_refused_but_usable_raw() -> None:
    """derived/trap-default-ns-xcap-diff.xml: with the xcap-diff namespace as default
    namespace, sel="doc" means {xcap-diff}doc; a Patch (prefixes only) cannot say that,
    so parse_xcap_diff refuses it; document_elements hands the raw element over."""
    data = vector("derived/trap-default-ns-xcap-diff.xml")
    assert_valid_xcap_diff(data)
    with pytest.raises(InvalidXcapDiff, match="default namespace"):
        parse_xcap_diff(data)
    (raw,) = document_elements(data)
    assert (raw.sel, raw.previous_etag, raw.new_etag) == (JOE, "7ahggs", "fgherhryt3")
    assert raw.element.nsmap[None] == XCAP_DIFF_NS


def test_default_namespace_without_names_in_sel_is_fine() -> None:
    # sel="*" has no names; the content is explicitly qualified: nothing relies on it.
    data = (
        b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x.example/">'
        b'<document sel="a/b" previous-etag="1" new-etag="2"><add sel="*">'
        b'<foo xmlns="">x</foo></add></document></xcap-diff>'
    )
    (entry,) = parse_xcap_diff(data).entries
    assert isinstance(entry, DocumentEntry)
    assert entry.patch == Patch((Add("*", b'<foo xmlns="">x</foo>'),))


def test_default_namespace_content_is_refused() -> None:
    # <foo> is {xcap-diff}foo here; bytes without the declaration would change it.
    data = (
        b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x.example/">'
        b'<document sel="a/b" previous-etag="1" new-etag="2"><add sel="*"><foo/></add>'
        b"</document></xcap-diff>"
    )
    with pytest.raises(InvalidXcapDiff, match="default namespace"):
        parse_xcap_diff(data)


def test_prefixes_in_scope_become_patch_namespaces() -> None:
    data = (
        b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xmlns:rl="urn:rl" '
        b'xcap-root="http://x.example/r"><d:document sel="a/b" previous-etag="1" new-etag="2" '
        b'xmlns:cp="urn:cp"><d:add sel="rl:list" pos="prepend"><rl:entry uri="sip:a&amp;b"/>'
        b'<cp:x xmlns:own="urn:own"><own:y/></cp:x></d:add><d:replace sel="rl:list/@name">'
        b'a &lt;&amp;&gt; "b"</d:replace><d:remove sel="rl:list/rl:entry[2]" ws="before"/>'
        b'</d:document><ext:thing xmlns:ext="urn:ext"><d:ignored/></ext:thing></d:xcap-diff>'
    )
    assert_valid_xcap_diff(data)
    diff = parse_xcap_diff(data)
    assert diff.xcap_root == "http://x.example/r/"
    (entry,) = diff.entries
    assert isinstance(entry, DocumentEntry)
    assert entry.patch == Patch(
        (
            Add(
                "rl:list",
                b'<rl:entry uri="sip:a&amp;b"/><cp:x xmlns:own="urn:own"><own:y/></cp:x>',
                "prepend",
            ),
            Replace("rl:list/@name", b'a &lt;&amp;&gt; "b"'),
            Remove("rl:list/rl:entry[2]", "before"),
        ),
        (("cp", "urn:cp"), ("rl", "urn:rl")),
    )
    assert parse_xcap_diff(build(diff)) == diff


# --------------------------------------------------------------------------- strict parse

BAD = {
    "wrong-root": b'<d:diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/"/>',
    "no-namespace": b'<xcap-diff xcap-root="http://x/"/>',
    "wrong-namespace": b'<xcap-diff xmlns="urn:other" xcap-root="http://x/"/>',
    "no-xcap-root": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff"/>',
    "relative-xcap-root": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xcap-root="x/"/>',
    "ftp-xcap-root": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xcap-root="ftp://x/"/>',
    "no-sel": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/">'
    b'<d:document new-etag="1"/></d:xcap-diff>',
    "absolute-sel": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/">'
    b'<d:document sel="http://x/a/b" new-etag="1"/></d:xcap-diff>',
    "rooted-sel": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/">'
    b'<d:document sel="/a/b" new-etag="1"/></d:xcap-diff>',
    "no-etag": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/">'
    b'<d:document sel="a/b"/></d:xcap-diff>',
    "ops-and-body-not-changed": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" previous-etag="1" new-etag="2">'
    b'<d:body-not-changed/><d:remove sel="doc/a"/></d:document></d:xcap-diff>',
    "body-not-changed-twice": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" previous-etag="1" new-etag="2">'
    b"<d:body-not-changed/><d:body-not-changed/></d:document></d:xcap-diff>",
    "body-not-changed-new-only": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" new-etag="2"><d:body-not-changed/>'
    b"</d:document></d:xcap-diff>",
    "patch-new-only": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" new-etag="2"><d:remove sel="doc/a"/>'
    b"</d:document></d:xcap-diff>",
    "patch-removal": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" previous-etag="2"><d:remove sel="doc/a"/>'
    b"</d:document></d:xcap-diff>",
    "op-without-sel": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" previous-etag="1" new-etag="2">'
    b"<d:add>x</d:add></d:document></d:xcap-diff>",
    "bad-pos": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" previous-etag="1" new-etag="2">'
    b'<d:add sel="doc" pos="inside">x</d:add></d:document></d:xcap-diff>',
    "bad-ws": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" previous-etag="1" new-etag="2">'
    b'<d:remove sel="doc/a" ws="all"/></d:document></d:xcap-diff>',
    "remove-with-content": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" previous-etag="1" new-etag="2">'
    b'<d:remove sel="doc/a"><x/></d:remove></d:document></d:xcap-diff>',
    "unknown-d-element": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:documents sel="a/b" new-etag="1"/></d:xcap-diff>',
    "unknown-d-child": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" previous-etag="1" new-etag="2">'
    b'<d:insert sel="doc"/></d:document></d:xcap-diff>',
    "unqualified-child": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><document sel="a/b" new-etag="1"/></d:xcap-diff>',
    "text-in-root": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/">hello</d:xcap-diff>',
    "entry-after-extension": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><e:x xmlns:e="urn:e"/><d:document sel="a/b" new-etag="1"/>'
    b"</d:xcap-diff>",
    "bad-exists": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:attribute sel="a/b/~~/x/@y" exists="no"/></d:xcap-diff>',
    "removed-attribute-with-value": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:attribute sel="a/b/~~/x/@y" exists="0">v</d:attribute></d:xcap-diff>',
    "attribute-with-element": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:attribute sel="a/b/~~/x/@y"><v/></d:attribute></d:xcap-diff>',
    "element-two-children": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:element sel="a/b/~~/x"><x/><x/></d:element></d:xcap-diff>',
    "removed-element-with-content": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:element sel="a/b/~~/x" exists="false"><x/></d:element></d:xcap-diff>',
    "prefix-bound-twice": b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" '
    b'xcap-root="http://x/"><d:document sel="a/b" previous-etag="1" new-etag="2">'
    b'<d:remove xmlns:p="urn:1" sel="p:a"/><d:remove xmlns:p="urn:2" sel="p:a"/>'
    b"</d:document></d:xcap-diff>",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_xcap_diff_is_refused(name: str) -> None:
    with pytest.raises(InvalidXcapDiff):
        parse_xcap_diff(BAD[name])


def test_not_xml_is_malformed() -> None:
    with pytest.raises(MalformedXml):
        parse_xcap_diff(b"<d:xcap-diff")
    with pytest.raises(TypeError):
        parse_xcap_diff("<x/>")  # type: ignore[arg-type]


def test_extensions_are_ignored() -> None:
    data = (
        b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xmlns:e="urn:e" '
        b'xcap-root="http://x/" e:flag="1"><!-- note --><d:document sel="a/b" previous-etag="1" '
        b'new-etag="2" e:a="b"><e:hint/></d:document><?pi x?>'
        b'<d:attribute sel="a/b/~~/x/@y">v<!-- c -->w</d:attribute><e:x><e:y/></e:x></d:xcap-diff>'
    )
    assert_valid_xcap_diff(data)
    assert parse_xcap_diff(data).entries == (
        DocumentEntry("a/b", "1", "2"),
        AttributeEntry("a/b/~~/x/@y", True, "vw"),
    )


@pytest.mark.parametrize(
    ("raw", "value"), [("true", True), ("1", True), ("false", False), ("0", False)]
)
def test_exists_spellings(raw: str, value: bool) -> None:
    data = (
        b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/">'
        b'<d:element sel="a/b/~~/x" exists="%s"/></d:xcap-diff>' % raw.encode()
    )
    assert parse_xcap_diff(data).entries == (ElementEntry("a/b/~~/x", value),)


# --------------------------------------------------------------------------- values


def test_constants() -> None:
    assert XCAP_DIFF_NS == "urn:ietf:params:xml:ns:xcap-diff"
    assert MEDIA_TYPE == "application/xcap-diff+xml"


@pytest.mark.parametrize(
    "make",
    [
        lambda: DocumentEntry("a/b", None, None),
        lambda: DocumentEntry("a/b", "1", None, body_not_changed=True),
        lambda: DocumentEntry("a/b", None, "2", body_not_changed=True),
        lambda: DocumentEntry("a/b", None, "2", Patch((Remove("x/y"),))),
        lambda: DocumentEntry("a/b", "1", None, Patch((Remove("x/y"),))),
        lambda: DocumentEntry("a/b", "1", "2", Patch((Remove("x/y"),)), body_not_changed=True),
        lambda: DocumentEntry("a/b", "1", "2", Patch()),
        lambda: DocumentEntry("/a/b", "1", "2"),
        lambda: DocumentEntry("http://x/a/b", "1", "2"),
        lambda: DocumentEntry("", "1", "2"),
        lambda: DocumentEntry("a/b", "", "2"),
        lambda: DocumentEntry("a/b", "1\x00", "2"),
        lambda: ElementEntry("a/b/~~/x", False, b"<x/>"),
        lambda: ElementEntry("a/b/~~/x", True, b"text"),
        lambda: ElementEntry("/a/b/~~/x"),
        lambda: AttributeEntry("a/b/~~/x/@y", False, "v"),
        lambda: AttributeEntry("a/b/~~/x/@y", True, "\x01"),
        lambda: XcapDiff("xcap.example.com/"),
        lambda: XcapDiff("ftp://xcap.example.com/"),
        lambda: XcapDiff("http:///path/"),
        lambda: XcapDiff("http://x/?q=1"),
        lambda: XcapDiff(ROOT, ("not an entry",)),  # type: ignore[arg-type]
    ],
)
def test_invariants(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError)):
        make()


def test_xcap_root_gets_a_trailing_slash() -> None:
    assert XcapDiff("https://xcap.example.com/root").xcap_root == "https://xcap.example.com/root/"
    assert XcapDiff("http://xcap.example.com").xcap_root == "http://xcap.example.com/"
    assert XcapDiff(ROOT, [DocumentEntry("a/b", None, "1")]).entries == (  # type: ignore[arg-type]
        DocumentEntry("a/b", None, "1"),
    )


def test_attribute_value_none_means_empty_when_it_exists() -> None:
    assert AttributeEntry("a/~~/x/@y") == AttributeEntry("a/~~/x/@y", True, "")


def test_patch_may_not_rebind_d() -> None:
    entry = DocumentEntry("a/b", "1", "2", Patch((Remove("d:x"),), (("d", "urn:not-xcap-diff"),)))
    with pytest.raises(ValueError, match="'d'"):
        build_xcap_diff(XcapDiff(ROOT, (entry,)))


def test_malformed_element_content_is_refused_at_build() -> None:
    with pytest.raises(ValueError):
        build_xcap_diff(XcapDiff(ROOT, (ElementEntry("a/~~/x", True, b"<x>"),)))


# --------------------------------------------------------------------------- hand-made round trips

NASTY = 'it\'s "quoted" & <tagged> > \u00e9t\u00e9 \u2603 \U0001f600\ttab\nline\r\n'

HAND_MADE = [
    DocumentEntry(JOE, None, "created"),
    DocumentEntry(JOE, "deleted", None),
    DocumentEntry(JOE, "a", "b"),
    DocumentEntry(JOE, "a", "b", body_not_changed=True),
    DocumentEntry("tests/users/sip:o'neil&co@example.com/ind%C3%A9x", '"q"&<', "\u00e9\u2603"),
    ElementEntry(f"{JOE}/~~/doc/foo", True, b"<foo>this is a new element</foo>"),
    ElementEntry(f"{JOE}/~~/doc/foo", False),
    ElementEntry(f"{JOE}/~~/doc/foo"),
    ElementEntry(
        "rls-services/users/sip:joe@example.com/index/~~/*/service%5b@uri='sip:m@example.com'%5d",
        True,
        '<s:service xmlns:s="urn:ietf:params:xml:ns:rls-services" uri="a&amp;b&quot;c">'
        '\n  <list xmlns="urn:x" name="\u00e9">t &lt; &amp; &gt;</list><!-- c --><?p i?>\n'
        "</s:service>".encode(),
    ),
    ElementEntry(f"{JOE}/~~/doc/x", True, '<d:x xmlns:d="urn:other">\u2603</d:x>'.encode()),
    AttributeEntry(f"{JOE}/~~/doc/@id", True, "bar"),
    AttributeEntry(f"{JOE}/~~/doc/@id", True, NASTY),
    AttributeEntry(f"{JOE}/~~/doc/@id", True, ""),
    AttributeEntry(f"{JOE}/~~/doc/@id", False),
    AttributeEntry('a/b/~~/x[@q="it\'s"]/@y?xmlns(p=urn:p)', True, "  spaced  "),
]


@pytest.mark.parametrize("entry", HAND_MADE, ids=lambda e: type(e).__name__)
def test_hand_made_round_trip(entry) -> None:  # type: ignore[no-untyped-def]
    diff = XcapDiff("https://xcap.example.com/xcap-root", (entry,))
    data = build(diff)
    assert parse_xcap_diff(data) == diff


def test_all_hand_made_in_one_document_keep_order() -> None:
    diff = XcapDiff(ROOT, tuple(HAND_MADE))
    assert parse_xcap_diff(build(diff)) == diff


def test_exists_written_only_when_false() -> None:
    data = build(
        XcapDiff(
            ROOT,
            (
                ElementEntry("a/~~/x"),
                AttributeEntry("a/~~/x/@y", True, "v"),
                ElementEntry("a/~~/z", False),
            ),
        )
    )
    assert data.count(b"exists=") == 1 and b'exists="false"' in data


def test_nasty_values_are_escaped_by_the_serializer() -> None:
    entry = DocumentEntry("a/b", NASTY.replace("\n", "").replace("\r", ""), "x")
    data = build(XcapDiff(ROOT, (entry, AttributeEntry("a/~~/x/@y", True, NASTY))))
    assert b"&amp;" in data and b"&lt;" in data
    assert parse_xcap_diff(data).entries[1] == AttributeEntry("a/~~/x/@y", True, NASTY)


# --------------------------------------------------------------------------- hypothesis: no patches

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
xml_text = st.text(
    st.characters(blacklist_categories=("Cs",)).filter(lambda c: not _NOT_XML.match(c)),
    max_size=20,
)
nonempty_text = xml_text.filter(bool)
segment_char = st.sampled_from("abcXYZ019-._~!$&'()*+,;=@\u00e9\u2603")
first_segment = st.text(segment_char, min_size=1, max_size=8)
later_segment = st.text(st.one_of(segment_char, st.just(":")), min_size=1, max_size=8)
relative_sel = st.builds(
    lambda first, rest: "/".join([first, *rest]),
    first_segment,
    st.lists(later_segment, max_size=4),
)
xcap_sel = st.builds(lambda base, tail: f"{base}/~~/{tail}", relative_sel, xml_text)

NAMES = ["a", "entry", "list", "x.y", "\u00e9l\u00e9ment"]
NAMESPACES = [
    None,
    ("s", "urn:s"),
    ("rl", "urn:ietf:params:xml:ns:resource-lists"),
    (None, "urn:def"),
    ("d", "urn:other-d"),
]


@st.composite
def element_content(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A small element tree (namespaces, attributes, mixed content) serialized by lxml."""

    def make(parent: etree._Element | None, level: int) -> etree._Element:
        name = draw(st.sampled_from(NAMES))
        ns = draw(st.sampled_from(NAMESPACES))
        tag, nsmap = (name, None) if ns is None else (f"{{{ns[1]}}}{name}", {ns[0]: ns[1]})
        el = (
            etree.Element(tag, nsmap=nsmap)
            if parent is None
            else etree.SubElement(parent, tag, nsmap=nsmap)
        )
        for attr in draw(st.lists(st.sampled_from(["id", "uri", "name"]), unique=True, max_size=2)):
            el.set(attr, draw(xml_text))
        el.text = draw(xml_text) or None
        if level < 2:
            for _ in range(draw(st.integers(0, 2))):
                child = make(el, level + 1)
                child.tail = draw(xml_text) or None
        return el

    return etree.tostring(make(None, depth), encoding="UTF-8")


document_entries = st.one_of(
    st.builds(DocumentEntry, relative_sel, st.none(), nonempty_text),
    st.builds(DocumentEntry, relative_sel, nonempty_text, st.none()),
    st.builds(DocumentEntry, relative_sel, nonempty_text, nonempty_text),
    st.builds(
        lambda s, p, n: DocumentEntry(s, p, n, body_not_changed=True),
        relative_sel,
        nonempty_text,
        nonempty_text,
    ),
)
element_entries = st.one_of(
    st.builds(ElementEntry, xcap_sel, st.just(True), st.none() | element_content()),
    st.builds(ElementEntry, xcap_sel, st.just(False)),
)
attribute_entries = st.one_of(
    st.builds(AttributeEntry, xcap_sel, st.just(True), xml_text),
    st.builds(AttributeEntry, xcap_sel, st.just(False)),
)
roots = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(["xcap.example.com", "192.0.2.1:8080", "[2001:db8::1]"]),
    st.sampled_from(["", "xcap-root", "a/b/", "r%C3%A9"]),
)
xcap_diffs = st.builds(
    XcapDiff,
    roots,
    st.lists(st.one_of(document_entries, element_entries, attribute_entries), max_size=6).map(
        tuple
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xcap_diffs)
@example(XcapDiff(ROOT))
def test_round_trip_without_patches(diff: XcapDiff) -> None:
    assert parse_xcap_diff(build(diff)) == diff


# --------------------------------------------------------------------------- patches

TARGET = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<doc xmlns="urn:def" xmlns:s="urn:s" a="1">\n  <x:item xmlns:x="urn:x" id="1">t</x:item>\n'
    b'  <!--c--><s:e/>\n  <list><entry n="1"/><entry n="2"/></list>\n</doc>\n'
)
NS = (("p", "urn:def"), ("s", "urn:s"), ("x", "urn:x"))

PATCHES = {
    "add-element": Patch((Add("p:doc", b'<p:new q="&quot;&amp;">v &amp; w \xc3\xa9</p:new>'),), NS),
    "add-prepend-text-and-element": Patch(
        (Add("p:doc/p:list", b'  <p:entry n="0"/>', "prepend"),), NS
    ),
    "add-before-comment": Patch((Add("p:doc/comment()[1]", b"<?pi data?>", "before"),), NS),
    "add-attribute": Patch((Add("p:doc", b"it's &lt;x&gt;", type="@b"),), NS),
    "add-namespace": Patch((Add("p:doc", b"urn:new", type="namespace::n"),), NS),
    "replace-attribute": Patch((Replace("p:doc/@a", b'2 &amp; "q"'),), NS),
    "replace-element": Patch((Replace("p:doc/x:item[@id='1']", b'<x:item id="2">u</x:item>'),), NS),
    "replace-comment": Patch((Replace("p:doc/comment()[1]", b"<!--d-->"),), NS),
    "replace-text": Patch((Replace("p:doc/x:item/text()", b"new &amp; text"),), NS),
    "remove-element-ws": Patch((Remove("p:doc/s:e", "after"),), NS),
    "remove-attribute": Patch((Remove("p:doc/@a"),), NS),
    "several": Patch(
        (
            Add("p:doc/p:list", b'<p:entry n="3"/>'),
            Remove("p:doc/p:list/p:entry[1]"),
            Replace("p:doc/p:list/p:entry[@n='2']/@n", b"two"),
            Add("p:doc/p:list/p:entry[1]", b'<s:mark xmlns:own="urn:own"/>', "after"),
        ),
        NS,
    ),
}


@pytest.mark.parametrize("name", sorted(PATCHES))
def test_patch_round_trip_and_apply(name: str) -> None:
    from xcapdiff_ext.diff.apply import apply_patch

    patch = PATCHES[name]
    entry = DocumentEntry(JOE, "v1", "v2", patch)
    data = build(XcapDiff(ROOT, (entry,)))
    (parsed,) = parse_xcap_diff(data).entries
    assert isinstance(parsed, DocumentEntry)
    assert (parsed.sel, parsed.previous_etag, parsed.new_etag) == (
        entry.sel,
        entry.previous_etag,
        entry.new_etag,
    )
    assert parsed.patch is not None
    assert parsed.patch.ops == patch.ops
    assert set(parsed.patch.namespaces) == set(patch.namespaces)
    expected = canon(apply_patch(TARGET, patch))
    assert expected != canon(TARGET)
    assert canon(apply_patch(TARGET, parsed.patch)) == expected
    (raw,) = document_elements(data)
    assert canon(apply_patch(TARGET, raw.element)) == expected


patch_text = xml_text.map(text_content)


@st.composite
def patches(draw: st.DrawFn) -> Patch:
    ops = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["add", "add-attr", "replace", "remove"]))
        if kind == "add":
            content = draw(patch_text) + draw(element_content()) + draw(patch_text)
            ops.append(Add("p:doc/p:list", content, draw(st.sampled_from([None, "prepend"]))))
        elif kind == "add-attr":
            ops.append(
                Add(
                    "p:doc",
                    draw(patch_text),
                    type=draw(st.sampled_from(["@b", "@s:c"])),
                )
            )
        elif kind == "replace":
            ops.append(
                Replace(
                    draw(st.sampled_from(["p:doc/@a", "p:doc/x:item/text()[1]"])),
                    draw(patch_text),
                )
            )
        else:
            ops.append(
                Remove(
                    draw(st.sampled_from(["p:doc/s:e", "p:doc/p:list/p:entry[1]"])),
                    draw(st.sampled_from([None, "before"])),
                )
            )
    return Patch(tuple(ops), NS)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(relative_sel, nonempty_text, nonempty_text, patches())
def test_round_trip_with_patches(sel: str, previous: str, new: str, patch: Patch) -> None:
    entry = DocumentEntry(sel, previous, new, patch)
    (parsed,) = parse_xcap_diff(build(XcapDiff(ROOT, (entry,)))).entries
    assert isinstance(parsed, DocumentEntry)
    assert (parsed.sel, parsed.previous_etag, parsed.new_etag) == (sel, previous, new)
    assert parsed == dataclasses.replace(entry, patch=parsed.patch)
    assert parsed.patch is not None
    assert [(type(a), a.sel) for a in parsed.patch.ops] == [(type(b), b.sel) for b in patch.ops]
    assert set(parsed.patch.namespaces) == set(patch.namespaces)
    assert _outcome(parsed.patch) == _outcome(patch)


def _outcome(patch: Patch) -> tuple[str, bytes]:
    """What applying ``patch`` to TARGET gives: the C14N result or the error class."""
    from xcapdiff_ext.diff.apply import apply_patch
    from xcapdiff_ext.errors import PatchError

    try:
        return "ok", canon(apply_patch(TARGET, patch))
    except PatchError as err:
        return type(err).__name__, b""


# --------------------------------------------------------------------------- RFC chains applied


@pytest.mark.parametrize(
    ("target", "diff", "expected"),
    [
        (
            "rfc5874/A-joe-index.xml",
            "derived/trap-prefixed-ok.xml",
            "derived/rfc5874-index-fgherhryt3.xml",
        ),
        (
            "rfc5874/A-joe-index.xml",
            "rfc5874/A.2-chain.xml",
            "derived/rfc5874-index-63hjjsll.xml",
        ),
        (
            "rfc5874/A-joe-index.xml",
            "rfc5874/A.2-aggregate.xml",
            "derived/rfc5874-index-63hjjsll.xml",
        ),
        (
            "rfc5875/A.1-joe-index.xml",
            "rfc5875/A.4-notify-xcap-patching.xml",
            "derived/rfc5875-index-63hjjsll.xml",
        ),
        (
            "rfc5875/A.1-joe-index.xml",
            "rfc5875/A.4-notify-aggregate.xml",
            "derived/rfc5875-index-63hjjsll.xml",
        ),
    ],
)
def test_rfc_patches_apply_in_order(target: str, diff: str, expected: str) -> None:
    from xcapdiff_ext.diff.apply import apply_patch

    document = vector(target)
    for entry in parse_xcap_diff(vector(diff)).entries:
        assert isinstance(entry, DocumentEntry) and entry.patch is not None
        document = apply_patch(document, entry.patch)
    assert canon(document) == canon(vector(expected))
    raw = vector(target)
    for element in document_elements(vector(diff)):
        raw = apply_patch(raw, element.element)
    assert canon(raw) == canon(vector(expected))


def test_default_namespace_trap_fails_when_applied_raw() -> None:
    from xcapdiff_ext.diff.apply import apply_patch
    from xcapdiff_ext.errors import UnlocatedNode

    (raw,) = document_elements(vector("derived/trap-default-ns-xcap-diff.xml"))
    with pytest.raises(UnlocatedNode):
        apply_patch(vector("rfc5874/A-joe-index.xml"), raw.element)


# --------------------------------------------------------------------------- document_entry

OLD_NAME, NEW_NAME = "rfc5874/A-joe-index.xml", "derived/rfc5874-index-fgherhryt3.xml"


def test_document_entry_created() -> None:
    assert document_entry(JOE, None, vector(NEW_NAME), None, "e1") == (
        DocumentEntry(JOE, None, "e1"),
        None,
    )


def test_document_entry_deleted() -> None:
    assert document_entry(JOE, vector(OLD_NAME), None, "e1", None) == (
        DocumentEntry(JOE, "e1", None),
        None,
    )
    # The etag of the absent side is ignored: removal never carries new-etag.
    assert document_entry(JOE, vector(OLD_NAME), None, "e1", "e2") == (
        DocumentEntry(JOE, "e1", None),
        None,
    )


def test_document_entry_neither() -> None:
    entry, reason = document_entry(JOE, None, None, "e1", "e2")
    assert entry is None and reason


def test_document_entry_etag_unchanged() -> None:
    assert document_entry(JOE, vector(OLD_NAME), vector(NEW_NAME), "e1", "e1") == (
        None,
        "etag unchanged",
    )


def test_document_entry_needs_both_etags_for_a_change() -> None:
    with pytest.raises(ValueError):
        document_entry(JOE, vector(OLD_NAME), vector(NEW_NAME), None, "e2")


def test_document_entry_body_not_changed() -> None:
    old = b"<doc a='1' b=\"2\"><x></x></doc>"
    new = b'<?xml version="1.0"?>\n<doc b="2" a="1"><x/></doc>'
    assert document_entry(JOE, old, new, "e1", "e2") == (
        DocumentEntry(JOE, "e1", "e2", body_not_changed=True),
        None,
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("rfc5874/A-joe-index.xml", "derived/rfc5874-index-fgherhryt3.xml"),
        ("rfc5874/A-joe-index.xml", "derived/rfc5874-index-63hjjsll.xml"),
        ("rfc4825/s8.2.3-base.xml", "rfc4825/s8.2.3-1-el1-att-third.xml"),
        ("rfc5261/A.18-target.xml", "rfc5261/A.18-result.xml"),
        ("rfc5261/A.3-target.xml", "rfc5261/A.3-result.xml"),
    ],
)
def test_document_entry_patch_is_self_checked(old: str, new: str) -> None:
    from xcapdiff_ext.diff.apply import apply_patch

    old_doc, new_doc = vector(old), vector(new)
    entry, reason = document_entry(JOE, old_doc, new_doc, "e1", "e2")
    assert reason is None
    assert entry is not None and entry.patch is not None
    assert (entry.previous_etag, entry.new_etag) == ("e1", "e2")
    assert canon(apply_patch(old_doc, entry.patch)) == canon(new_doc)
    data = build(XcapDiff(ROOT, (entry,)))
    (raw,) = document_elements(data)
    assert canon(apply_patch(old_doc, raw.element)) == canon(new_doc)


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b"<doc><a/>", b"<doc/>", "old document: MalformedXml"),
        (b"<doc/>", b"not xml", "new document: MalformedXml"),
        (
            b'<!DOCTYPE d [<!ENTITY e "x">]><doc>&e;</doc>',
            b"<doc/>",
            "old document: UnsafeXml",
        ),
    ],
)
def test_document_entry_bad_documents_give_etags_only(old: bytes, new: bytes, reason: str) -> None:
    entry, why = document_entry(JOE, old, new, "e1", "e2")
    assert entry == DocumentEntry(JOE, "e1", "e2")
    assert why is not None and why.startswith(reason)


def test_document_entry_wrong_patch_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from xcapdiff_ext.diff import engine

    def wrong(old: bytes, new: bytes, **kwargs: object) -> Patch:
        return Patch((Add("doc", b"<bogus/>"),))

    monkeypatch.setattr(engine, "diff_trees", wrong)
    assert document_entry(JOE, vector(OLD_NAME), vector(NEW_NAME), "e1", "e2") == (
        DocumentEntry(JOE, "e1", "e2"),
        "self-check mismatch",
    )


def test_document_entry_failing_patch_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xcapdiff_ext.diff import engine

    monkeypatch.setattr(engine, "diff_trees", lambda old, new, **kw: Patch((Remove("nowhere/x"),)))
    entry, reason = document_entry(JOE, vector(OLD_NAME), vector(NEW_NAME), "e1", "e2")
    assert entry == DocumentEntry(JOE, "e1", "e2")
    assert reason is not None and reason.startswith("self-check failed: UnlocatedNode")


def test_document_entry_empty_patch_for_different_documents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xcapdiff_ext.diff import engine

    monkeypatch.setattr(engine, "diff_trees", lambda old, new, **kw: Patch())
    entry, reason = document_entry(JOE, vector(OLD_NAME), vector(NEW_NAME), "e1", "e2")
    assert entry == DocumentEntry(JOE, "e1", "e2")
    assert reason is not None and reason.startswith("self-check mismatch")


def test_document_entry_unpatchable(monkeypatch: pytest.MonkeyPatch) -> None:
    from xcapdiff_ext.diff import engine

    def refuse(old: bytes, new: bytes, **kwargs: object) -> Patch:
        raise UnpatchableChange("DOCTYPE changed")

    monkeypatch.setattr(engine, "diff_trees", refuse)
    assert document_entry(JOE, vector(OLD_NAME), vector(NEW_NAME), "e1", "e2") == (
        DocumentEntry(JOE, "e1", "e2"),
        "unpatchable: DOCTYPE changed",
    )


def test_document_entry_unpatchable_for_real() -> None:
    old = b'<?xml version="1.0"?>\n<!DOCTYPE doc>\n<doc><a/></doc>'
    new = b'<?xml version="1.0"?>\n<!DOCTYPE other>\n<doc><b/></doc>'
    entry, reason = document_entry(JOE, old, new, "e1", "e2")
    assert entry == DocumentEntry(JOE, "e1", "e2")  # RFC 5261 cannot patch the prolog
    assert reason is not None and reason.startswith("unpatchable: the XML prolog changed")


def test_document_entry_is_not_fooled_by_errors_of_the_wrong_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xcapdiff_ext.diff import engine

    def crash(old: bytes, new: bytes, **kwargs: object) -> Patch:
        raise XmlInputError("new", "simulated")

    monkeypatch.setattr(engine, "diff_trees", crash)
    entry, reason = document_entry(JOE, vector(OLD_NAME), vector(NEW_NAME), "e1", "e2")
    assert entry == DocumentEntry(JOE, "e1", "e2") and reason is not None
