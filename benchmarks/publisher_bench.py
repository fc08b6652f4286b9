#!/usr/bin/env python3
"""Publisher throughput and reactor responsiveness, on the real reactor.

1. 10,000 changes over 1,000 owners through the null transport (spool on disk, diffs
   in the reactor's thread pool, ``min_interval = 0`` so every change is published
   on its own): changes/s, p50/p99 latency from accepting a change to the transport
   call, peak RSS.
2. How late a 1 ms timer fires while a 10,000-entry document is diffed and
   self-checked: in the worker thread (production) and inline in the reactor thread
   (the baseline, measured in the same run).

    python benchmarks/publisher_bench.py [--changes 10000] [--owners 1000]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from diff_bench import resource_lists
from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed

from xcapdiff_ext.change import Change
from xcapdiff_ext.interfaces import Publication, PublishOutcome
from xcapdiff_ext.publisher import Policy, Publisher
from xcapdiff_ext.spool import Spool
from xcapdiff_ext.xcapdiff import document_entry

ROOT = "http://xcap.example.com/"


class CountingTransport:
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def publish(self, publication: Publication) -> Deferred[PublishOutcome]:
        self.calls += 1
        return succeed(PublishOutcome())

    def stop(self) -> Deferred[None]:
        return succeed(None)


def in_thread(func):  # the production run_cpu / run_in_thread
    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), func)


@inlineCallbacks
def throughput(n_changes: int, n_owners: int, rate: float | None = None):
    """Offer ``n_changes`` as fast as possible (``rate`` None) or at ``rate`` per second."""
    rng = random.Random(3903)
    owners = [f"sip:user{i}@example.com" for i in range(n_owners)]
    versions = {o: 0 for o in owners}
    docs = [resource_lists(list(range(10)), {k: f"v{k}"}) for k in range(50)]
    with tempfile.TemporaryDirectory() as spool_dir:
        spool = Spool(spool_dir, reactor, run_in_thread=in_thread)
        transport = CountingTransport()
        pub = Publisher(
            reactor,
            transport,
            Policy(min_interval=0, status_interval=0),
            spool=spool,
            run_cpu=in_thread,
        )
        latencies: list[float] = []
        pub.counters.latency = latencies.append  # keep every sample, not the last 1024
        pub.start()
        start = time.perf_counter()
        for k in range(n_changes):
            owner = owners[rng.randrange(n_owners)]
            v = versions[owner]
            versions[owner] = v + 1
            change = Change(
                ROOT,
                f"resource-lists/users/{owner}/index",
                owner,
                docs[v % 50],
                f"e{v}",
                docs[(v + 1) % 50],
                f"e{v + 1}",
                time=reactor.seconds(),
            )
            pub.accept(change)
            if rate is not None and k % 10 == 9:  # paced: 10 changes per tick
                yield task.deferLater(reactor, 10 / rate, lambda: None)
            elif k % 200 == 199:  # let the reactor breathe as a busy XCAP server would
                yield task.deferLater(reactor, 0, lambda: None)
        while pub.status()["owners_waiting"]:
            yield task.deferLater(reactor, 0.01, lambda: None)
        elapsed = time.perf_counter() - start
        yield spool.flush()
        spool_bytes = spool.size()
        yield pub.stop()
    # latency: from the oldest change a publication carries to its transport call
    latencies.sort()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    offered = "as fast as possible" if rate is None else f"offered at {rate:.0f}/s"
    print(
        f"changes: {n_changes} over {n_owners} owners ({offered}), {transport.calls} publications"
    )
    print(f"throughput: {n_changes / elapsed:,.0f} changes/s ({elapsed:.2f} s)")
    print(
        f"latency change -> transport: p50 {statistics.median(latencies) * 1e3:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms"
    )
    print(f"peak RSS so far: {peak:.0f} MiB; journal at the end: {spool_bytes / 1e6:.1f} MB")


@inlineCallbacks
def responsiveness():
    old = resource_lists(list(range(10000)))
    new = resource_lists(list(range(10000)), {5000: "Changed"})
    work = lambda: document_entry("resource-lists/users/sip:a@x/index", old, new, "1", "2")  # noqa: E731
    for label, run in (("worker thread", in_thread), ("inline (baseline)", maybeDeferred)):
        gaps: list[float] = []
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

        loop = task.LoopingCall(tick)
        loop.start(0.001)
        yield task.deferLater(reactor, 0.05, lambda: None)
        gaps.clear()
        last[0] = time.perf_counter()
        started = time.perf_counter()
        yield run(work)
        took = time.perf_counter() - started
        yield task.deferLater(reactor, 0.01, lambda: None)
        loop.stop()
        print(
            f"10k-entry diff + self-check {label}: {took * 1e3:.0f} ms; "
            f"1 ms timer fired at most {max(gaps) * 1e3:.1f} ms apart"
        )


@inlineCallbacks
def main(args):
    try:
        yield throughput(args.changes, args.owners)
        yield throughput(args.changes // 5, args.owners, rate=args.rate)
        yield responsiveness()
    finally:
        reactor.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10000)
    parser.add_argument("--owners", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500, help="paced run: changes/s")
    reactor.callWhenRunning(main, parser.parse_args())
    reactor.run()
