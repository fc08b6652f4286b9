"""Publisher rules with an injected Clock and fake transports (no real time, no sockets)."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import pytest
from twisted.internet.task import Clock

from tests.vectors import vector
from xcapdiff_ext.change import Change
from xcapdiff_ext.changes import DiffProcessing
from xcapdiff_ext.errors import TransportError
from xcapdiff_ext.interfaces import PublishOutcome
from xcapdiff_ext.publisher import Policy, Publisher
from xcapdiff_ext.testing import ManualTransport, RecordingTransport
from xcapdiff_ext.xcapdiff import parse_xcap_diff

ROOT = "http://xcap.example.com/"
ALICE, BOB = "sip:alice@example.com", "sip:bob@example.com"
V = [
    vector("rfc5874/A-joe-index.xml"),
    vector("derived/rfc5874-index-fgherhryt3.xml"),
    vector("derived/rfc5874-index-dgdgdfgrrr.xml"),
    vector("derived/rfc5874-index-63hjjsll.xml"),
]


def sel(owner: str, auid: str = "tests") -> str:
    return f"{auid}/users/{owner}/index"


def change(clock, owner, i, j, auid="tests", old_etag=None, new_etag=None) -> Change:
    """Version i -> j of one of the owner's documents (None = absent)."""
    return Change(
        ROOT,
        sel(owner, auid),
        owner,
        V[i] if i is not None else None,
        old_etag or (f"v{i}" if i is not None else None),
        V[j] if j is not None else None,
        new_etag or (f"v{j}" if j is not None else None),
        time=clock.seconds(),
    )


def make(policy=None, transport=None, spool=None):
    clock = Clock()
    transport = transport if transport is not None else RecordingTransport()
    pub = Publisher(
        clock,
        transport,
        policy or Policy(status_interval=0),
        spool=spool,
        random_unit=lambda: 0.5,  # no jitter: retries at exact backoff times
    )
    pub.start()
    return clock, transport, pub


def docs(publication):
    return [
        (e.sel, e.previous_etag, e.new_etag, e.patch is not None)
        for e in parse_xcap_diff(publication.body).entries
    ]


def test_first_change_is_published_at_once() -> None:
    clock, transport, pub = make()
    pub.accept(change(clock, ALICE, 0, 1))
    assert transport.published == []  # never inside accept(): off the request path
    clock.advance(0)
    assert [docs(p) for p in transport.published] == [[(sel(ALICE), "v0", "v1", True)]]
    assert pub.counters.published == 1


def test_changes_within_the_interval_go_out_together_when_it_ends() -> None:
    clock, transport, pub = make()
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)  # published at t = 0
    clock.advance(1)
    pub.accept(change(clock, ALICE, 1, 2))
    clock.advance(1)
    pub.accept(change(clock, ALICE, 2, 3))
    pub.accept(change(clock, ALICE, None, 0, auid="resource-lists"))
    clock.advance(2.9)
    assert len(transport.published) == 1
    clock.advance(0.1)  # t = 5: the window of the first publication ends
    assert len(transport.published) == 2
    assert docs(transport.published[1]) == [
        (sel(ALICE), "v1", "v3", True),  # aggregate: one patch from v1 to v3
        (sel(ALICE, "resource-lists"), None, "v0", False),
    ]


def test_zero_interval_publishes_every_change_at_once() -> None:
    clock, transport, pub = make(Policy(min_interval=0, status_interval=0))
    for i in range(3):
        pub.accept(change(clock, ALICE, i, i + 1))
        clock.advance(0)
    assert [docs(p)[0][1:3] for p in transport.published] == [
        ("v0", "v1"),
        ("v1", "v2"),
        ("v2", "v3"),
    ]


def test_xcap_patching_mode_chains_every_version() -> None:
    clock, transport, pub = make(
        Policy(diff_processing=DiffProcessing.XCAP_PATCHING, status_interval=0)
    )
    pub.accept(change(clock, ALICE, None, 0))
    clock.advance(0)
    for i in range(3):
        pub.accept(change(clock, ALICE, i, i + 1))
    clock.advance(5)
    assert [d[1:3] for d in docs(transport.published[1])] == [
        ("v0", "v1"),
        ("v1", "v2"),
        ("v2", "v3"),
    ]


def test_owners_do_not_wait_for_each_other() -> None:
    transport = RecordingTransport()
    transport.results.append(TransportError("OpenSIPS down"))
    clock, _, pub = make(transport=transport)
    pub.accept(change(clock, ALICE, 0, 1))  # fails, waits for its retry
    pub.accept(change(clock, BOB, 0, 1))
    clock.advance(0)
    assert [p.owner for p in transport.published] == [ALICE, BOB]
    clock.advance(1)
    assert [p.owner for p in transport.published] == [ALICE, BOB, ALICE]


