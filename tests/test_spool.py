"""The durable spool (xcapdiff_ext/spool.py): group commit, replay, corruption, compaction.

Shell tests: a ``Clock`` and a synchronous ``run_in_thread``; what is durable is read
back from disk with the read-only ``replay()`` (or a second ``Spool`` once the first
one stopped).  One test kills a child process with SIGKILL mid-traffic.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from xcapdiff_ext.change import Change, ChangeKind
from xcapdiff_ext.errors import SpoolError
from xcapdiff_ext.spool import JOURNAL, Spool, SpoolState, replay

ROOT = "https://xcap.example.com/xcap-root/"
REPO = Path(__file__).resolve().parent.parent


def change(n: int, owner: str = "sip:alice@example.com") -> Change:
    return Change(
        xcap_root=ROOT,
        sel=f"resource-lists/users/{owner}/doc{n}",
        owner=owner,
        old=b"<a/>" if n % 2 else None,
        old_etag=f"e{n}-old" if n % 2 else None,
        new=b"<a><b>\xc3\xa9</b></a>",
        new_etag=f"e{n}",
        kind=ChangeKind.DOCUMENT,
        time=float(n),
    )


def sync(job: Callable[[], Any]) -> Deferred[Any]:
    return defer.maybeDeferred(job)


class ManualRunner:
    """run_in_thread whose jobs run only when the test says so (a slow worker thread)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, job: Callable[[], Any]) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.jobs.append((job, done))
        return done

    def finish_next(self) -> None:
        job, done = self.jobs.pop(0)
        done.callback(job())


def make_spool(path: Path, clock: Clock | None = None, **kwargs: Any) -> Spool:
    kwargs.setdefault("run_in_thread", sync)
    return Spool(path, clock if clock is not None else Clock(), **kwargs)


def reopen(path: Path, **kwargs: Any) -> tuple[Spool, SpoolState]:
    spool = make_spool(path, **kwargs)
    return spool, spool.open()


def stopped(spool: Spool) -> None:
    d = spool.stop()
    assert d.called and d.result is None


def ids(state: SpoolState) -> list[int]:
    return [change_id for change_id, _ in state.pending]


def framed(payload: bytes) -> bytes:
    return b"%08x %08x %s\n" % (len(payload), zlib.crc32(payload), payload)


def record(obj: object) -> bytes:
    return framed(json.dumps(obj).encode())


# -- group commit ----------------------------------------------------------------------


def test_records_become_durable_only_at_commit(tmp_path: Path) -> None:
    clock = Clock()
    spool = make_spool(tmp_path, clock)
    assert spool.open() == SpoolState((), {}, {}, 0, 0)
    spool.record_change(0, change(0))
    assert replay(tmp_path).pending == ()
    clock.advance(0.099)
    assert replay(tmp_path).pending == ()
    clock.advance(0.001)
    assert replay(tmp_path).pending == ((0, change(0)),)
    assert clock.getDelayedCalls() == []
    stopped(spool)


def test_group_commit_schedules_exactly_one_delayed_call(tmp_path: Path) -> None:
    clock = Clock()
    spool = make_spool(tmp_path, clock, commit_interval=0.25)
    spool.open()
    clock.advance(10)
    spool.record_change(0, change(0))
    spool.record_change(1, change(1))
    spool.record_pubstate("sip:alice@example.com", "t1", 3600.0)
    clock.advance(0.1)
    spool.record_dropped([1])
    calls = clock.getDelayedCalls()
    assert len(calls) == 1
    assert calls[0].getTime() == 10.25
    clock.advance(0.15)
    assert clock.getDelayedCalls() == []
    state = replay(tmp_path)
    assert ids(state) == [0] and state.next_id == 2
    spool.record_change(2, change(2))  # after an idle period: a new commit is armed
    assert [c.getTime() for c in clock.getDelayedCalls()] == [10.5]
    stopped(spool)
    assert ids(replay(tmp_path)) == [0, 2]


