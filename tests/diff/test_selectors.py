"""RFC 5261 selector subset: parsing, printing, evaluation and namespace resolution."""

from __future__ import annotations

import re

import pytest
from lxml import etree

from tests.vectors import vector
from xcapdiff_ext.diff.selectors import (
    PI,
    AttrEquals,
    AttrRef,
    ChildEquals,
    ChildRef,
    Comment,
    Document,
    Element,
    Name,
    NsRef,
    Position,
    Selector,
    SelectorSyntaxError,
    SelfEquals,
    Step,
    Text,
    quote_literal,
    select,
    select_one,
)
from xcapdiff_ext.errors import (
    InvalidNamespacePrefix,
    UnlocatedNode,
    UnsupportedIdFunction,
)
from xcapdiff_ext.xmlsafe import parse_document

XXX = "urn:ietf:params:xml:ns:xxx"
YYY = "urn:ietf:params:xml:ns:yyy"


def doc_of(data: bytes) -> Document:
    return Document.from_lxml(parse_document(data))


def one(data: bytes, sel: str, namespaces: dict[str | None, str] | None = None):
    return select_one(doc_of(data), Selector.from_text(sel), namespaces or {})


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("doc", Selector((Step("element", Name(None, "doc")),))),
        ("/doc", Selector((Step("element", Name(None, "doc")),), absolute=True)),
        ("*", Selector((Step("element", Name(None, "*")),))),
        (
            "rl:list/rl:entry[2]",
            Selector(
                (
                    Step("element", Name("rl", "list")),
                    Step("element", Name("rl", "entry"), (Position(2),)),
                )
            ),
        ),
        (
            "doc/foo[@a='1'][3]",
            Selector(
                (
                    Step("element", Name(None, "doc")),
                    Step(
                        "element",
                        Name(None, "foo"),
                        (AttrEquals(Name(None, "a"), "1"), Position(3)),
                    ),
                )
            ),
        ),
        (
            'doc/foo[@p:a="x"][name=\'n\'][.="v"]',
            Selector(
                (
                    Step("element", Name(None, "doc")),
                    Step(
                        "element",
                        Name(None, "foo"),
                        (
                            AttrEquals(Name("p", "a"), "x"),
                            ChildEquals(Name(None, "name"), "n"),
                            SelfEquals("v"),
                        ),
                    ),
                )
            ),
        ),
        (
            "doc/text()[2]",
            Selector((Step("element", Name(None, "doc")), Step("text", None, (Position(2),)))),
        ),
        (
            "doc/comment()",
            Selector((Step("element", Name(None, "doc")), Step("comment"))),
        ),
        (
            "doc/processing-instruction('t')[1]",
            Selector(
                (
                    Step("element", Name(None, "doc")),
                    Step("processing-instruction", Name(None, "t"), (Position(1),)),
                )
            ),
        ),
        ("processing-instruction()", Selector((Step("processing-instruction"),))),
        (
            "doc/@p:a",
            Selector((Step("element", Name(None, "doc")), Step("attribute", Name("p", "a")))),
        ),
        (
            "doc/namespace::pref",
            Selector(
                (
                    Step("element", Name(None, "doc")),
                    Step("namespace", Name(None, "pref")),
                )
            ),
        ),
        ("id('x')/foo", Selector((Step("element", Name(None, "foo")),), id_value="x")),
    ],
)
def test_parse(text: str, expected: Selector) -> None:
    assert Selector.from_text(text) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("""doc/e[@uri="a'b"]""", "a'b"),
        ("""doc/e[@uri='a"b']""", 'a"b'),
        ("doc/e[@uri='a&b<c']", "a&b<c"),
        ("doc/e[@uri='sip:joe@example.com']", "sip:joe@example.com"),
        ("doc/e[@uri='a]b/c[d']", "a]b/c[d"),
    ],
)
def test_parse_quoted_values(text: str, value: str) -> None:
    pred = Selector.from_text(text).steps[1].predicates[0]
    assert isinstance(pred, AttrEquals) and pred.value == value
    assert Selector.from_text(Selector.from_text(text).to_text()) == Selector.from_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/",
        "doc//foo",
        "doc/../foo",
        "doc/@a/b",
        "doc/text()/b",
        "doc/namespace::p/x",
        "doc/foo[@a=unquoted]",
        "doc/foo[@a='open]",
        "doc/foo[",
        "doc/foo[last()]",
        "doc/local-name()",
        "doc/text()[@a='1']",
        "doc/child::foo",
        "doc/foo bar",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(SelectorSyntaxError):
        Selector.from_text(text)


def _snippet_sels() -> list[str]:
    data = vector("rfc5261/s4-snippets.xml")
    return [el.get("sel") for el in parse_document(data).getroot() if isinstance(el.tag, str)]


