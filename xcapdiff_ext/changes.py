"""From an owner's pending changes to one xcap-diff body (pure; RFC 5874/5875).

``plan_publication`` applies, per document: the diff-processing mode (RFC 5875
§4.3), the creation/deletion rules, the etag chain (the ``previous-etag`` of a
report equals the ``new-etag`` last reported; a patch never spans a gap), and then
the body size cap.  It returns facts (entries, fallbacks with a reason, the chain
values to remember once delivered); the publisher logs and counts them.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .change import Change
from .xcapdiff import DocumentEntry, XcapDiff, build_xcap_diff, document_entry
from .xmlsafe import DEFAULT_LIMITS, Limits

__all__ = [
    "DiffProcessing",
    "DocumentKey",
    "Fallback",
    "PublicationPlan",
    "plan_publication",
]

DocumentKey = tuple[str, str]  # (xcap_root, document selector)


class DiffProcessing(enum.Enum):
    """RFC 5875 §4.3 modes, simplest first."""

    NO_PATCHING = "no-patching"  # etags only
    XCAP_PATCHING = "xcap-patching"  # one <document> per version, chained
    AGGREGATE = "aggregate"  # one <document> per document, patch first→last


@dataclass(frozen=True, slots=True)
class Fallback:
    """A document published in the etag-only form instead of with a patch.

    ``category`` is one of: ``gap`` (etag chain broken: missed change, restart,
    concurrent writers), ``recreated`` (deleted and created again), ``no-bytes``
    (a version is not available), ``bad-document``, ``unpatchable`` (XML prolog),
    ``self-check``, ``diff-error``, ``size-cap``."""

    sel: str
    category: str
    detail: str


@dataclass(frozen=True, slots=True)
class PublicationPlan:
    """What to publish for one owner; ``body`` is None when there is nothing to say."""

    owner: str
    xcap_root: str
    body: bytes | None
    entries: tuple[DocumentEntry, ...]
    chains: Mapping[DocumentKey, str | None]  # remember after delivery (None = deleted)
    fallbacks: tuple[Fallback, ...] = ()
    oversize: bool = False  # even the etag-only form exceeds the cap (sent anyway)
    documents: tuple[str, ...] = field(default=())  # selectors of the documents reported


def _category(reason: str) -> str:
    if reason.startswith("self-check"):
        return "self-check"
    if reason.startswith("unpatchable"):
        return "unpatchable"
    if reason.startswith(("old document", "new document")):
        return "bad-document"
    return "diff-error"


def plan_publication(
    owner: str,
    changes: Sequence[Change],
    *,
    mode: DiffProcessing,
    chains: Mapping[DocumentKey, str],
    max_body_bytes: int,
    limits: Limits = DEFAULT_LIMITS,
) -> PublicationPlan:
    """Coalesce ``changes`` (one owner, one xcap-root, in acceptance order).

    ``chains`` holds the new-etag last published per document; a document missing
    there has no known history, so its first change's old etag is trusted."""
    if not changes:
        raise ValueError("nothing to plan")
    root = changes[0].xcap_root
    if any(c.owner != owner or c.xcap_root != root for c in changes):
        raise ValueError("one plan covers one owner and one xcap-root")
    by_doc: dict[str, list[Change]] = {}
    for change in sorted(changes, key=lambda c: c.time):  # stable: same time keeps order
        by_doc.setdefault(change.sel, []).append(change)

    entries: list[DocumentEntry] = []
    fallbacks: list[Fallback] = []
    new_chains: dict[DocumentKey, str | None] = {}
    for sel, doc_changes in by_doc.items():
        known = chains.get((root, sel))
        new_chains[(root, sel)] = doc_changes[-1].new_etag
        if mode is DiffProcessing.XCAP_PATCHING:
            steps = _chain_steps(sel, doc_changes, known, limits)
        else:
            steps = _aggregate(sel, doc_changes, known, mode, limits)
        for entry, fallback in steps:
            entries.append(entry)
            if fallback is not None:
                fallbacks.append(fallback)

    if not entries:
        return PublicationPlan(owner, root, None, (), new_chains)
    body, capped, oversize = _apply_cap(root, entries, max_body_bytes)
    fallbacks += capped
    return PublicationPlan(
        owner,
        root,
        body,
        tuple(entries),
        new_chains,
        tuple(fallbacks),
        oversize,
        tuple(dict.fromkeys(e.sel for e in entries)),
    )


