"""plan_publication: modes, creation/deletion rules, etag chains, size cap."""

from __future__ import annotations

import pytest

from tests.shared import assert_valid_xcap_diff
from tests.vectors import vector
from xcapdiff_ext.change import Change, ChangeKind
from xcapdiff_ext.changes import DiffProcessing, plan_publication
from xcapdiff_ext.diff.apply import apply_patch
from xcapdiff_ext.xcapdiff import parse_xcap_diff
from xcapdiff_ext.xmlsafe import c14n, parse_document

ROOT = "http://xcap.example.com/"
OWNER = "sip:joe@example.com"
SEL = "tests/users/sip:joe@example.com/index"
AGG, CHAIN, NONE = (
    DiffProcessing.AGGREGATE,
    DiffProcessing.XCAP_PATCHING,
    DiffProcessing.NO_PATCHING,
)

# RFC 5874 A.2: joe's index and the three element PUTs, with their etags.
V0 = vector("rfc5874/A-joe-index.xml")
V1 = vector("derived/rfc5874-index-fgherhryt3.xml")
V2 = vector("derived/rfc5874-index-dgdgdfgrrr.xml")
V3 = vector("derived/rfc5874-index-63hjjsll.xml")
ETAGS = ["7ahggs", "fgherhryt3", "dgdgdfgrrr", "63hjjsll"]


def change(old, old_etag, new, new_etag, t=0.0, sel=SEL, owner=OWNER) -> Change:
    kind = ChangeKind.ELEMENT if old and new else ChangeKind.DOCUMENT
    node = "doc/foo" if kind is ChangeKind.ELEMENT else None
    return Change(ROOT, sel, owner, old, old_etag, new, new_etag, kind, node, t)


def a2_changes() -> list[Change]:
    versions = [V0, V1, V2, V3]
    return [
        change(versions[i], ETAGS[i], versions[i + 1], ETAGS[i + 1], float(i)) for i in range(3)
    ]


def plan(changes, mode=AGG, chains=None, cap=16384):
    return plan_publication(OWNER, changes, mode=mode, chains=chains or {}, max_body_bytes=cap)


def documents(p):
    assert p.body is not None
    assert_valid_xcap_diff(p.body)
    return [
        (e.sel, e.previous_etag, e.new_etag, e.patch is not None)
        for e in parse_xcap_diff(p.body).entries
    ]


def test_aggregate_reports_one_patch_from_first_to_last_version() -> None:
    p = plan(a2_changes())
    assert documents(p) == [(SEL, "7ahggs", "63hjjsll", True)]
    (entry,) = p.entries
    assert c14n(parse_document(apply_patch(V0, entry.patch))) == c14n(parse_document(V3))
    assert p.chains == {(ROOT, SEL): "63hjjsll"}
    assert p.fallbacks == ()


def test_xcap_patching_reports_each_version_chained() -> None:
    p = plan(a2_changes(), CHAIN)
    assert documents(p) == [
        (SEL, "7ahggs", "fgherhryt3", True),
        (SEL, "fgherhryt3", "dgdgdfgrrr", True),
        (SEL, "dgdgdfgrrr", "63hjjsll", True),
    ]
    doc = V0
    for entry in p.entries:  # applicable in document order (RFC 5874 §3)
        doc = apply_patch(doc, entry.patch)
    assert c14n(parse_document(doc)) == c14n(parse_document(V3))


def test_no_patching_reports_etags_only() -> None:
    assert documents(plan(a2_changes(), NONE)) == [(SEL, "7ahggs", "63hjjsll", False)]


@pytest.mark.parametrize("mode", list(DiffProcessing))
def test_created_then_deleted_in_one_window_is_nothing(mode) -> None:
    p = plan([change(None, None, V0, "e1", 0), change(V0, "e1", None, None, 1)], mode)
    assert p.body is None and p.chains == {(ROOT, SEL): None}


@pytest.mark.parametrize("mode", list(DiffProcessing))
def test_created_is_new_etag_only_and_deleted_previous_only(mode) -> None:
    assert documents(plan([change(None, None, V0, "e1")], mode)) == [(SEL, None, "e1", False)]
    assert documents(plan([change(V0, "e1", None, None)], mode)) == [(SEL, "e1", None, False)]


def test_deleted_then_recreated_is_both_etags_without_patch() -> None:
    p = plan([change(V0, "e1", None, None, 0), change(None, None, V1, "e2", 1)])
    assert documents(p) == [(SEL, "e1", "e2", False)]
    assert [f.category for f in p.fallbacks] == ["recreated"]


@pytest.mark.parametrize("mode", list(DiffProcessing))
def test_unchanged_etags_are_nothing(mode) -> None:
    p = plan(
        [change(V0, "e1", V1, "e2", 0), change(V1, "e2", V0, "e1", 1)],
        mode if mode is not CHAIN else AGG,
    )
    assert p.body is None


def test_same_bytes_with_a_new_etag_is_body_not_changed() -> None:
    p = plan([change(V0, "e1", V0, "e2")])
    (entry,) = p.entries
    assert entry.body_not_changed and (entry.previous_etag, entry.new_etag) == ("e1", "e2")


