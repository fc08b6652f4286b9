"""``diff_documents(..., stable=True)``: patches that replay onto a later version.

Used to rebase concurrent XCAP element/attribute operations (openxcap/storage.py):
the selectors must keep naming the same nodes after other requests changed the
document, and an element added last must stay last.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings

from tests.strategies import document_pairs
from xcapdiff_ext.diff.apply import apply_patch
from xcapdiff_ext.diff.engine import diff_documents
from xcapdiff_ext.errors import UnlocatedNode
from xcapdiff_ext.xmlsafe import c14n, parse_document

RL = b'<?xml version="1.0" encoding="UTF-8"?>\n<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">'


def doc(*lists: bytes) -> bytes:
    return RL + b"".join(lists) + b"</resource-lists>"


def entries(name: str, *uris: str) -> bytes:
    inner = "".join(f'<entry uri="{u}"/>' for u in uris)
    return f'<list name="{name}">{inner}</list>'.encode()


def squeezed(data: bytes) -> bytes:
    """Canonical form without whitespace-only text (stable patches may move it)."""
    tree = parse_document(data, where="test")
    for node in tree.iter():
        if node.text is not None and not node.text.strip():
            node.text = None
        if node.tail is not None and not node.tail.strip():
            node.tail = None
    return c14n(tree)


@settings(max_examples=150, deadline=None)
@given(document_pairs())
@example(
    (  # an element added before a parent's non-whitespace trailing text stays before it
        b'<r xmlns="urn:a"><l><l/><!--c-->hello</l></r>',
        b'<r xmlns="urn:a"><l><l/><l/>hello</l></r>',
    )
)
def test_stable_patch_turns_old_into_new_up_to_whitespace(pair: tuple[bytes, bytes]) -> None:
    old, new = pair
    assert squeezed(apply_patch(old, diff_documents(old, new, stable=True))) == squeezed(new)


def test_unique_keyed_elements_still_get_their_key() -> None:
    old = doc(entries("friends", "sip:a@x"))
    new = doc(entries("friends", "sip:a@x", "sip:b@x"))
    plain = diff_documents(old, new)
    stable = diff_documents(old, new, stable=True)
    assert "[@name='friends']" not in plain.ops[0].sel  # one list: the bare name is enough
    assert stable.ops[0].sel == "rl:resource-lists/rl:list[@name='friends']"
    assert stable.ops[0].pos is None  # appended to the list, not after sip:a


def test_concurrent_appends_replay_in_order() -> None:
    base = doc(entries("friends", "sip:first@x"))
    current = base
    for n in range(20):  # each request read `base` and appended one entry
        mine = doc(entries("friends", "sip:first@x", f"sip:c{n}@x"))
        current = apply_patch(current, diff_documents(base, mine, stable=True))
    expected = doc(entries("friends", "sip:first@x", *(f"sip:c{n}@x" for n in range(20))))
    assert c14n(parse_document(current, where="t")) == c14n(parse_document(expected, where="t"))


def test_concurrent_edits_of_different_entries_compose() -> None:
    base = doc(entries("friends", "sip:a@x", "sip:b@x"), entries("work", "sip:c@x"))
    drop_b = doc(entries("friends", "sip:a@x"), entries("work", "sip:c@x"))
    add_d = doc(entries("friends", "sip:a@x", "sip:b@x"), entries("work", "sip:c@x", "sip:d@x"))
    rename = doc(entries("friends", "sip:a@x", "sip:b@x"), entries("office", "sip:c@x"))
    current = drop_b
    for mine in (add_d, rename):
        current = apply_patch(current, diff_documents(base, mine, stable=True))
    expected = doc(entries("friends", "sip:a@x"), entries("office", "sip:c@x", "sip:d@x"))
    assert c14n(parse_document(current, where="t")) == c14n(parse_document(expected, where="t"))


def test_an_edit_inside_a_list_renamed_meanwhile_does_not_apply() -> None:
    # Run one after the other, the DELETE of friends/sip:b would find no such list
    # (404); replayed, it must not apply either: the hook answers 409.
    base = doc(entries("friends", "sip:a@x", "sip:b@x"))
    renamed = doc(entries("buddies", "sip:a@x", "sip:b@x"))
    drop_b = doc(entries("friends", "sip:a@x"))
    with pytest.raises(UnlocatedNode):
        apply_patch(renamed, diff_documents(base, drop_b, stable=True))
