"""Child-list alignment for the diff engine: which old children stay, in which order.

Pure functions over small tuples; the engine owns the trees.  The rules, in order:
identical nodes (same serialization) match; elements with the same key (tag plus the
first of ``uri``/``name``/``id`` that is unique on both sides) match and are diffed
recursively; the remaining elements of one gap match by tag (a longest common
subsequence, small gaps only).  Matches that would cross are dropped by a longest
increasing subsequence, so the kept pairs are in the same order on both sides and
everything else is a removal or an insertion.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Hashable, Sequence

__all__ = ["KEY_ATTRIBUTES", "align", "longest_increasing"]

# Attributes that identify an entry among its siblings in XCAP application usages
# (resource-lists entry/@uri, list/@name, common-policy rule/@id, rls service/@uri).
KEY_ATTRIBUTES = ("uri", "name", "id")

# Tag-LCS is quadratic; gaps larger than this fall back to removal + insertion.
_MAX_LCS_CELLS = 4096


def longest_increasing(values: Sequence[int]) -> list[int]:
    """Indexes (into ``values``) of one longest strictly increasing subsequence."""
    tails: list[int] = []  # tails[k] = index of the smallest tail of a run of length k+1
    tail_values: list[int] = []
    previous = [-1] * len(values)
    for i, value in enumerate(values):
        k = bisect_left(tail_values, value)
        if k > 0:
            previous[i] = tails[k - 1]
        if k == len(tails):
            tails.append(i)
            tail_values.append(value)
        else:
            tails[k] = i
            tail_values[k] = value
    out: list[int] = []
    i = tails[-1] if tails else -1
    while i >= 0:
        out.append(i)
        i = previous[i]
    out.reverse()
    return out


def _unique_index(keys: Sequence[Hashable | None]) -> dict[Hashable, int]:
    seen: dict[Hashable, int] = {}
    dup: set[Hashable] = set()
    for i, key in enumerate(keys):
        if key is None:
            continue
        if key in seen:
            dup.add(key)
        else:
            seen[key] = i
    for key in dup:
        del seen[key]
    return seen


def align(
    old_exact: Sequence[bytes],
    new_exact: Sequence[bytes],
    old_keys: Sequence[Hashable | None],
    new_keys: Sequence[Hashable | None],
    old_tags: Sequence[Hashable | None],
    new_tags: Sequence[Hashable | None],
) -> list[tuple[int, int, bool]]:
    """Pairs ``(old_index, new_index, identical)`` in increasing order on both sides.

    ``*_exact`` are the serializations (equal bytes = identical nodes), ``*_keys``
    the key of each element (None for none), ``*_tags`` the element tag (None for
    comments/PIs, which only ever match exactly)."""
    pairs: dict[int, tuple[int, bool]] = {}  # new index -> (old index, identical)
    used_old: set[int] = set()

    # 1. identical nodes; duplicates pair up in document order.
    by_bytes: dict[bytes, list[int]] = {}
    i: int | None
    for i in range(len(old_exact) - 1, -1, -1):
        by_bytes.setdefault(old_exact[i], []).append(i)
    for j, data in enumerate(new_exact):
        stack = by_bytes.get(data)
        if stack:
            i = stack.pop()
            pairs[j] = (i, True)
            used_old.add(i)

    # 2. same key, changed content.
    old_by_key = _unique_index(old_keys)
    new_by_key = _unique_index(new_keys)
    for key, j in new_by_key.items():
        if j in pairs:
            continue
        i = old_by_key.get(key)
        if i is not None and i not in used_old:
            pairs[j] = (i, False)
            used_old.add(i)

    # 3. keep an order-preserving subset.
    order = sorted(pairs)
    olds = [pairs[j][0] for j in order]
    kept = [(olds[k], order[k], pairs[order[k]][1]) for k in longest_increasing(olds)]

    # 4. inside each gap, match the remaining elements by tag.
    result: list[tuple[int, int, bool]] = []
    prev_i, prev_j = -1, -1
    for i, j, same in [*kept, (len(old_exact), len(new_exact), True)]:
        if i == prev_i + 1 or j == prev_j + 1:  # one side of the gap is empty
            if i < len(old_exact):
                result.append((i, j, same))
            prev_i, prev_j = i, j
            continue
        gap_old = [k for k in range(prev_i + 1, i) if old_tags[k] is not None]
        gap_new = [k for k in range(prev_j + 1, j) if new_tags[k] is not None]
        if gap_old and gap_new:
            result.extend(_lcs_by_tag(gap_old, gap_new, old_tags, new_tags))
        if i < len(old_exact):
            result.append((i, j, same))
        prev_i, prev_j = i, j
    return result


def _lcs_by_tag(
    gap_old: list[int],
    gap_new: list[int],
    old_tags: Sequence[Hashable | None],
    new_tags: Sequence[Hashable | None],
) -> list[tuple[int, int, bool]]:
    if len(gap_old) * len(gap_new) > _MAX_LCS_CELLS:
        return []
    n, m = len(gap_old), len(gap_new)
    first = old_tags[gap_old[0]]
    if all(old_tags[k] == first for k in gap_old) and all(new_tags[k] == first for k in gap_new):
        # One tag throughout: the table's walk below matches position by position.
        return [(gap_old[k], gap_new[k], False) for k in range(min(n, m))]
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for a in range(n - 1, -1, -1):
        row, below = table[a], table[a + 1]
        tag = old_tags[gap_old[a]]
        for b in range(m - 1, -1, -1):
            if tag == new_tags[gap_new[b]]:
                row[b] = below[b + 1] + 1
            else:
                row[b] = max(below[b], row[b + 1])
    out: list[tuple[int, int, bool]] = []
    a = b = 0
    while a < n and b < m:
        if old_tags[gap_old[a]] == new_tags[gap_new[b]]:
            out.append((gap_old[a], gap_new[b], False))
            a += 1
            b += 1
        elif table[a + 1][b] >= table[a][b + 1]:
            a += 1
        else:
            b += 1
    return out