def test_flush_commits_now_and_cancels_the_timer(tmp_path: Path) -> None:
    clock = Clock()
    spool = make_spool(tmp_path, clock)
    spool.open()
    spool.record_change(7, change(7))
    d = spool.flush()
    assert d.called and d.result is None
    assert clock.getDelayedCalls() == []
    assert ids(replay(tmp_path)) == [7]
    assert spool.size() == (tmp_path / JOURNAL).stat().st_size
    empty = spool.flush()  # nothing buffered: fires at once
    assert empty.called and empty.result is None
    stopped(spool)


def test_never_two_commits_at_once(tmp_path: Path) -> None:
    clock, runner = Clock(), ManualRunner()
    spool = make_spool(tmp_path, clock, run_in_thread=runner)
    spool.open()
    spool.record_change(0, change(0))
    clock.advance(0.1)
    assert len(runner.jobs) == 1  # commit 1 in flight
    spool.record_change(1, change(1))
    clock.advance(0.1)  # its timer fires while commit 1 runs: no second job yet
    assert len(runner.jobs) == 1
    assert clock.getDelayedCalls() == []
    waiter = spool.flush()
    assert not waiter.called
    runner.finish_next()  # commit 1 done: commit 2 starts right after it
    assert ids(replay(tmp_path)) == [0]
    assert len(runner.jobs) == 1 and not waiter.called
    runner.finish_next()
    assert waiter.called and waiter.result is None
    assert ids(replay(tmp_path)) == [0, 1]
    stop = spool.stop()
    assert stop.called and stop.result is None
    assert clock.getDelayedCalls() == [] and runner.jobs == []


def test_cancelling_a_flush_only_stops_the_wait(tmp_path: Path) -> None:
    clock, runner = Clock(), ManualRunner()
    spool = make_spool(tmp_path, clock, run_in_thread=runner)
    spool.open()
    spool.record_change(0, change(0))
    d = spool.flush()
    d.cancel()
    assert isinstance(d.result, Failure) and d.result.check(CancelledError)
    d.addErrback(lambda _: None)
    runner.finish_next()  # the commit still completes, without AlreadyCalledError
    assert ids(replay(tmp_path)) == [0]
    stop = spool.stop()
    assert stop.called and clock.getDelayedCalls() == []


def test_failed_commit_keeps_the_records_and_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    failures = [OSError(28, "No space left on device")]

    def flaky(job: Callable[[], Any]) -> Deferred[Any]:
        if failures:
            return defer.fail(failures.pop())
        return defer.maybeDeferred(job)

    spool = make_spool(tmp_path, clock, run_in_thread=flaky)
    spool.open()
    spool.record_change(0, change(0))
    d = spool.flush()
    assert isinstance(d.result, Failure) and d.result.check(SpoolError)
    d.addErrback(lambda _: None)
    assert "No space left" in caplog.text
    assert len(clock.getDelayedCalls()) == 1  # retried after commit_interval
    spool.record_change(1, change(1))
    clock.advance(0.1)
    assert ids(replay(tmp_path)) == [0, 1]
    stopped(spool)