@pytest.mark.parametrize("sel", _snippet_sels())
def test_rfc5261_s4_snippet_selectors_round_trip(sel: str) -> None:
    parsed = Selector.from_text(sel)
    assert Selector.from_text(parsed.to_text()) == parsed
    assert re.sub("[\"']", "'", parsed.to_text()) == re.sub("[\"']", "'", sel)


def test_quote_literal() -> None:
    assert quote_literal("abc") == "'abc'"
    assert quote_literal("a'b") == '"a\'b"'
    assert quote_literal('a"b') == "'a\"b'"
    assert quote_literal("a&b") == "'a&b'"
    assert quote_literal("a'\"b") is None


def test_to_text_refuses_unquotable_value() -> None:
    sel = Selector((Step("element", Name(None, "e"), (AttrEquals(Name(None, "a"), "'\""),)),))
    with pytest.raises(ValueError):
        sel.to_text()


def test_step_invariants() -> None:
    with pytest.raises(ValueError):
        Step("attribute")
    with pytest.raises(ValueError):
        Step("text", None, (AttrEquals(Name(None, "a"), "1"),))
    with pytest.raises(ValueError):
        Selector((Step("text"), Step("element", Name(None, "a"))))


# ---------------------------------------------------------------- evaluation

LIST = b"""<?xml version="1.0"?>
<rl:resource-lists xmlns:rl="urn:ietf:params:xml:ns:resource-lists" xmlns:cp="urn:cp">
  <rl:list name="friends">
    <rl:entry uri="sip:a@x" cp:tag="one"><rl:display-name>A</rl:display-name></rl:entry>
    <!-- first comment -->
    <rl:entry uri="sip:b'c@x"/>
    <?keep me?>
    <rl:entry uri='sip:d"e@x'/>
    <other uri="a&amp;b"/>
    <!-- second comment -->
  </rl:list>
</rl:resource-lists>
"""
RL = {"r": "urn:ietf:params:xml:ns:resource-lists", "c": "urn:cp"}


def test_prefix_resolved_from_operation_scope_not_target() -> None:
    ref = one(LIST, "r:resource-lists/r:list/r:entry[2]", RL)
    assert isinstance(ref, ChildRef) and isinstance(ref.node, Element)
    assert ref.node.find_attr(None, "uri").value == "sip:b'c@x"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("sel", "uri"),
    [
        ("""*/r:list/r:entry[@uri="sip:b'c@x"]""", "sip:b'c@x"),
        ("""*/r:list/r:entry[@uri='sip:d"e@x']""", 'sip:d"e@x'),
        ("*/r:list/r:entry[@c:tag='one']", "sip:a@x"),
        ("*/r:list/r:entry[r:display-name='A']", "sip:a@x"),
        ("*/r:list/*[3]", 'sip:d"e@x'),
        ("*/r:list/*[4]", "a&b"),
        ("*/r:list/other[@uri='a&b']", "a&b"),
        ("*/*/*[.='A']", "sip:a@x"),
    ],
)
def test_select_elements(sel: str, uri: str) -> None:
    ref = one(LIST, sel, RL)
    assert isinstance(ref, ChildRef) and isinstance(ref.node, Element)
    assert ref.node.find_attr(None, "uri").value == uri  # type: ignore[union-attr]


def test_positional_predicate_counts_matches_of_the_step() -> None:
    # rl:entry[3] is the third rl:entry, not the third child.
    ref = one(LIST, "*/r:list/r:entry[3]", RL)
    assert ref.node.find_attr(None, "uri").value == 'sip:d"e@x'  # type: ignore[union-attr]
    # predicates apply in order: [@uri=...][1] vs [1][@uri=...]
    first_then_filter = Selector.from_text("""*/r:list/r:entry[1][@uri="sip:b'c@x"]""")
    assert select(doc_of(LIST), first_then_filter, RL) == []
    ref = one(LIST, """*/r:list/r:entry[@uri="sip:b'c@x"][1]""", RL)
    assert ref.node.find_attr(None, "uri").value == "sip:b'c@x"  # type: ignore[union-attr]


def test_select_text_comment_pi_attribute_namespace() -> None:
    doc = doc_of(LIST)
    text = select_one(doc, Selector.from_text("*/r:list/text()[2]"), RL)
    assert isinstance(text, ChildRef) and isinstance(text.node, Text) and text.index == 2
    comment = select_one(doc, Selector.from_text("*/r:list/comment()[2]"), RL)
    assert isinstance(comment.node, Comment) and comment.node.value == " second comment "  # type: ignore[union-attr]
    pi = select_one(doc, Selector.from_text("*/r:list/processing-instruction('keep')"), RL)
    assert isinstance(pi.node, PI) and pi.node.value == "me"  # type: ignore[union-attr]
    attr = select_one(doc, Selector.from_text("*/*/r:entry[1]/@c:tag"), RL)
    assert isinstance(attr, AttrRef) and attr.attr.value == "one" and attr.attr.prefix == "cp"
    ns = select_one(doc, Selector.from_text("*/r:list/namespace::cp"), RL)
    assert isinstance(ns, NsRef) and ns.uri == "urn:cp" and ns.element.local == "list"


