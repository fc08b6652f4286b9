"""apply_patch: every patch vector, RFC 5261 semantics, namespaces and errors."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.vectors import VECTORS, vector
from xcapdiff_ext.diff.apply import apply_patch
from xcapdiff_ext.diff.ops import Add, Patch, Remove, Replace
from xcapdiff_ext.errors import (
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
    UnlocatedNode,
    UnsupportedIdFunction,
    XmlInputError,
)
from xcapdiff_ext.xmlsafe import c14n, parse_document

XCAP_DIFF = "urn:ietf:params:xml:ns:xcap-diff"


def canon(data: bytes) -> bytes:
    return c14n(parse_document(data))


def diff(ops: str, ns: str = "") -> bytes:
    return f"<diff {ns}>{ops}</diff>".encode()


def patched(target: bytes, ops: str, ns: str = "") -> bytes:
    return canon(apply_patch(target, diff(ops, ns)))


def documents(xcap_diff: bytes) -> list[etree._Element]:
    root = parse_document(xcap_diff).getroot()
    return list(root.iterfind(f"{{{XCAP_DIFF}}}document"))


def test_vectors_folder_exists() -> None:
    assert VECTORS.is_dir(), f"shared vectors missing at {VECTORS}"


# ---------------------------------------------------------------- vectors


@pytest.mark.parametrize("case", [f"A.{n}" for n in range(1, 19) if n != 16])
def test_rfc5261_appendix_a(case: str) -> None:
    target = vector(f"rfc5261/{case}-target.xml")
    result = apply_patch(target, vector(f"rfc5261/{case}-diff.xml"))
    assert canon(result) == canon(vector(f"rfc5261/{case}-result.xml"))


def test_rfc5261_a16_merges_the_whitespace_around_the_removed_pi() -> None:
    # The RFC prints the result without the merged whitespace (vectors README):
    # expected = the target with the PI removed and its two neighbouring texts merged.
    target = vector("rfc5261/A.16-target.xml")
    result = apply_patch(target, vector("rfc5261/A.16-diff.xml"))
    expected = parse_document(target)
    pi = expected.getroot()[1]
    assert isinstance(pi, etree._ProcessingInstruction)
    foo = pi.getprevious()
    foo.tail = (foo.tail or "") + (pi.tail or "")
    expected.getroot().remove(pi)
    assert canon(result) == c14n(expected)
    assert canon(result) == b'<doc>\n  <foo a="1">This is a sample document</foo>\n  \n</doc>'
    printed = canon(vector("rfc5261/A.16-result.xml"))
    assert canon(result).replace(b"\n  \n</doc>", b"\n</doc>") == printed


@pytest.mark.parametrize("patch", ["rfc5874/A.2-aggregate.xml", "rfc5874/A.2-chain.xml"])
def test_rfc5874_a2(patch: str) -> None:
    current = vector("rfc5874/A-joe-index.xml")
    for document in documents(vector(patch)):
        current = apply_patch(current, document)
        step = VECTORS / f"derived/rfc5874-index-{document.get('new-etag')}.xml"
        assert canon(current) == canon(step.read_bytes())
    assert canon(current) == canon(vector("derived/rfc5874-index-63hjjsll.xml"))


@pytest.mark.parametrize(
    "patch",
    ["rfc5875/A.4-notify-aggregate.xml", "rfc5875/A.4-notify-xcap-patching.xml"],
)
def test_rfc5875_a4(patch: str) -> None:
    current = vector("rfc5875/A.1-joe-index.xml")
    chain = documents(vector(patch))
    assert chain
    for document in chain:
        current = apply_patch(current, document)
    assert canon(current) == canon(vector("derived/rfc5875-index-63hjjsll.xml"))


def test_trap_prefixed_ok() -> None:
    (document,) = documents(vector("derived/trap-prefixed-ok.xml"))
    result = apply_patch(vector("rfc5874/A-joe-index.xml"), document)
    assert canon(result) == canon(vector("derived/rfc5874-index-fgherhryt3.xml"))


def test_trap_default_ns_xcap_diff_is_unlocated() -> None:
    root = parse_document(vector("derived/trap-default-ns-xcap-diff.xml")).getroot()
    (document,) = root.iterfind(f"{{{XCAP_DIFF}}}document")
    with pytest.raises(UnlocatedNode) as info:
        apply_patch(vector("rfc5874/A-joe-index.xml"), document)
    assert info.value.rfc5261_tag == "unlocated-node" and info.value.sel == "doc"


@pytest.mark.parametrize("n", range(1, 6))
def test_rfc4825_s8_2_3_insertions(n: int) -> None:
    (expected,) = (VECTORS / "rfc4825").glob(f"s8.2.3-{n}-*.xml")
    result = apply_patch(
        vector("rfc4825/s8.2.3-base.xml"),
        vector(f"derived/rfc4825-s8.2.3-{n}-patch.xml"),
    )
    assert canon(result) == canon(expected.read_bytes())


# --------------------------------------------------------------- semantics


def test_patch_value_input() -> None:
    patch = Patch(
        (
            Add("p:doc", b'<p:x xmlns:p="urn:p">t</p:x>'),
            Add("p:doc", b"", type="@a"),
            Replace("p:doc/p:x/text()", b"new &amp; &lt;"),
            Remove("p:doc/p:y", ws="before"),
        ),
        namespaces=(("p", "urn:p"),),
    )
    result = apply_patch(b'<doc xmlns="urn:p">\n <y/></doc>', patch)
    assert canon(result) == b'<doc xmlns="urn:p" a=""><x>new &amp; &lt;</x></doc>'


def test_ops_container_namespace_and_skipped_elements() -> None:
    data = (
        b'<d:document xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xmlns:e="urn:ext">'
        b'<d:body-not-changed/><e:add sel="nothing"/><!-- c --><d:add sel="doc">x</d:add>'
        b"</d:document>"
    )
    assert canon(apply_patch(b"<doc/>", data)) == b"<doc>x</doc>"
    assert canon(apply_patch(b"<doc/>", parse_document(data).getroot())) == b"<doc>x</doc>"


def test_xml_declaration_kept_only_when_present() -> None:
    assert apply_patch(b"<doc/>", diff('<add sel="doc">x</add>')) == b"<doc>x</doc>"
    out = apply_patch(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<doc/>',
        diff('<add sel="doc">x</add>'),
    )
    assert out.startswith(b"<?xml") and out.endswith(b"<doc>x</doc>")


def test_doctype_and_standalone_are_kept() -> None:
    target = b'<?xml version="1.0" standalone="yes"?>\n<!DOCTYPE doc [<!ELEMENT doc ANY>]>\n<doc/>'
    out = apply_patch(target, diff('<add sel="doc">x</add>'))
    assert b"standalone='yes'" in out.split(b"\n", 1)[0]
    assert b"<!ELEMENT doc ANY>" in out and out.endswith(b"<doc>x</doc>")
    assert apply_patch(b"<!DOCTYPE doc>\n<doc/>", diff('<add sel="doc">x</add>')) == (
        b"<!DOCTYPE doc>\n<doc>x</doc>"
    )


def test_sequential_application_and_text_merging() -> None:
    ops = '<remove sel="doc/x"/><replace sel="doc/text()[1]">z</replace>'
    assert patched(b"<doc>a<x/>b</doc>", ops) == b"<doc>z</doc>"


def test_add_after_text_merges_with_it() -> None:
    # RFC 5261 Section 4.3.5 (b)
    ops = '<add sel="*/foo/text()[2]" pos="after">new<bar/>elem</add>'
    assert (
        patched(b"<doc><foo>a<x/>b</foo></doc>", ops)
        == b"<doc><foo>a<x></x>bnew<bar></bar>elem</foo></doc>"
    )


def test_prepend_before_after() -> None:
    target = b"<doc><a/><b/></doc>"
    assert (
        patched(target, '<add sel="doc" pos="prepend"><z/></add>')
        == b"<doc><z></z><a></a><b></b></doc>"
    )
    assert patched(target, '<add sel="doc/b" pos="before">t</add>') == b"<doc><a></a>t<b></b></doc>"
    assert (
        patched(target, '<add sel="doc/a" pos="after"><?p d?></add>')
        == b"<doc><a></a><?p d?><b></b></doc>"
    )


def test_document_level_comments_and_pis() -> None:
    out = patched(b"<doc/>", '<add sel="doc" pos="before">\n<!-- c -->\n<?pi x?></add>')
    assert out == b"<!-- c -->\n<?pi x?>\n<doc></doc>"
    out = patched(
        b"<!--a--><doc/><!--b-->",
        '<remove sel="comment()[2]"/><replace sel="comment()"><!--z--></replace>',
    )
    assert out == b"<!--z-->\n<doc></doc>"


def test_replace_root_and_empty_values() -> None:
    assert patched(b"<doc a='1'>t</doc>", '<replace sel="doc"><new/></replace>') == b"<new></new>"
    assert patched(b"<doc a='1'>t</doc>", '<replace sel="doc/@a"/>') == b'<doc a="">t</doc>'
    assert (
        patched(b"<doc a='1'>t<x/></doc>", '<replace sel="doc/text()"/>')
        == b'<doc a="1"><x></x></doc>'
    )


def test_remove_ws_before_and_both() -> None:
    target = b"<doc>\n  <a/>\n  <b/>\n</doc>"
    assert patched(target, '<remove sel="doc/b" ws="before"/>') == b"<doc>\n  <a></a>\n</doc>"
    assert patched(target, '<remove sel="doc/a" ws="both"/>') == b"<doc><b></b>\n</doc>"


def test_remove_between_texts_merges_them() -> None:
    out = apply_patch(b"<doc>a<!--c-->b</doc>", diff('<remove sel="doc/comment()"/>'))
    assert canon(out) == b"<doc>ab</doc>"
    assert canon(apply_patch(out, diff('<replace sel="doc/text()">x</replace>'))) == b"<doc>x</doc>"


def test_namespace_replace_rebinds_names_using_the_prefix() -> None:
    ops = '<replace sel="doc/namespace::p">urn:b</replace><add sel="doc/q:x" type="@n">1</add>'
    out = patched(b'<doc xmlns:p="urn:a"><p:x/></doc>', ops, 'xmlns:q="urn:b"')
    assert out == b'<doc xmlns:p="urn:b"><p:x n="1"></p:x></doc>'


def test_namespace_add_and_remove() -> None:
    out = patched(b"<doc><x/></doc>", '<add sel="doc/x" type="namespace::p">urn:p</add>')
    assert out == b'<doc><x xmlns:p="urn:p"></x></doc>'
    out = patched(b'<doc xmlns:p="urn:p"><x/></doc>', '<remove sel="doc/namespace::p"/>')
    assert out == b"<doc><x></x></doc>"


# ------------------------------------------------- namespaces of added content


def test_diff_prefix_is_used_when_the_target_has_it() -> None:
    target = b'<doc xmlns:a="urn:n" xmlns:b="urn:n"/>'
    out = patched(target, '<add sel="doc"><b:x/></add>', 'xmlns:b="urn:n"')
    assert out == b'<doc xmlns:a="urn:n" xmlns:b="urn:n"><b:x></b:x></doc>'


def test_context_node_prefix_is_second_choice() -> None:
    target = b'<a:doc xmlns:a="urn:n" xmlns:b="urn:n"/>'
    out = patched(target, '<add sel="c:doc"><c:x/></add>', 'xmlns:c="urn:n"')
    assert out == b'<a:doc xmlns:a="urn:n" xmlns:b="urn:n"><a:x></a:x></a:doc>'


@pytest.mark.parametrize(("diff_prefix", "chosen"), [("n", b"m:x"), ("b", b"a:x"), ("A", b"a:x")])
def test_sorted_prefix_before_the_diffs(diff_prefix: str, chosen: bytes) -> None:
    target = b'<doc xmlns:a="urn:n" xmlns:m="urn:n"/>'
    out = patched(
        target,
        f'<add sel="doc"><{diff_prefix}:x/></add>',
        f'xmlns:{diff_prefix}="urn:n"',
    )
    assert out == b'<doc xmlns:a="urn:n" xmlns:m="urn:n"><' + chosen + b"></" + chosen + b"></doc>"


@pytest.mark.parametrize(("diff_prefix", "chosen"), [("a", b"x"), ("z", b"m:x")])
def test_default_namespace_sorts_first(diff_prefix: str, chosen: bytes) -> None:
    target = b'<r:root xmlns:r="urn:r"><r:doc xmlns="urn:n" xmlns:m="urn:n"/></r:root>'
    out = patched(
        target,
        f'<add sel="r:root/r:doc"><{diff_prefix}:x/></add>',
        f'xmlns:r="urn:r" xmlns:{diff_prefix}="urn:n"',
    )
    assert out == (
        b'<r:root xmlns:r="urn:r"><r:doc xmlns="urn:n" xmlns:m="urn:n"><'
        + chosen
        + b"></"
        + chosen
        + b"></r:doc></r:root>"
    )


def test_unknown_namespace_keeps_the_diff_declaration() -> None:
    out = patched(b"<doc/>", '<add sel="doc"><q:x q:a="1"/></add>', 'xmlns:q="urn:q"')
    assert out == b'<doc><q:x xmlns:q="urn:q" q:a="1"></q:x></doc>'


def test_declarations_inside_content_are_copied_as_written() -> None:
    target = b'<doc xmlns:a="urn:n"/>'
    out = patched(
        target,
        '<add sel="doc"><q:x xmlns:q="urn:n"><q:y/></q:x><z xmlns="urn:d"><w/></z></add>',
    )
    assert (
        out
        == b'<doc xmlns:a="urn:n"><q:x xmlns:q="urn:n"><q:y></q:y></q:x><z xmlns="urn:d"><w></w></z></doc>'
    )


def test_attribute_never_takes_the_default_namespace() -> None:
    target = b'<doc xmlns="urn:n" xmlns:m="urn:n"/>'
    out = patched(target, '<add sel="p:doc" type="@p:a">v</add>', 'xmlns:p="urn:n"')
    assert out == b'<doc xmlns="urn:n" xmlns:m="urn:n" m:a="v"></doc>'


def test_no_namespace_content_under_default_namespace_is_undeclared() -> None:
    out = patched(b'<doc xmlns="urn:n"/>', '<add sel="p:doc"><x/></add>', 'xmlns:p="urn:n"')
    assert out == b'<doc xmlns="urn:n"><x xmlns=""></x></doc>'


def test_unknown_attribute_prefix_is_declared_on_the_element() -> None:
    out = patched(b"<doc/>", '<add sel="doc" type="@q:a">v</add>', 'xmlns:q="urn:q"')
    assert out == b'<doc xmlns:q="urn:q" q:a="v"></doc>'


# ------------------------------------------------------------------ errors


ERROR_CASES = [
    # (id, target, ops, diff-namespaces, error, op_index)
    ("unlocated-none", b"<doc/>", '<remove sel="doc/x"/>', "", UnlocatedNode, 0),
    (
        "unlocated-several",
        b"<doc><x/><x/></doc>",
        '<add sel="doc"/><remove sel="doc/x"/>',
        "",
        UnlocatedNode,
        1,
    ),
    (
        "ws-not-whitespace",
        b"<doc><x/>text</doc>",
        '<remove sel="doc/x" ws="after"/>',
        "",
        InvalidWhitespaceDirective,
        0,
    ),
    (
        "ws-no-sibling",
        b"<doc><x/></doc>",
        '<remove sel="doc/x" ws="before"/>',
        "",
        InvalidWhitespaceDirective,
        0,
    ),
    (
        "ws-on-attribute",
        b"<doc a=' '/>",
        '<remove sel="doc/@a" ws="after"/>',
        "",
        InvalidWhitespaceDirective,
        0,
    ),
    (
        "remove-root",
        b"<doc/>",
        '<remove sel="doc"/>',
        "",
        InvalidRootElementOperation,
        0,
    ),
    (
        "add-element-before-root",
        b"<doc/>",
        '<add sel="doc" pos="before"><x/></add>',
        "",
        InvalidRootElementOperation,
        0,
    ),
    (
        "add-text-after-root",
        b"<doc/>",
        '<add sel="doc" pos="after">t</add>',
        "",
        InvalidRootElementOperation,
        0,
    ),
    (
        "replace-two-elements",
        b"<doc><x/></doc>",
        '<replace sel="doc/x"><a/><b/></replace>',
        "",
        InvalidNodeTypes,
        0,
    ),
    (
        "replace-element-whitespace",
        b"<doc><x/></doc>",
        '<replace sel="doc/x"> <a/></replace>',
        "",
        InvalidNodeTypes,
        0,
    ),
    (
        "replace-comment-by-element",
        b"<doc><!--c--></doc>",
        '<replace sel="doc/comment()"><a/></replace>',
        "",
        InvalidNodeTypes,
        0,
    ),
    (
        "replace-attr-by-element",
        b"<doc a='1'/>",
        '<replace sel="doc/@a"><a/></replace>',
        "",
        InvalidNodeTypes,
        0,
    ),
    (
        "append-to-comment",
        b"<doc><!--c--></doc>",
        '<add sel="doc/comment()">x</add>',
        "",
        InvalidNodeTypes,
        0,
    ),
    (
        "invalid-pos",
        b"<doc/>",
        '<add sel="doc" pos="inside">x</add>',
        "",
        InvalidAttributeValue,
        0,
    ),
    (
        "invalid-ws",
        b"<doc><x/></doc>",
        '<remove sel="doc/x" ws="around"/>',
        "",
        InvalidAttributeValue,
        0,
    ),
    ("invalid-sel", b"<doc/>", '<remove sel="doc//x"/>', "", InvalidAttributeValue, 0),
    (
        "pos-and-type",
        b"<doc/>",
        '<add sel="doc" pos="before" type="@a">1</add>',
        "",
        InvalidAttributeValue,
        0,
    ),
    (
        "invalid-type",
        b"<doc/>",
        '<add sel="doc" type="a">1</add>',
        "",
        InvalidAttributeValue,
        0,
    ),
    (
        "add-selects-attribute",
        b"<doc a='1'/>",
        '<add sel="doc/@a">1</add>',
        "",
        InvalidAttributeValue,
        0,
    ),
    (
        "add-existing-attribute",
        b"<doc a='1'/>",
        '<add sel="doc" type="@a">2</add>',
        "",
        InvalidAttributeValue,
        0,
    ),
    (
        "add-attribute-element-value",
        b"<doc/>",
        '<add sel="doc" type="@a"><x/></add>',
        "",
        InvalidAttributeValue,
        0,
    ),
    ("missing-sel", b"<doc/>", "<add>x</add>", "", InvalidDiffFormat, 0),
    (
        "unknown-operation",
        b"<doc/>",
        '<add sel="doc"/><move sel="doc"/>',
        "",
        InvalidPatchDirective,
        1,
    ),
    (
        "undeclared-sel-prefix",
        b"<doc/>",
        '<remove sel="q:doc/@a"/>',
        "",
        InvalidNamespacePrefix,
        0,
    ),
    (
        "undeclared-type-prefix",
        b"<doc/>",
        '<add sel="doc" type="@q:a">1</add>',
        "",
        InvalidNamespacePrefix,
        0,
    ),
    (
        "remove-used-namespace",
        b'<doc xmlns:p="urn:p"><p:x/></doc>',
        '<remove sel="doc/namespace::p"/>',
        "",
        InvalidNamespacePrefix,
        0,
    ),
    (
        "remove-inherited-namespace",
        b'<doc xmlns:p="urn:p"><x/></doc>',
        '<remove sel="doc/x/namespace::p"/>',
        "",
        InvalidNamespacePrefix,
        0,
    ),
    (
        "replace-inherited-namespace",
        b'<doc xmlns:p="urn:p"><x/></doc>',
        '<replace sel="doc/x/namespace::p">urn:q</replace>',
        "",
        InvalidNamespacePrefix,
        0,
    ),
    (
        "add-declared-namespace",
        b'<doc xmlns:p="urn:p"/>',
        '<add sel="doc" type="namespace::p">urn:q</add>',
        "",
        InvalidNamespacePrefix,
        0,
    ),
    (
        "add-namespace-empty-uri",
        b"<doc/>",
        '<add sel="doc" type="namespace::p"/>',
        "",
        InvalidNamespaceUri,
        0,
    ),
    (
        "id-function",
        b"<doc xml:id='x'/>",
        "<remove sel=\"id('x')/@a\"/>",
        "",
        UnsupportedIdFunction,
        0,
    ),
]


@pytest.mark.parametrize(
    ("target", "ops", "ns", "error", "op_index"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors(target: bytes, ops: str, ns: str, error: type[PatchError], op_index: int) -> None:
    with pytest.raises(error) as info:
        apply_patch(target, diff(ops, ns))
    assert type(info.value) is error
    assert info.value.rfc5261_tag == error.rfc5261_tag
    assert info.value.op_index == op_index


def test_error_tags() -> None:
    expected = {
        UnlocatedNode: "unlocated-node",
        InvalidWhitespaceDirective: "invalid-whitespace-directive",
        InvalidRootElementOperation: "invalid-root-element-operation",
        InvalidNodeTypes: "invalid-node-types",
        InvalidAttributeValue: "invalid-attribute-value",
        InvalidDiffFormat: "invalid-diff-format",
        InvalidPatchDirective: "invalid-patch-directive",
        InvalidNamespacePrefix: "invalid-namespace-prefix",
        InvalidNamespaceUri: "invalid-namespace-uri",
        UnsupportedIdFunction: "unsupported-id-function",
        InvalidEntityDeclaration: "invalid-entity-declaration",
    }
    for cls, tag in expected.items():
        assert cls.rfc5261_tag == tag


def test_malformed_patch_is_invalid_diff_format() -> None:
    with pytest.raises(InvalidDiffFormat) as info:
        apply_patch(b"<doc/>", b"<diff><add sel='doc'></diff>")
    assert info.value.rfc5261_tag == "invalid-diff-format"


def test_entity_reference_in_content_is_refused() -> None:
    container = etree.Element("diff")
    add = etree.SubElement(container, "add", sel="doc")
    add.append(etree.Entity("custom"))
    with pytest.raises(InvalidEntityDeclaration) as info:
        apply_patch(b"<doc/>", container)
    assert info.value.rfc5261_tag == "invalid-entity-declaration"


def test_malformed_target_is_an_input_error() -> None:
    with pytest.raises(XmlInputError):
        apply_patch(b"<doc>", diff('<add sel="doc">x</add>'))


def test_wrong_patch_type() -> None:
    with pytest.raises(TypeError):
        apply_patch(b"<doc/>", "not bytes")  # type: ignore[arg-type]


TARGET = b'<doc xmlns:p="urn:p" a="1">\n <p:x b="2">t<!--c--><?pi d?></p:x>\n <y/>\n</doc>'


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["add", "replace", "remove"]),
    sel=st.text(alphabet="doc/xyp:*@[]12'\"=.()namespace::text()comment", max_size=30),
    attrs=st.sampled_from(
        [
            "",
            ' pos="before"',
            ' pos="after"',
            ' pos="prepend"',
            ' ws="both"',
            ' type="@z"',
        ]
    ),
    content=st.sampled_from(["", "t", "<n/>", "<!--k-->", " <n/>", "<p:n/>"]),
)
def test_only_patch_errors_escape(kind: str, sel: str, attrs: str, content: str) -> None:
    body = f'<diff xmlns:p="urn:p"><{kind} sel={quoteattr(sel)}{attrs}>{content}</{kind}></diff>'
    try:
        result = apply_patch(TARGET, body.encode())
    except PatchError:
        return
    parse_document(result)