def test_torn_append_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way must not glue garbage to the next record."""
    spool = make_spool(tmp_path)
    spool.open()
    real_pwrite = os.pwrite

    def half_then_fail(fd: int, data: Any, offset: int) -> int:
        real_pwrite(fd, bytes(data)[: len(data) // 2], offset)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "pwrite", half_then_fail)
    spool.record_change(0, change(0))
    d = spool.flush()
    assert isinstance(d.result, Failure) and d.result.check(SpoolError)
    d.addErrback(lambda _: None)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    spool.record_change(1, change(1))
    assert spool.flush().called
    state = replay(tmp_path)
    assert ids(state) == [0, 1] and state.skipped == 0
    stopped(spool)


# -- replay ----------------------------------------------------------------------------


def test_replay_restores_pending_chains_pubstate_and_next_id(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    spool.open()
    for n in range(5):
        spool.record_change(n, change(n))
    spool.record_published("sip:alice@example.com", [1], {(ROOT, "a"): "e1", (ROOT, "b"): "x"})
    spool.record_published("sip:alice@example.com", [3], {(ROOT, "b"): None, (ROOT, "c"): "e3"})
    spool.record_dropped([2])
    spool.record_pubstate("sip:alice@example.com", "a.1", 1000.5)
    spool.record_pubstate("sip:bob@example.com", "b.1", None)
    spool.record_pubstate("sip:carol@example.com", "c.1", 50.0)
    spool.record_pubstate("sip:carol@example.com", None, None)  # forgotten
    stopped(spool)

    _, state = reopen(tmp_path)
    assert state.pending == ((0, change(0)), (4, change(4)))
    assert dict(state.chains) == {(ROOT, "a"): "e1", (ROOT, "c"): "e3"}
    assert dict(state.pubstate) == {
        "sip:alice@example.com": ("a.1", 1000.5),
        "sip:bob@example.com": ("b.1", None),
    }
    assert state.next_id == 5
    assert state.skipped == 0


def test_pending_keeps_acceptance_order_and_next_id_survives_empty_pending(
    tmp_path: Path,
) -> None:
    spool = make_spool(tmp_path)
    spool.open()
    for n in (10, 3, 7):
        spool.record_change(n, change(n))
    stopped(spool)
    spool, state = reopen(tmp_path)
    assert ids(state) == [10, 3, 7] and state.next_id == 11
    spool.record_published("sip:alice@example.com", [10, 3, 7], {})
    stopped(spool)
    spool, state = reopen(tmp_path)  # compacted at open: no change record left
    assert state.pending == () and state.next_id == 11
    stopped(spool)
    assert reopen(tmp_path)[1].next_id == 11


def test_corrupt_middle_record_is_skipped_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = make_spool(tmp_path)
    spool.open()
    for n in range(3):
        spool.record_change(n, change(n))
        assert spool.flush().called
    stopped(spool)
    journal = tmp_path / JOURNAL
    lines = journal.read_bytes().splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines) if b'"id":1' in line)
    lines[target] = lines[target].replace(b"doc1", b"docX")  # same length, bad checksum
    journal.write_bytes(b"".join(lines))

    caplog.set_level(logging.WARNING, logger="xcapdiff.spool")
    spool, state = reopen(tmp_path)
    assert ids(state) == [0, 2] and state.skipped == 1 and state.next_id == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "checksum" in warnings[0].getMessage()
    stopped(spool)
    caplog.clear()
    _, state = reopen(tmp_path)  # compaction dropped it: not logged again
    assert ids(state) == [0, 2] and state.skipped == 0
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_truncated_last_line_is_skipped_and_appends_continue_cleanly(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    spool.open()
    spool.record_change(0, change(0))
    spool.record_change(1, change(1))
    stopped(spool)
    journal = tmp_path / JOURNAL
    data = journal.read_bytes()
    journal.write_bytes(data[:-25])  # a crash in the middle of the last record

    spool, state = reopen(tmp_path)
    assert ids(state) == [0] and state.skipped == 1
    spool.record_change(2, change(2))
    stopped(spool)
    _, state = reopen(tmp_path)
    assert ids(state) == [0, 2] and state.skipped == 0


BAD_LINES = {
    "garbage": b"hello world\n",
    "empty line": b"\n",
    "binary": b"\x00\xff" * 40 + b"\n",
    "short length": framed(b'{"t":"dropped","ids":[1]}')[:-3] + b"\n",
    "bad hex": b"zzzzzzzz 00000000 {}\n",
    "not json": framed(b"{not json"),
    "not utf-8": framed(b'{"t":"\xff"}'),
    "json list": record([1, 2]),
    "unknown type": record({"t": "frobnicate"}),
    "missing field": record({"t": "change", "id": 5}),
    "bad change": record({"t": "change", "id": 5, "change": {"root": "x"}}),
    "bad base64": record(
        {"t": "change", "id": 5, "change": {**change(5).to_record(), "new": "!!"}}
    ),
    "negative id": record({"t": "change", "id": -1, "change": change(5).to_record()}),
    "bool id": record({"t": "dropped", "ids": [True]}),
    "bad chains": record({"t": "published", "owner": "o", "ids": [0], "chains": [["r"]]}),
    "bad expiry": record({"t": "pubstate", "owner": "o", "etag": "x", "expires": "soon"}),
    "deep json": framed(b"[" * 100000 + b"]" * 100000),
}


@pytest.mark.parametrize("bad", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_bad_records_never_crash_replay(tmp_path: Path, bad: bytes) -> None:
    good_before = record({"t": "change", "id": 0, "change": change(0).to_record()})
    good_after = record({"t": "change", "id": 1, "change": change(1).to_record()})
    (tmp_path / JOURNAL).write_bytes(good_before + bad + good_after)
    spool, state = reopen(tmp_path)
    assert ids(state) == [0, 1]  # a bad record changes nothing, "published" included
    assert state.skipped == 1
    stopped(spool)


def test_unknown_published_or_dropped_ids_are_harmless(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    spool.open()
    spool.record_change(0, change(0))
    spool.record_dropped([42])
    spool.record_published("sip:alice@example.com", [43], {})
    stopped(spool)
    _, state = reopen(tmp_path)
    assert ids(state) == [0] and state.next_id == 44


# -- compaction ------------------------------------------------------------------------


def test_compaction_at_open_shrinks_and_preserves(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    spool.open()
    for n in range(200):
        spool.record_change(n, change(n))
        spool.record_published("sip:alice@example.com", [n], {(ROOT, f"doc{n % 3}"): f"e{n}"})
    spool.record_change(200, change(200))
    spool.record_pubstate("sip:alice@example.com", "t", 99.0)
    stopped(spool)
    before = (tmp_path / JOURNAL).stat().st_size

    spool, state = reopen(tmp_path)
    after = (tmp_path / JOURNAL).stat().st_size
    assert after < before / 10
    assert spool.size() == after
    assert state.pending == ((200, change(200)),)
    assert dict(state.chains) == {
        (ROOT, "doc0"): "e198",
        (ROOT, "doc1"): "e199",
        (ROOT, "doc2"): "e197",
    }
    assert dict(state.pubstate) == {"sip:alice@example.com": ("t", 99.0)}
    assert state.next_id == 201
    assert not (tmp_path / "journal.tmp").exists()
    stopped(spool)


def test_compaction_after_commit_when_journal_exceeds_compact_bytes(tmp_path: Path) -> None:
    clock = Clock()
    spool = make_spool(tmp_path, clock, compact_bytes=4000)
    spool.open()
    sizes = []
    for n in range(60):
        spool.record_change(n, change(n))
        spool.record_published("sip:alice@example.com", [n], {(ROOT, "doc"): f"e{n}"})
        clock.advance(0.1)
        sizes.append(spool.size())
        assert spool.size() == (tmp_path / JOURNAL).stat().st_size
    assert max(sizes) <= 4000 + 1000  # one commit's worth past the threshold at most
    assert any(b < a for a, b in itertools.pairwise(sizes))  # it did compact
    spool.record_change(60, change(60))
    stopped(spool)
    _, state = reopen(tmp_path)
    assert state.pending == ((60, change(60)),)
    assert dict(state.chains) == {(ROOT, "doc"): "e59"} and state.next_id == 61


def test_chains_many_documents_survive_compaction(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    spool.open()
    chains = {(ROOT, f"doc{n}"): f"e{n}" for n in range(1000)}
    spool.record_published("sip:alice@example.com", [], chains)
    stopped(spool)
    spool, state = reopen(tmp_path)  # compacts: chains split over several records
    stopped(spool)
    _, state = reopen(tmp_path)
    assert dict(state.chains) == chains


# -- the directory ---------------------------------------------------------------------


def test_second_spool_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = make_spool(tmp_path)
    first.open()
    with pytest.raises(SpoolError, match="in use by another process") as info:
        make_spool(tmp_path).open()
    assert str(tmp_path) in str(info.value)
    stopped(first)
    second, _ = reopen(tmp_path)  # the lock went with stop()
    stopped(second)


def test_missing_directory_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(SpoolError, match="spool_dir") as info:
        make_spool(path).open()
    message = str(info.value)
    assert str(path) in message and "No such file" in message and "\n" not in message


def test_unusable_directory_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(SpoolError, match="Not a directory"):
        make_spool(a_file / "spool").open()  # even root cannot create below a file
    with pytest.raises(SpoolError, match="is not a directory"):
        make_spool(a_file).open()


def test_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    clock = Clock()
    spool = make_spool(tmp_path, clock)
    spool.open()
    spool.record_change(0, change(0))
    assert len(clock.getDelayedCalls()) == 1
    d = spool.stop()
    assert d.called and d.result is None
    assert clock.getDelayedCalls() == []
    assert ids(replay(tmp_path)) == [0]  # the final commit
    with pytest.raises(SpoolError, match="not open"):
        spool.record_change(1, change(1))
    again = spool.stop()
    assert again.called and again.result is None


def test_stop_waits_for_a_running_commit(tmp_path: Path) -> None:
    clock, runner = Clock(), ManualRunner()
    spool = make_spool(tmp_path, clock, run_in_thread=runner)
    spool.open()
    spool.record_change(0, change(0))
    clock.advance(0.1)
    d = spool.stop()
    assert not d.called
    runner.finish_next()
    assert d.called and d.result is None
    assert ids(replay(tmp_path)) == [0] and clock.getDelayedCalls() == []
    reopen(tmp_path)[0].stop()  # lock released


# -- crash -----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from twisted.internet import defer
    from twisted.internet.task import Clock
    from tests.test_spool import ROOT, change
    from xcapdiff_ext.spool import Spool

    spool = Spool(sys.argv[1], Clock(), run_in_thread=lambda f: defer.succeed(f()))
    spool.open()
    for n in range(5):
        spool.record_change(n, change(n))
    spool.record_published("sip:alice@example.com", [1], {(ROOT, "doc1"): "e1"})
    assert spool.flush().called
    for n in range(5, 10):
        spool.record_change(n, change(n))
    spool.record_dropped([0])
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_kill_9_keeps_exactly_the_flushed_records(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    spool, state = reopen(tmp_path)  # the kernel released the lock
    assert ids(state) == [0, 2, 3, 4]
    assert state.pending[0] == (0, change(0))
    assert dict(state.chains) == {(ROOT, "doc1"): "e1"}
    assert state.next_id == 5 and state.skipped == 0
    stopped(spool)


# -- model -----------------------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("change"), st.integers(0, 20)),
        st.tuples(st.just("published"), st.lists(st.integers(0, 20), max_size=3)),
        st.tuples(st.just("dropped"), st.lists(st.integers(0, 20), max_size=3)),
        st.tuples(st.just("tick"), st.just(0)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_replay_matches_a_model_across_restarts(tmp_path_factory: Any, ops: list[Any]) -> None:
    path = tmp_path_factory.mktemp("spool")
    clock = Clock()
    spool = make_spool(path, clock, compact_bytes=3000)
    spool.open()
    pending: dict[int, Change] = {}
    next_id = 0
    for op, arg in ops:
        if op == "change":
            pending[arg] = change(arg)
            spool.record_change(arg, change(arg))
        elif op in ("published", "dropped"):
            for n in arg:
                pending.pop(n, None)
            if op == "published":
                spool.record_published("sip:alice@example.com", arg, {})
            else:
                spool.record_dropped(arg)
        elif op == "tick":
            clock.advance(0.1)
        else:
            stopped(spool)
            spool = make_spool(path, clock, compact_bytes=3000)
            state = spool.open()
            assert state.pending == tuple(pending.items())
        if op in ("change", "published", "dropped"):
            next_id = max([next_id, *[n + 1 for n in ([arg] if op == "change" else arg)]])
    stopped(spool)
    state = replay(path)
    assert state.pending == tuple(pending.items())
    assert state.next_id == next_id and state.skipped == 0
    assert clock.getDelayedCalls() == []


def test_ids_that_could_not_be_replayed_are_refused(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    spool.open()
    with pytest.raises(ValueError, match="change id"):
        spool.record_change(-1, change(0))
    with pytest.raises(ValueError, match="change id"):
        spool.record_dropped([True])
    stopped(spool)