def test_retries_back_off_exponentially_up_to_the_maximum() -> None:
    transport = RecordingTransport()
    transport.results.extend(TransportError("timeout") for _ in range(8))
    policy = Policy(retry_initial=1, retry_max=8, status_interval=0)
    clock, _, pub = make(policy, transport)
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    times = []
    for _ in range(200):
        clock.advance(0.5)
        if len(transport.published) > len(times) + 1:
            times.append(clock.seconds())
    assert times[:6] == [1.0, 3.0, 7.0, 15.0, 23.0, 31.0]  # 1, 2, 4, 8, 8, 8 s
    assert pub.counters.retried >= 6


def test_new_changes_merge_into_a_publication_being_retried() -> None:
    transport = RecordingTransport()
    transport.results.extend([TransportError("down"), TransportError("down")])
    clock, _, pub = make(transport=transport)
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    for i in (1, 2):  # arrive during the outage
        clock.advance(0.4)
        pub.accept(change(clock, ALICE, i, i + 1))
    clock.pump([0.5] * 20)  # Clock.advance would schedule the 2nd retry from its end time
    delivered = transport.published[-1]
    assert docs(delivered) == [(sel(ALICE), "v0", "v3", True)]  # one up-to-date publication
    assert pub.counters.published == 1 and pub.counters.retried == 2


def test_permanent_failure_drops_and_the_chain_restarts_etag_only() -> None:
    transport = RecordingTransport()
    transport.results.append(TransportError("489 Bad Event", retryable=False))
    clock, _, pub = make(Policy(min_interval=0, status_interval=0), transport)
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    assert pub.counters.failed == 1 and pub.counters.dropped == 1
    pub.accept(change(clock, ALICE, 1, 2))
    clock.advance(0)
    # v0 -> v1 was never delivered: clients still hold v0, so the next report starts
    # there and, spanning an undelivered step, carries no patch.
    assert docs(transport.published[1]) == [(sel(ALICE), "v0", "v2", False)]
    assert pub.counters.fallbacks == {"gap": 1}


def test_gap_after_a_delivered_version_is_etag_only() -> None:
    clock, transport, pub = make(Policy(min_interval=0, status_interval=0))
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    pub.accept(change(clock, ALICE, 2, 3))  # v1 -> v2 was never seen (concurrent writer)
    clock.advance(0)
    assert docs(transport.published[1]) == [(sel(ALICE), "v1", "v3", False)]
    assert pub.counters.fallbacks == {"gap": 1}


def test_created_then_deleted_in_one_window_publishes_nothing() -> None:
    clock, transport, pub = make()
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    pub.accept(change(clock, ALICE, None, 0, auid="resource-lists"))
    pub.accept(change(clock, ALICE, 0, None, auid="resource-lists"))
    clock.advance(5)
    assert len(transport.published) == 1
    assert pub.counters.nothing_to_publish == 1


def test_one_publication_in_flight_per_owner_keeps_order() -> None:
    transport = ManualTransport()
    clock, _, pub = make(Policy(min_interval=0, status_interval=0), transport)
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    pub.accept(change(clock, ALICE, 1, 2))
    clock.advance(1)
    assert len(transport.calls) == 1  # waits for the first delivery
    transport.calls[0][1].callback(PublishOutcome(etag="E1", expires=3600))
    clock.advance(0)
    assert len(transport.calls) == 2
    second = transport.calls[1][0]
    assert second.etag == "E1"  # modifies the publication the peer granted
    assert docs(second)[0][1:3] == ("v1", "v2")


def test_an_expired_publication_is_not_modified() -> None:
    transport = RecordingTransport()
    transport.results.append(PublishOutcome(etag="E1", expires=10))
    clock, _, pub = make(Policy(min_interval=0, status_interval=0), transport)
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    clock.advance(11)
    pub.accept(change(clock, ALICE, 1, 2))
    clock.advance(0)
    assert transport.published[1].etag is None


def test_pending_documents_over_the_memory_bound_degrade_to_etag_only(caplog) -> None:
    transport = ManualTransport()
    policy = Policy(min_interval=0, max_pending_bytes=len(V[0]) * 3, status_interval=0)
    clock, _, pub = make(policy, transport)
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)  # in flight, holding its bytes
    with caplog.at_level(logging.WARNING, "xcapdiff.publisher"):
        pub.accept(change(clock, ALICE, 1, 2))
    assert pub.counters.fallbacks.get("memory") == 1
    assert "etag-only" in caplog.text
    transport.calls[0][1].callback(PublishOutcome())
    clock.advance(0)
    assert docs(transport.calls[1][0]) == [(sel(ALICE), "v1", "v2", False)]


def test_stop_leaves_no_timer_behind() -> None:
    clock, _transport, pub = make(Policy(status_interval=60))
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    pub.accept(change(clock, ALICE, 1, 2))  # waits for the window
    d = pub.stop()
    assert d.called
    assert clock.getDelayedCalls() == []


def test_status_is_logged_periodically(caplog) -> None:
    clock, _transport, pub = make(Policy(status_interval=60))
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    with caplog.at_level(logging.INFO, "xcapdiff.publisher"):
        clock.advance(60)
    assert "status: accepted 1, published 1" in caplog.text
    assert pub.status()["latency"]["p50"] == 0.0


