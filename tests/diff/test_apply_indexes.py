"""Child indexes and the lxml-writing fast path of apply_patch stay exact after edits."""

from __future__ import annotations

from lxml import etree

from xcapdiff_ext.diff.apply import apply_patch

NS = "urn:x"
DOC = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<r xmlns="urn:x"><l>\n  <e k="1"><n>a</n></e>\n  <e k="2"><n>b</n></e>\n'
    b'  <e k="3"><n>c</n></e>\n</l></r>'
)


def _patch(*ops: str) -> bytes:
    return ('<diff xmlns:x="urn:x">' + "".join(ops) + "</diff>").encode()


def _keys(doc: bytes) -> list[str | None]:
    root = etree.fromstring(doc)
    return [e.get("k") for e in root.iter(f"{{{NS}}}e")]


def _names(doc: bytes) -> list[str | None]:
    root = etree.fromstring(doc)
    return [n.text for n in root.iter(f"{{{NS}}}n")]


def test_add_then_select_new_key_and_position() -> None:
    out = apply_patch(
        DOC,
        _patch(
            '<add sel="x:r/x:l/x:e[@k=\'1\']" pos="after"><e xmlns="urn:x" k="9"><n>z</n></e></add>',
            "<replace sel=\"x:r/x:l/x:e[@k='9']/x:n/text()\">y</replace>",
            '<replace sel="x:r/x:l/x:e[3]/@k">7</replace>',
        ),
    )
    assert _keys(out) == ["1", "9", "7", "3"]
    assert _names(out) == ["a", "y", "b", "c"]


def test_remove_then_key_gone_and_positions_shift() -> None:
    out = apply_patch(
        DOC,
        _patch(
            '<remove sel="x:r/x:l/x:e[@k=\'2\']" ws="before"/>',
            '<replace sel="x:r/x:l/x:e[2]/x:n/text()">C</replace>',
        ),
    )
    assert _keys(out) == ["1", "3"]
    assert _names(out) == ["a", "C"]
    try:
        apply_patch(
            DOC,
            _patch(
                "<remove sel=\"x:r/x:l/x:e[@k='2']\"/>",
                "<remove sel=\"x:r/x:l/x:e[@k='2']\"/>",
            ),
        )
    except Exception as err:
        assert type(err).__name__ == "UnlocatedNode"
    else:
        raise AssertionError("a removed key must not be found")


def test_attribute_edits_update_the_key_index() -> None:
    out = apply_patch(
        DOC,
        _patch(
            "<replace sel=\"x:r/x:l/x:e[@k='1']/@k\">2b</replace>",
            "<replace sel=\"x:r/x:l/x:e[@k='2b']/x:n/text()\">A</replace>",
            "<remove sel=\"x:r/x:l/x:e[@k='3']/@k\"/>",
            '<add sel="x:r/x:l/x:e[3]" type="@k">1</add>',
            "<replace sel=\"x:r/x:l/x:e[@k='1']/x:n/text()\">C</replace>",
        ),
    )
    assert _keys(out) == ["2b", "2", "1"]
    assert _names(out) == ["A", "b", "C"]


def test_replace_element_then_select_by_new_key() -> None:
    out = apply_patch(
        DOC,
        _patch(
            '<replace sel="x:r/x:l/x:e[@k=\'2\']"><e xmlns="urn:x" k="5"><n>q</n></e></replace>',
            '<add sel="x:r/x:l/x:e[@k=\'5\']"><n xmlns="urn:x">w</n></add>',
            "<remove sel=\"x:r/x:l/x:e[@k='5']/x:n[1]\"/>",
        ),
    )
    assert _keys(out) == ["1", "5", "3"]
    assert _names(out) == ["a", "w", "c"]


def test_namespace_rebind_updates_name_index() -> None:
    doc = b'<r xmlns:p="urn:a"><l><p:e k="1"/><p:e k="2"/></l></r>'
    out = apply_patch(
        doc,
        b'<diff xmlns:a="urn:a" xmlns:b="urn:b">'
        b"<replace sel=\"r/l/a:e[@k='1']/@k\">0</replace>"
        b'<replace sel="r/namespace::p">urn:b</replace>'
        b"<replace sel=\"r/l/b:e[@k='2']/@k\">3</replace>"
        b"</diff>",
    )
    root = etree.fromstring(out)
    assert [e.get("k") for e in root.iter("{urn:b}e")] == ["0", "3"]


def test_fast_and_slow_serialisation_agree() -> None:
    # The second document has a (redundant) declaration below the root, which
    # sends apply_patch down the hand-written path; results must be the same.
    ops = _patch(
        '<add sel="x:r/x:l/x:e[@k=\'2\']" pos="before"><!--c--><?pi d?></add>',
        '<add sel="x:r/x:l" type="@m">v&amp;&lt;"</add>',
        "<remove sel=\"x:r/x:l/x:e[@k='3']\"/>",
        '<replace sel="x:r/x:l/x:e[1]/x:n/text()">&#13;t</replace>',
        '<add sel="x:r/x:l/x:e[1]" type="namespace::q">urn:q</add>',
    )
    fast = apply_patch(DOC, ops)
    slow_doc = DOC.replace(b"<l>", b'<l xmlns="urn:x">')
    slow = apply_patch(slow_doc, ops)
    canon = lambda b: etree.tostring(etree.fromstring(b), method="c14n")  # noqa: E731
    assert canon(fast) == canon(slow)
    assert b"xmlns:q" in fast and b'm="v&amp;&lt;&quot;"' in fast
