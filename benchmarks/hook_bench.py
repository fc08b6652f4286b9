"""Request-path cost of the storage wrapper, on the OpenXCAP stand-in (in-process).

Usage: python benchmarks/hook_bench.py [--entries 300] [--rounds 400]

Runs the stand-in's Database storage (tests/openxcap_standin; an in-memory store whose
"queries" are one event-loop step each) bare and wrapped by ``PublishingStorage`` with
a sink that only collects the changes, interleaved.  Each round is what OpenXCAP does
for an element PUT: ``get_document`` then ``put_document`` of the edited document.
Prints the medians and the ratio.  Then 20 concurrent element PUTs of one document:
bare (lost updates) and wrapped (each one after the first rebased: diff + apply +
the application's validation under the document's lock), with the time per PUT.

The real server's latency with and without the extension: openxcap_latency.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

STANDIN = Path(__file__).resolve().parents[1] / "tests" / "openxcap_standin"


def setup() -> None:
    config = Path(tempfile.mkdtemp(prefix="hook-bench-"))
    (config / "config.ini").write_text(
        "[Server]\nroot = http://xcap.example.com/xcap-root\nbackend = Database\n"
        f"[Database]\nauthentication_db_uri = sqlite:///{config}/a\n"
        f"storage_db_uri = sqlite:///{config}/s\n"
    )
    os.environ["OPENXCAP_STANDIN_CONFIG_DIR"] = str(config)
    sys.path.insert(0, str(STANDIN))
    sys.path.insert(0, str(STANDIN.parents[1]))


def document(entries: int) -> bytes:
    body = "".join(f'<entry uri="sip:u{n}@example.com"/>' for n in range(entries))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">'
        f'<list name="friends">{body}</list></resource-lists>'
    ).encode()


async def main(entries: int, rounds: int) -> None:
    from xcap.appusage import namespaces
    from xcap.backend.database import DatabaseStorage
    from xcap.uri import XCAPUri

    from xcapdiff_ext.openxcap.storage import PublishingStorage

    root = "http://xcap.example.com/xcap-root"
    changes: list[object] = []
    stores = {
        "bare": DatabaseStorage(),
        "wrapped": PublishingStorage(DatabaseStorage(), changes.append, xcap_root=root),
    }

    def uri(user: str, node: str = "") -> XCAPUri:
        path = f"/resource-lists/users/sip:{user}@example.com/index{node}"
        return XCAPUri(root, path, namespaces)

    def nocheck(*args: object) -> None:
        pass

    async def element_put(store: object, user: str, n: int) -> None:
        u = uri(user, f'~~/resource-lists/list[@name="friends"]/entry[@uri="sip:n{n}@x"]')
        got = await store.get_document(u, nocheck)  # type: ignore[attr-defined]
        new = got.data.replace(b"</list>", f'<entry uri="sip:n{n}@x"/></list>'.encode())
        await store.put_document(u, new, nocheck)  # type: ignore[attr-defined]

    for name, store in stores.items():
        await store.put_document(uri(name), document(entries), nocheck)  # type: ignore[attr-defined]
    times: dict[str, list[float]] = {name: [] for name in stores}
    for n in range(rounds):
        order = list(stores.items()) if n % 2 == 0 else list(reversed(stores.items()))
        for name, store in order:
            t0 = time.perf_counter()
            await element_put(store, name, n)
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    print(f"element PUT (get + put), {entries} entries growing by {rounds}, {rounds} rounds:")
    for name in stores:
        print(f"  {name:8s} median {med[name]:8.1f} us")
    print(f"  wrapped/bare: {med['wrapped'] / med['bare']:.2f}x "
          f"(+{med['wrapped'] - med['bare']:.1f} us per request)")  # fmt: skip

    for name, store in stores.items():
        user = f"c-{name}"
        await store.put_document(uri(user), document(entries), nocheck)  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        await asyncio.gather(*(element_put(store, user, n) for n in range(20)))
        elapsed = time.perf_counter() - t0
        got = await store.get_document(uri(user), nocheck)  # type: ignore[attr-defined]
        kept = got.data.count(b"<entry ") - entries
        print(f"20 concurrent element PUTs, {name:8s}: {kept:2d} of 20 kept, "
              f"{elapsed / 20 * 1000:.2f} ms per PUT")  # fmt: skip
    wrapped = stores["wrapped"]
    print(f"  rebased: {wrapped.rebased}, conflicts: {wrapped.conflicts}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=400)
    args = ap.parse_args()
    setup()
    asyncio.run(main(args.entries, args.rounds))