@dataclass
class MemorySpool:
    """The spool's interface, in memory: what the publisher journals."""

    pending: tuple = ()
    chains: dict = field(default_factory=dict)
    log: deque = field(default_factory=deque)

    def open(self):
        from xcapdiff_ext.spool import SpoolState

        return SpoolState(self.pending, dict(self.chains), {}, len(self.pending), 0)

    def record_change(self, cid, c):
        self.log.append(("change", cid, c.sel))

    def record_published(self, owner, ids, chains):
        self.log.append(("published", tuple(ids), dict(chains)))

    def record_pubstate(self, owner, etag, expires_at):
        self.log.append(("pubstate", owner, etag))

    def record_dropped(self, ids):
        self.log.append(("dropped", tuple(ids)))

    def size(self):
        return 0

    def stop(self):
        from twisted.internet.defer import succeed

        return succeed(None)


def test_replayed_changes_are_published_at_start_with_the_saved_chain() -> None:
    clock0 = Clock()
    pending = ((0, change(clock0, ALICE, 1, 2)),)
    spool = MemorySpool(pending=pending, chains={(ROOT, sel(ALICE)): "v1"})
    clock, transport, _pub = make(spool=spool)
    clock.advance(0)
    assert docs(transport.published[0]) == [(sel(ALICE), "v1", "v2", True)]
    assert ("published", (0,), {(ROOT, sel(ALICE)): "v2"}) in spool.log


def test_everything_accepted_is_journaled_and_completed() -> None:
    spool = MemorySpool()
    clock, _transport, pub = make(Policy(min_interval=0, status_interval=0), spool=spool)
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    assert [entry[0] for entry in spool.log] == ["change", "pubstate", "published"]


@pytest.mark.parametrize("attempt,expected", [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (30, 60.0)])
def test_backoff_schedule(attempt: int, expected: float) -> None:
    assert Policy().backoff(attempt, 0.5) == expected
    assert Policy().backoff(attempt, 0.0) == pytest.approx(expected * 0.9)


def test_only_large_batches_are_diffed_off_the_reactor_thread() -> None:
    offloaded = []

    def run_cpu(func):
        offloaded.append(func)
        from twisted.internet.defer import maybeDeferred

        return maybeDeferred(func)

    clock = Clock()
    transport = RecordingTransport()
    policy = Policy(min_interval=0, status_interval=0, offload_bytes=len(V[0]) * 3)
    pub = Publisher(clock, transport, policy, run_cpu=run_cpu)
    pub.start()
    pub.accept(change(clock, ALICE, 0, 1))  # two small versions: inline
    clock.advance(0)
    big = len(V[0]) * 4
    pub.accept(Change(ROOT, sel(BOB), BOB, V[0] + b" " * big, "v0", V[1], "v1", time=0))
    clock.advance(0)
    assert len(offloaded) == 1 and len(transport.published) == 2


def test_from_settings_assembles_policy_and_spool(tmp_path) -> None:
    from twisted.internet.defer import maybeDeferred

    from xcapdiff_ext.config import parse_settings
    from xcapdiff_ext.spool import replay

    settings = parse_settings(
        {
            "spool_dir": str(tmp_path),
            "min_interval": "0",
            "diff_processing": "no-patching",
            "transport": "null",
            "status_interval": "0",
            "diff_workers": "0",  # worker processes: tests/test_workers.py
        }
    )
    clock = Clock()
    transport = RecordingTransport()
    pub = Publisher.from_settings(clock, transport, settings, run_in_thread=maybeDeferred)
    pub.start()
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    assert docs(transport.published[0]) == [(sel(ALICE), "v0", "v1", False)]  # no-patching
    pub.stop()
    assert replay(tmp_path).chains == {(ROOT, sel(ALICE)): "v1"}
    assert clock.getDelayedCalls() == []


def test_a_delivery_failing_during_shutdown_stays_pending_in_the_spool() -> None:
    transport = ManualTransport()
    spool = MemorySpool()
    clock, _, pub = make(Policy(min_interval=0, status_interval=0), transport, spool=spool)
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    stopped = pub.stop()
    assert not stopped.called  # waits for the delivery in flight
    transport.calls[0][1].errback(TransportError("connection lost"))
    assert stopped.called
    assert [entry[0] for entry in spool.log] == ["change"]  # neither published nor dropped
    assert clock.getDelayedCalls() == []


def test_stop_gives_up_on_a_delivery_that_never_answers() -> None:
    transport = ManualTransport()
    spool = MemorySpool()
    clock, _, pub = make(Policy(min_interval=0, status_interval=0), transport, spool=spool)
    pub.accept(change(clock, ALICE, 0, 1))
    clock.advance(0)
    stopped = pub.stop(timeout=10)
    clock.advance(9)
    assert not stopped.called
    clock.advance(1)
    assert stopped.called
    assert [entry[0] for entry in spool.log] == ["change"]  # still pending for the next start
    assert clock.getDelayedCalls() == []
