#!/usr/bin/env python3
"""Diff speed against the parse floor, measured in the same run (no absolute claims).

For each case: the median time of ``diff_documents(old, new)`` (parsing included), the
*floor* (lxml parse + Canonical XML serialization of both versions), their ratio, the
operation count and the rendered patch size; the self-check (apply + C14N compare) on
its own line; and xmldiff 3.x ``fast_match`` when it is installed.

    python benchmarks/diff_bench.py [--rounds N] [--sizes 100,1000,10000] [--no-xmldiff]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from xcapdiff_ext.diff.apply import apply_patch
from xcapdiff_ext.diff.engine import diff_documents
from xcapdiff_ext.xmlsafe import c14n, parse_document

RL_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"'
    ' xmlns:cp="urn:ietf:params:xml:ns:common-policy">\n'
    '  <list name="buddies">\n'
)
RL_TAIL = "  </list>\n</resource-lists>\n"


def entry(i: int, name: str | None = None) -> str:
    return (
        f'    <entry uri="sip:user{i}@example.com">\n'
        f"      <display-name>{name or f'User {i}'}</display-name>\n"
        "    </entry>\n"
    )


def resource_lists(ids: list[int], names: dict[int, str] | None = None) -> bytes:
    names = names or {}
    return (RL_HEAD + "".join(entry(i, names.get(i)) for i in ids) + RL_TAIL).encode()


def rl_cases(n: int, rng: random.Random) -> dict[str, tuple[bytes, bytes]]:
    ids = list(range(n))
    old = resource_lists(ids)
    mid = n // 2
    ten = rng.sample(ids, max(1, n // 10))
    shuffled = ids[:]
    rng.shuffle(shuffled)
    return {
        "one entry changed": (old, resource_lists(ids, {mid: "Changed"})),
        "insert in the middle": (old, resource_lists([*ids[:mid], n + 1, *ids[mid:]])),
        "remove in the middle": (old, resource_lists(ids[:mid] + ids[mid + 1 :])),
        "10% changed": (old, resource_lists(ids, {i: f"Renamed {i}" for i in ten})),
        "full reorder": (old, resource_lists(shuffled)),
    }


def pres_rules(rules: int, changed: int | None = None) -> bytes:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<cr:ruleset xmlns="urn:ietf:params:xml:ns:pres-rules"'
        ' xmlns:cr="urn:ietf:params:xml:ns:common-policy">\n'
    ]
    for i in range(rules):
        action = "block" if i == changed else "allow"
        out.append(
            f'  <cr:rule id="rule{i}">\n'
            "    <cr:conditions>\n"
            f'      <cr:identity><cr:one id="sip:watcher{i}@example.com"/></cr:identity>\n'
            "    </cr:conditions>\n"
            f"    <cr:actions><sub-handling>{action}</sub-handling></cr:actions>\n"
            "    <cr:transformations>\n"
            "      <provide-services><all-services/></provide-services>\n"
            "      <provide-persons><all-persons/></provide-persons>\n"
            "    </cr:transformations>\n"
            "  </cr:rule>\n"
        )
    out.append("</cr:ruleset>\n")
    return "".join(out).encode()


def median_time(func: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor(old: bytes, new: bytes) -> None:
    for data in (old, new):
        c14n(parse_document(data))


def xmldiff_fast(old: bytes, new: bytes) -> Callable[[], object] | None:
    try:
        from xmldiff import main as xmldiff_main
    except ImportError:
        return None
    return lambda: xmldiff_main.diff_texts(old, new, diff_options={"fast_match": True})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--no-xmldiff", action="store_true")
    args = parser.parse_args()
    rng = random.Random(5874)
    cases: list[tuple[str, bytes, bytes]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        cases += [(f"rl {n:>6} {name}", *pair) for name, pair in rl_cases(n, rng).items()]
    cases.append(("pres-rules 200 one rule changed", pres_rules(200), pres_rules(200, 100)))

    header = f"{'case':40} {'ours ms':>9} {'floor ms':>9} {'ratio':>6} {'ops':>6} {'patch B':>9}"
    header += f" {'xmldiff ms':>11} {'x/ours':>7}"
    print(header)
    for name, old, new in cases:
        patch = diff_documents(old, new)
        ours = median_time(lambda: diff_documents(old, new), args.rounds)
        base = median_time(lambda: floor(old, new), args.rounds)
        size = len(patch.to_xml())
        line = f"{name:40} {ours * 1e3:9.2f} {base * 1e3:9.2f} {ours / base:5.2f}x"
        line += f" {len(patch):6d} {size:9d}"
        run_xmldiff = None if args.no_xmldiff or len(old) > 200_000 else xmldiff_fast(old, new)
        if run_xmldiff is not None:
            theirs = median_time(run_xmldiff, max(1, args.rounds // 3))
            line += f" {theirs * 1e3:11.1f} {theirs / ours:6.0f}x"
        print(line, flush=True)
        check = median_time(lambda: c14n(parse_document(apply_patch(old, patch))), args.rounds)
        ok = c14n(parse_document(apply_patch(old, patch))) == c14n(parse_document(new))
        print(
            f"{'  self-check (apply + C14N)':40} {check * 1e3:9.2f} {'':9} {check / base:5.2f}x"
            f" {'exact' if ok else 'MISMATCH'}"
        )
        if not ok:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
