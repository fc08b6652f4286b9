"""diff_documents: exactness (property), minimality, selectors, prolog, vectors."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.shared import VECTORS, assert_valid_xcap_diff
from tests.strategies import document_pairs, documents, serialize
from xcapdiff_ext.diff.apply import apply_patch
from xcapdiff_ext.diff.engine import diff_documents
from xcapdiff_ext.diff.ops import Add, Patch, Remove, Replace
from xcapdiff_ext.errors import MalformedXml, UnpatchableChange
from xcapdiff_ext.xcapdiff import DocumentEntry, XcapDiff, build_xcap_diff
from xcapdiff_ext.xmlsafe import c14n, parse_document

ROOT = "http://xcap.example.com/"
SEL = "resource-lists/users/sip:alice@example.com/index"


def canonical(data: bytes) -> bytes:
    return c14n(parse_document(data))


def assert_exact(old: bytes, new: bytes) -> None:
    patch = diff_documents(old, new)
    patched = apply_patch(old, patch)
    assert canonical(patched) == canonical(new), (patch, patched)
    if len(patch):  # every output is a schema-valid xcap-diff, applied the same way
        body = build_xcap_diff(XcapDiff(ROOT, (DocumentEntry(SEL, "e1", "e2", patch=patch),)))
        assert_valid_xcap_diff(body)
        document = etree.fromstring(body)[0]
        assert canonical(apply_patch(old, document)) == canonical(new)


# ------------------------------------------------------------------ properties
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document_pairs())
@example(
    (
        b'<r xmlns="urn:a"><e uri="x"/>\n<e uri="y"/></r>',
        b'<r xmlns="urn:a"><e uri="y"/>\n<e uri="x"/></r>',
    )
)
@example((b"<r><l><?p d?><?q d?>ab</l></r>", b"<r><l><?q d?>ab<?p d?></l></r>"))
@example((b"<r><l><!--c--><!-- n -->\n</l></r>", b"<r><l><!-- n -->\n<!--c--></l></r>"))
def test_patch_turns_old_into_new(pair: tuple[bytes, bytes]) -> None:
    assert_exact(*pair)


@settings(max_examples=100, deadline=None)
@given(documents())
def test_identical_documents_give_no_operations(tree: etree._ElementTree) -> None:
    data = serialize(tree)
    assert len(diff_documents(data, data)) == 0


# Pretty-printed lists exercise the prefix/suffix/line shortcuts of long child lists.
def resource_list(entries: list[tuple[int, str]], name: str = "buddies") -> bytes:
    body = "".join(
        f'    <entry uri="sip:u{i}@example.com">\n'
        f"      <display-name>{dn}</display-name>\n    </entry>\n"
        for i, dn in entries
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">\n'
        f'  <list name="{name}">\n{body}  </list>\n</resource-lists>\n'
    ).encode()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 60), min_size=0, max_size=40, unique=True),
    st.data(),
)
def test_pretty_lists_round_trip(ids: list[int], data: st.DataObject) -> None:
    old_entries = [(i, f"User {i}") for i in ids]
    new_entries = list(old_entries)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["insert", "remove", "rename", "swap"]))
        if op == "insert":
            at = data.draw(st.integers(0, len(new_entries)))
            new_entries.insert(at, (100 + len(new_entries), "New"))
        elif new_entries and op == "remove":
            new_entries.pop(data.draw(st.integers(0, len(new_entries) - 1)))
        elif new_entries and op == "rename":
            at = data.draw(st.integers(0, len(new_entries) - 1))
            new_entries[at] = (new_entries[at][0], "Renamed &amp; &lt;co&gt;")
        elif len(new_entries) > 1 and op == "swap":
            a, b = data.draw(st.permutations(range(len(new_entries))))[:2]
            new_entries[a], new_entries[b] = new_entries[b], new_entries[a]
    assert_exact(resource_list(old_entries), resource_list(new_entries))


# ------------------------------------------------------------------ minimality
BASE = [(i, f"User {i}") for i in range(50)]


@pytest.mark.parametrize(
    ("name", "new_entries", "kind"),
    [
        ("change one display-name", [*BASE[:20], (20, "Changed"), *BASE[21:]], Replace),
        ("insert in the middle", [*BASE[:25], (99, "New"), *BASE[25:]], Add),
        ("insert first", [(99, "New"), *BASE], Add),
        ("insert last", [*BASE, (99, "New")], Add),
        ("remove in the middle", [*BASE[:25], *BASE[26:]], Remove),
        ("remove first", BASE[1:], Remove),
        ("remove last", BASE[:-1], Remove),
    ],
)
def test_one_entry_edit_is_one_operation(name: str, new_entries: list, kind: type) -> None:
    old, new = resource_list(BASE), resource_list(new_entries)
    patch = diff_documents(old, new)
    assert len(patch) == 1, patch
    assert isinstance(patch[0], kind)
    assert_exact(old, new)


def test_removal_takes_its_indentation() -> None:
    patch = diff_documents(resource_list(BASE), resource_list(BASE[:10] + BASE[11:]))
    assert patch[0] == Remove(
        "rl:resource-lists/rl:list/rl:entry[@uri='sip:u10@example.com']", "after"
    )


def test_insertion_carries_its_indentation() -> None:
    old, new = resource_list(BASE), resource_list([*BASE[:10], (99, "New"), *BASE[10:]])
    (op,) = diff_documents(old, new)
    assert isinstance(op, Add) and op.pos == "after"
    assert op.content.startswith(b"\n    <entry") and op.content.endswith(b"</entry>")


def test_attribute_change_is_one_operation_on_that_attribute() -> None:
    patch = diff_documents(resource_list(BASE), resource_list(BASE, name="friends"))
    assert patch.ops == (Replace("rl:resource-lists/rl:list/@name", b"friends"),)


def test_k_independent_edits_take_at_most_k_operations() -> None:
    new = list(BASE)
    for i in (3, 17, 31, 44):
        new[i] = (i, "Changed")
    del new[10]
    new.insert(40, (77, "Inserted"))
    patch = diff_documents(resource_list(BASE), resource_list(new))
    assert len(patch) <= 6
    assert_exact(resource_list(BASE), resource_list(new))


def test_reorder_is_never_larger_than_replacing_the_parent() -> None:
    old, new = resource_list(BASE), resource_list(list(reversed(BASE)))
    patch = diff_documents(old, new)
    parent = etree.tostring(etree.fromstring(new)[0], with_tail=False)
    replace = Patch((Replace("rl:resource-lists/rl:list", parent),), patch.namespaces)
    assert len(patch.to_xml()) <= len(replace.to_xml())
    assert_exact(old, new)


def test_a_few_swaps_stay_moves() -> None:
    new = list(BASE)
    new[10], new[30] = new[30], new[10]
    patch = diff_documents(resource_list(BASE), resource_list(new))
    assert len(patch) <= 4  # two moves: remove + add each, never the whole list
    assert_exact(resource_list(BASE), resource_list(new))


def test_added_and_removed_attributes() -> None:
    old = b'<r xmlns="urn:a" xmlns:x="urn:x"><e a="1" x:b="2"/></r>'
    new = b'<r xmlns="urn:a" xmlns:x="urn:x"><e x:b="3" c="4"/></r>'
    patch = diff_documents(old, new)
    assert len(patch) == 3
    assert_exact(old, new)


# ------------------------------------------------------------------ selectors
def test_selectors_prefix_every_name_and_bind_it() -> None:
    patch = diff_documents(resource_list(BASE), resource_list(BASE[:5] + BASE[6:]))
    assert dict(patch.namespaces) == {"rl": "urn:ietf:params:xml:ns:resource-lists"}
    assert "local-name" not in patch[0].sel


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a'b", '[@uri="a\'b"]'),
        ('a"b', "[@uri='a\"b']"),
        ("a&b", "[@uri='a&b']"),
        ("a'\"b", "[2]"),  # no RFC 5261 literal holds both quotes: position instead
    ],
)
def test_key_predicates_quote_or_fall_back_to_position(value: str, expected: str) -> None:
    esc = value.replace("&", "&amp;").replace('"', "&quot;")
    old = f'<r xmlns="urn:a"><e uri="z"/><e uri="{esc}"><n>1</n></e></r>'.encode()
    new = old.replace(b"<n>1</n>", b"<n>2</n>")
    patch = diff_documents(old, new)
    assert expected in patch[0].sel
    assert_exact(old, new)


def test_non_unique_keys_use_another_attribute_or_position() -> None:
    old = b'<r xmlns="urn:a"><e uri="s" id="1">a</e><e uri="s" id="2">b</e></r>'
    new = old.replace(b">b<", b">c<")
    patch = diff_documents(old, new)
    assert "[@id='2']" in patch[0].sel
    assert_exact(old, new)


# ------------------------------------------------------------------ node kinds
@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<r><!--a--><e/></r>", b"<r><!--b--><e/></r>"),
        (b"<r><?p a?><e/></r>", b"<r><?p b?><e/></r>"),
        (b"<!--top--><r/>", b"<!--other--><r/><?end x?>"),
        (b"<r>mixed <b>bold</b> text</r>", b"<r>mixed <i>it</i> more text</r>"),
        (b"<r><![CDATA[<x>]]></r>", b"<r>&lt;y&gt;</r>"),
        (b'<r xmlns:p="urn:p"/>', b'<r xmlns:p="urn:q"/>'),
        (b"<r/>", b'<r xmlns:p="urn:p"/>'),
        (b'<r><e xmlns:p="urn:p"/></r>', b"<r><e/></r>"),
        (b'<r xmlns:p="urn:p"><p:e/></r>', b'<r xmlns:p="urn:q"><p:e/></r>'),
        (b'<r xmlns="urn:a"/>', b'<r xmlns="urn:a"><e/></r>'),
        (b"<r>  </r>", b"<r>\n</r>"),
        (b"<a/>", b"<b/>"),
    ],
)
def test_every_node_kind(old: bytes, new: bytes) -> None:
    assert_exact(old, new)


def test_namespace_declaration_ops_when_nothing_depends_on_them() -> None:
    patch = diff_documents(b'<r xmlns:p="urn:p"/>', b'<r xmlns:p="urn:q"/>')
    assert patch.ops == (Replace("r/namespace::p", b"urn:q"),)


def test_prolog_changes_are_reported_not_patched() -> None:
    with pytest.raises(UnpatchableChange):
        diff_documents(b"<!DOCTYPE r><r/>", b"<!DOCTYPE s><r/>")


def test_bad_input_is_a_typed_error() -> None:
    with pytest.raises(MalformedXml):
        diff_documents(b"<r/>", b"<r>")


# ------------------------------------------------------------------ vectors
PAIRS = [
    ("rfc5874/A-joe-index.xml", "derived/rfc5874-index-fgherhryt3.xml", 1),
    ("derived/rfc5874-index-fgherhryt3.xml", "derived/rfc5874-index-dgdgdfgrrr.xml", 1),
    ("derived/rfc5874-index-dgdgdfgrrr.xml", "derived/rfc5874-index-63hjjsll.xml", 1),
    ("rfc5875/A.1-joe-index.xml", "derived/rfc5875-index-63hjjsll.xml", 1),
    ("rfc4825/s8.2.3-base.xml", "rfc4825/s8.2.3-1-el1-att-third.xml", 1),
    ("rfc4825/s8.2.3-base.xml", "rfc4825/s8.2.3-2-el3.xml", 1),
    ("rfc4825/s8.2.3-base.xml", "rfc4825/s8.2.3-3-el2-att-2.xml", 1),
    ("rfc4825/s8.2.3-base.xml", "rfc4825/s8.2.3-4-star2-att-2.xml", 1),
    ("rfc4825/s8.2.3-base.xml", "rfc4825/s8.2.3-5-el2-1-att-2.xml", 1),
]
RFC5261 = [f"A.{n}" for n in range(1, 19)]


@pytest.mark.parametrize(("old", "new", "ops"), PAIRS, ids=[f"{a}->{b}" for a, b, _ in PAIRS])
def test_rfc_document_pairs(old: str, new: str, ops: int) -> None:
    old_data, new_data = (VECTORS / old).read_bytes(), (VECTORS / new).read_bytes()
    assert len(diff_documents(old_data, new_data)) <= ops
    assert_exact(old_data, new_data)


@pytest.mark.parametrize("case", RFC5261)
def test_rfc5261_appendix_targets_and_results(case: str) -> None:
    old = (VECTORS / f"rfc5261/{case}-target.xml").read_bytes()
    new = apply_patch(old, (VECTORS / f"rfc5261/{case}-diff.xml").read_bytes())
    assert_exact(old, new)


# Long windows are compared with one serialization per side (engine._same_by_split).
LONG = [(i, f"User {i}") for i in range(120)]


def test_scattered_edits_in_a_long_list_are_one_operation_each() -> None:
    new = list(LONG)
    for i in range(5, 120, 12):
        new[i] = (i, f"Edited {i}")
    old_doc, new_doc = resource_list(LONG), resource_list(new)
    patch = diff_documents(old_doc, new_doc)
    assert len(patch) == 10 and all(isinstance(op, Replace) for op in patch)
    assert_exact(old_doc, new_doc)


def test_long_list_tail_and_attribute_edits() -> None:
    old_doc = resource_list(LONG)
    new_doc = old_doc.replace(b'sip:u7@example.com">\n', b'sip:u7@example.com" x="1">\n')
    new_doc = new_doc.replace(
        b"User 90</display-name>\n    </entry>\n", b"User 90</display-name>\n    </entry>  \n", 1
    )
    assert_exact(old_doc, new_doc)
    assert len(diff_documents(old_doc, new_doc)) == 2


def test_the_split_marker_in_content_falls_back_to_per_node_comparison() -> None:
    from xcapdiff_ext.diff import engine

    new = list(LONG)
    new[3] = (3, engine._MARK)
    new[60] = (60, "Edited")
    old = list(LONG)
    old[100] = (100, engine._MARK)
    new[100] = (100, engine._MARK)
    assert_exact(resource_list(old), resource_list(new))
    assert len(diff_documents(resource_list(old), resource_list(new))) == 2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 119), st.sampled_from(["name", "tail", "attr"])),
        min_size=3,
        max_size=20,
    )
)
def test_long_lists_with_many_scattered_edits(edits: list[tuple[int, str]]) -> None:
    old_doc = resource_list(LONG)
    new_doc = old_doc
    for i, kind in edits:
        entry = f'<entry uri="sip:u{i}@example.com">'.encode()
        if kind == "name":
            new_doc = new_doc.replace(f">User {i}<".encode(), f">Changed {i}<".encode())
        elif kind == "attr":
            new_doc = new_doc.replace(entry, entry[:-1] + b' id="x">')
        else:
            new_doc = new_doc.replace(entry + b"\n      <display", entry + b"\n        <display")
    assert_exact(old_doc, new_doc)


def test_long_windows_are_compared_with_one_serialization_per_side(monkeypatch) -> None:
    from xcapdiff_ext.diff import engine

    results: list[object] = []
    real = engine._same_by_split

    def spy(*args):  # type: ignore[no-untyped-def]
        result = real(*args)
        results.append(result)
        return result

    monkeypatch.setattr(engine, "_same_by_split", spy)
    new = list(LONG)
    for i in range(5, 120, 12):
        new[i] = (i, f"Edited {i}")
    diff_documents(resource_list(LONG), resource_list(new))
    assert results and results[0] is not None
    assert results[0].count(False) == 9  # the spine (entry 5) is diffed, not compared