def test_text_children_are_merged_nodes() -> None:
    doc = doc_of(b"<doc>a<![CDATA[b]]>c<x/>d</doc>")
    refs = select(doc, Selector.from_text("doc/text()"), {})
    assert [r.node.value for r in refs] == ["abc", "d"]  # type: ignore[union-attr]


def test_document_level_comments_and_pis() -> None:
    doc = doc_of(b"<!--a--><?p x?><doc/><!--b-->")
    assert select_one(doc, Selector.from_text("comment()[2]"), {}).node.value == "b"  # type: ignore[union-attr]
    assert isinstance(select_one(doc, Selector.from_text("processing-instruction()"), {}).node, PI)  # type: ignore[union-attr]
    assert select(doc, Selector.from_text("comment()"), {}).__len__() == 2


A18_TARGET = vector("rfc5261/A.18-target.xml")


def test_unprefixed_name_uses_default_namespace_at_operation() -> None:
    # RFC 5261 A.18: the diff declares xmlns="...xxx", so "doc" means {xxx}doc.
    ref = one(A18_TARGET, "doc/note", {None: XXX, "y": YYY})
    assert isinstance(ref.node, Element) and ref.node.uri == XXX  # type: ignore[union-attr]
    ref = one(A18_TARGET, "*/elem[@a='bar']/y:child", {None: XXX, "y": YYY})
    assert ref.node.uri == YYY and ref.node.prefix == "z"  # type: ignore[union-attr]


def test_unprefixed_name_without_default_matches_no_namespace_only() -> None:
    with pytest.raises(UnlocatedNode):
        one(A18_TARGET, "doc", {})
    with pytest.raises(UnlocatedNode):
        one(b"<doc/>", "doc", {None: XXX})
    assert one(b"<doc/>", "doc", {}).node.local == "doc"  # type: ignore[union-attr]


def test_unprefixed_attribute_is_no_namespace() -> None:
    data = b'<doc xmlns="urn:d" xmlns:p="urn:d"><e p:a="1"/><e a="2"/></doc>'
    ref = one(data, "doc/e[@a='2']", {None: "urn:d"})
    assert ref.node.find_attr(None, "a").value == "2"  # type: ignore[union-attr]
    ref = one(data, "d:doc/d:e[@d:a='1']", {"d": "urn:d"})
    assert ref.node.find_attr("urn:d", "a").value == "1"  # type: ignore[union-attr]


def test_unknown_prefix_is_invalid_namespace_prefix() -> None:
    with pytest.raises(InvalidNamespacePrefix) as info:
        select_one(
            doc_of(LIST),
            Selector.from_text("q:resource-lists"),
            RL,
            op_index=3,
            sel="q",
        )
    assert info.value.rfc5261_tag == "invalid-namespace-prefix" and info.value.op_index == 3


def test_several_or_no_matches_are_unlocated() -> None:
    with pytest.raises(UnlocatedNode) as info:
        one(LIST, "*/r:list/r:entry", RL)
    assert info.value.rfc5261_tag == "unlocated-node"
    with pytest.raises(UnlocatedNode):
        one(LIST, "*/r:list/r:entry[9]", RL)
    with pytest.raises(UnlocatedNode):
        one(LIST, "*/r:list/r:entry[0]", RL)


def test_id_function_is_unsupported() -> None:
    with pytest.raises(UnsupportedIdFunction) as info:
        one(b"<doc xml:id='x'/>", "id('x')")
    assert info.value.rfc5261_tag == "unsupported-id-function"


def test_from_lxml_keeps_prefixes_and_own_declarations() -> None:
    data = b'<a xmlns="urn:x" xmlns:p="urn:p"><p:b xmlns:q="urn:p" q:c="1"/><c xmlns=""/></a>'
    doc = Document.from_lxml(etree.fromstring(data).getroottree())
    root = doc.root
    assert root.decls == {None: "urn:x", "p": "urn:p"}
    b, c = root.children
    assert isinstance(b, Element) and b.prefix == "p" and b.decls == {"q": "urn:p"}
    assert b.attrs[0].prefix == "q" and b.attrs[0].uri == "urn:p"
    assert isinstance(c, Element) and c.uri is None and c.decls == {None: ""}
    assert c.scope() == {"xml": "http://www.w3.org/XML/1998/namespace", "p": "urn:p"}