_Step = tuple[DocumentEntry, Fallback | None]


def _aggregate(
    sel: str, cs: list[Change], known: str | None, mode: DiffProcessing, limits: Limits
) -> list[_Step]:
    first, last = cs[0], cs[-1]
    previous = known if known is not None else first.old_etag
    new = last.new_etag
    if previous is None and new is None:
        return []  # created and deleted inside the window (or never known to exist)
    if previous == new:
        return []  # etags unchanged: nothing a client needs to know
    if previous is None:
        return [(DocumentEntry(sel, None, new), None)]
    if new is None:
        return [(DocumentEntry(sel, previous, None), None)]
    if mode is DiffProcessing.NO_PATCHING:
        return [(DocumentEntry(sel, previous, new), None)]
    reason = _gap(cs, known)
    if reason is not None:
        return [_etag_only(sel, previous, new, *reason)]
    if first.old is None or last.new is None:
        return [_etag_only(sel, previous, new, "no-bytes", "document versions not available")]
    return [_patched(sel, first.old, last.new, previous, new, limits)]


def _chain_steps(sel: str, cs: list[Change], known: str | None, limits: Limits) -> list[_Step]:
    if (known if known is not None else cs[0].old_etag) is None and cs[-1].new_etag is None:
        return []  # created and deleted inside the window
    steps: list[_Step] = []
    last = known if known is not None else cs[0].old_etag
    for c in cs:
        new = c.new_etag
        if last == new or (last is None and new is None):
            last = new
            continue
        if last is None:
            steps.append((DocumentEntry(sel, None, new), None))
        elif new is None:
            steps.append((DocumentEntry(sel, last, None), None))
        elif last != c.old_etag:
            what = "recreated" if c.old_etag is None else "gap"
            steps.append(
                _etag_only(sel, last, new, what, f"previous version {last} is not {c.old_etag}")
            )
        elif c.old is None or c.new is None:
            steps.append(_etag_only(sel, last, new, "no-bytes", "document versions not available"))
        else:
            steps.append(_patched(sel, c.old, c.new, last, new, limits))
        last = new
    return steps


def _gap(cs: list[Change], known: str | None) -> tuple[str, str] | None:
    """Why no single patch can span these changes, if it cannot."""
    if known is not None and known != cs[0].old_etag:
        return "gap", f"last published {known}, change starts at {cs[0].old_etag}"
    for a, b in itertools.pairwise(cs):
        if a.new_etag is None or b.old_etag is None:
            return "recreated", "deleted and created again in one window"
        if a.new_etag != b.old_etag:
            return "gap", f"version {a.new_etag} followed by a change from {b.old_etag}"
    return None


def _etag_only(sel: str, previous: str, new: str, category: str, detail: str) -> _Step:
    return DocumentEntry(sel, previous, new), Fallback(sel, category, detail)


def _patched(
    sel: str, old: bytes, new: bytes, previous: str, new_etag: str, limits: Limits
) -> _Step:
    entry, reason = document_entry(sel, old, new, previous, new_etag, limits=limits)
    if entry is None:  # same etag: cannot happen here (checked by the callers)
        return DocumentEntry(sel, previous, new_etag), None
    if reason is not None:
        return entry, Fallback(sel, _category(reason), reason)
    return entry, None


def _apply_cap(
    root: str, entries: list[DocumentEntry], cap: int
) -> tuple[bytes, list[Fallback], bool]:
    """Drop patches, largest first, until the body fits; report each as a fallback."""
    body = build_xcap_diff(XcapDiff(root, tuple(entries)))
    if len(body) <= cap:
        return body, [], False
    sizes = sorted(
        (
            (len(build_xcap_diff(XcapDiff(root, (e,)))), k)
            for k, e in enumerate(entries)
            if e.patch is not None or e.body_not_changed
        ),
        reverse=True,
    )
    fallbacks = []
    for size, k in sizes:
        e = entries[k]
        entries[k] = DocumentEntry(e.sel, e.previous_etag, e.new_etag)
        fallbacks.append(Fallback(e.sel, "size-cap", f"patch of {size} bytes over the body cap"))
        body = build_xcap_diff(XcapDiff(root, tuple(entries)))
        if len(body) <= cap:
            return body, fallbacks, False
    return body, fallbacks, True