@pytest.mark.parametrize("mode", [AGG, CHAIN])
def test_never_a_patch_across_a_gap_at_the_start(mode) -> None:
    # We last published "older"; the change starts from 7ahggs: a version was missed.
    p = plan(a2_changes()[:1], mode, chains={(ROOT, SEL): "older"})
    assert documents(p) == [(SEL, "older", "fgherhryt3", False)]
    assert [f.category for f in p.fallbacks] == ["gap"]


def test_aggregate_gap_inside_the_window_gives_etag_only() -> None:
    c = a2_changes()
    broken = [c[0], change(V1, "unknown", V2, "dgdgdfgrrr", 1.0)]
    p = plan(broken)
    assert documents(p) == [(SEL, "7ahggs", "dgdgdfgrrr", False)]
    assert p.fallbacks[0].category == "gap"


def test_xcap_patching_gap_only_costs_that_step() -> None:
    c = a2_changes()
    broken = [c[0], change(V1, "unknown", V2, "dgdgdfgrrr", 1.0), c[2]]
    assert documents(plan(broken, CHAIN)) == [
        (SEL, "7ahggs", "fgherhryt3", True),
        (SEL, "fgherhryt3", "dgdgdfgrrr", False),
        (SEL, "dgdgdfgrrr", "63hjjsll", True),
    ]


def test_previous_etag_continues_the_published_chain() -> None:
    p = plan(a2_changes()[1:], chains={(ROOT, SEL): "fgherhryt3"})
    assert documents(p) == [(SEL, "fgherhryt3", "63hjjsll", True)]


def test_unknown_old_bytes_degrade_to_etag_only() -> None:
    p = plan([change(None, "e1", V1, "e2")])
    assert documents(p) == [(SEL, "e1", "e2", False)]
    assert p.fallbacks[0].category == "no-bytes"


def test_bad_stored_document_degrades_to_etag_only() -> None:
    p = plan([change(b"<not-xml", "e1", V1, "e2")])
    assert documents(p) == [(SEL, "e1", "e2", False)]
    assert p.fallbacks[0].category == "bad-document"


def test_one_body_carries_every_document_of_the_owner_in_order() -> None:
    other = "resource-lists/users/sip:joe@example.com/index"
    p = plan([change(None, None, V0, "r1", 0.0, sel=other), *a2_changes()])
    assert [d[0] for d in documents(p)] == [other, SEL]
    assert p.documents == (other, SEL)


def test_size_cap_drops_the_largest_patches_first() -> None:
    small_sel = "small/users/sip:joe@example.com/index"
    changes = [*a2_changes(), change(V0, "s1", V1, "s2", 9.0, sel=small_sel)]
    full = plan(changes)
    assert full.body is not None
    sizes = {e.sel: len(e.patch) for e in full.entries if e.patch is not None}
    assert set(sizes) == {SEL, small_sel}
    capped = plan(changes, cap=len(full.body) - 1)
    assert capped.body is not None and len(capped.body) <= len(full.body) - 1
    assert [f.category for f in capped.fallbacks] == ["size-cap"]
    assert capped.oversize is False


def test_body_over_the_cap_even_etag_only_is_flagged() -> None:
    p = plan(a2_changes(), cap=10)
    assert p.oversize and p.body is not None  # sent anyway; the caller logs it
    assert all(e.patch is None for e in p.entries)


def test_changes_of_another_owner_are_refused() -> None:
    with pytest.raises(ValueError):
        plan([change(None, None, V0, "e1", owner="sip:bob@example.com")])


def test_change_records_round_trip() -> None:
    for c in [*a2_changes(), change(None, None, V0, "e1"), change(V0, "e1", None, None)]:
        assert Change.from_record(c.to_record()) == c


def test_a_change_says_what_it_is() -> None:
    created, deleted = change(None, None, V0, "e1"), change(V0, "e1", None, None)
    reput, modified = change(V0, "e1", V0, "e2"), change(V0, "e1", V1, "e2")
    assert created.created and not created.deleted and not created.unchanged
    assert deleted.deleted and not deleted.created
    assert reput.unchanged and not modified.unchanged  # an identical re-PUT is recognisable
    assert modified.without_bytes().retained_bytes == 0
    assert modified.without_bytes().new_etag == "e2"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"xcap_root": "xcap.example.com/"},  # not absolute
        {"xcap_root": "http://xcap.example.com"},  # no trailing slash (NOTES trap 3)
        {"sel": "/tests/users/x/index"},  # absolute selector
        {"owner": ""},
        {"old_etag": None, "new_etag": None, "old": None, "new": None},
    ],
)
def test_invalid_changes_are_refused(kwargs) -> None:
    base = dict(xcap_root=ROOT, sel=SEL, owner=OWNER, old=V0, old_etag="e1", new=V1, new_etag="e2")
    with pytest.raises(ValueError):
        Change(**{**base, **kwargs})
