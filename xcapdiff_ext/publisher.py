"""The publisher: from accepted changes to delivered xcap-diff publications (Twisted).

Per owner: the first change is published at once; later ones within ``min_interval``
of the last publication wait for the window's end and go out together (RFC 5875
§4.10 asks for at most one notification per 5 s).  One publication per owner is in
flight at a time, so an owner's publications keep their order; owners never wait
for each other.  A failed delivery is retried with exponential backoff, and the
changes that arrive meanwhile merge into the retried publication.  Every accepted
change is journaled (``spool.py``) and replayed after a restart.

The publisher decides, ``changes.plan_publication`` computes (in ``run_cpu``, a
worker thread in production, so big diffs do not stall the reactor), the transport
delivers.  Facts come back as values; this module logs and counts them.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from .change import Change
from .changes import DiffProcessing, DocumentKey, PublicationPlan, plan_publication
from .errors import TransportError
from .interfaces import IPublishTransport, Publication, PublishOutcome
from .xmlsafe import Limits

__all__ = ["Counters", "Policy", "Publisher"]

_log = logging.getLogger("xcapdiff.publisher")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Policy:
    """The publisher's settings (a view of ``config.Settings``)."""

    min_interval: float = 5.0
    diff_processing: DiffProcessing = DiffProcessing.AGGREGATE
    max_body_bytes: int = 16384
    max_pending_bytes: int = 64 * 1024 * 1024
    max_document_bytes: int = 10 * 1024 * 1024
    retry_initial: float = 1.0
    retry_max: float = 60.0
    retry_jitter: float = 0.1
    status_interval: float = 60.0
    # Batches holding more document bytes than this are diffed in ``run_cpu`` (a
    # worker thread); smaller ones take well under a millisecond and run inline,
    # because many small jobs in a thread pool starve the reactor of the GIL.
    offload_bytes: int = 64 * 1024

    @classmethod
    def from_settings(cls, settings: Any) -> Policy:
        return cls(
            min_interval=settings.min_interval,
            diff_processing=DiffProcessing(settings.diff_processing),
            max_body_bytes=settings.max_body_bytes,
            max_pending_bytes=settings.max_pending_bytes,
            max_document_bytes=settings.max_document_bytes,
            retry_initial=settings.retry_initial,
            retry_max=settings.retry_max,
            retry_jitter=settings.retry_jitter,
            status_interval=settings.status_interval,
        )

    def backoff(self, attempt: int, unit: float) -> float:
        """Delay before retry number ``attempt`` (1-based); ``unit`` in [0, 1)."""
        base = min(self.retry_max, self.retry_initial * 2 ** (attempt - 1))
        return max(0.0, base * (1 + self.retry_jitter * (2 * unit - 1)))


@dataclass
class Counters:
    """What ``xcapdiff status`` shows; owned by the publisher."""

    accepted: int = 0
    published: int = 0
    retried: int = 0
    failed: int = 0
    dropped: int = 0
    nothing_to_publish: int = 0
    oversize: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # last 1024, seconds

    def latency(self, seconds: float) -> None:
        self.latencies.append(seconds)
        if len(self.latencies) > 1024:
            del self.latencies[:-1024]

    def percentiles(self) -> dict[str, float]:
        if not self.latencies:
            return {}
        ordered = sorted(self.latencies)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
        return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}

    def snapshot(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "published": self.published,
            "retried": self.retried,
            "failed": self.failed,
            "dropped": self.dropped,
            "nothing_to_publish": self.nothing_to_publish,
            "oversize": self.oversize,
            "fallbacks": dict(self.fallbacks),
            "latency": self.percentiles(),
        }


@dataclass
class _Owner:
    owner: str
    pending: list[tuple[int, Change]] = field(default_factory=list)
    last_sent: float | None = None
    timer: IDelayedCall | None = None
    busy: bool = False
    attempts: int = 0


def _synchronous(func: Callable[[], T]) -> Deferred[T]:
    return maybeDeferred(func)


def _observe(d: Deferred[Any]) -> Deferred[None]:
    """A Deferred that fires (with None) when ``d`` fires, leaving ``d``'s chain alone."""
    seen: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        seen.callback(None)
        return result

    d.addBoth(fire)
    return seen


class Publisher:
    """Accepts changes in the reactor thread; ``start`` replays the spool first."""

    def __init__(
        self,
        reactor: IReactorTime,
        transport: IPublishTransport,
        policy: Policy,
        *,
        spool: Any | None = None,
        run_cpu: Callable[[Callable[[], Any]], Deferred[Any]] = _synchronous,
        random_unit: Callable[[], float] = random.random,
        workers: Any | None = None,
    ) -> None:
        self._reactor, self._transport, self._policy = reactor, transport, policy
        self._spool, self._run_cpu, self._random = spool, run_cpu, random_unit
        # Worker processes (workers.ProcessRunner) plan every publication when given:
        # then no diff holds this process's GIL (see workers.py for why that matters).
        self._workers = workers
        self._limits = Limits(max_bytes=policy.max_document_bytes)
        self._owners: dict[str, _Owner] = {}
        self._chains: dict[DocumentKey, str] = {}
        self._pubstate: dict[str, tuple[str | None, float | None]] = {}
        self._next_id = 0
        self._pending_bytes = 0
        self._in_flight: dict[str, Deferred[Any]] = {}
        self._stopping = False
        self._status: LoopingCall | None = None
        self.counters = Counters()

    @classmethod
    def from_settings(
        cls,
        reactor: Any,
        transport: IPublishTransport,
        settings: Any,
        *,
        run_in_thread: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
    ) -> Publisher:
        """The production assembly: policy from ``settings``, the spool in
        ``settings.spool_dir``, large diffs and spool commits in the reactor's thread
        pool (``reactor`` must provide IReactorTime and IReactorThreads)."""
        from twisted.internet.threads import deferToThreadPool

        from .spool import Spool

        if run_in_thread is None:

            def run_in_thread(func: Callable[[], Any]) -> Deferred[Any]:
                return deferToThreadPool(reactor, reactor.getThreadPool(), func)

        spool = Spool(settings.spool_dir, reactor, run_in_thread=run_in_thread)
        workers = None
        if settings.diff_workers > 0:
            from .workers import ProcessRunner

            workers = ProcessRunner(reactor, settings.diff_workers)
        return cls(
            reactor,
            transport,
            Policy.from_settings(settings),
            spool=spool,
            run_cpu=run_in_thread,
            workers=workers,
        )

    # ------------------------------------------------------------- life cycle
    def start(self) -> None:
        """Replay the spool (if any) and publish what it still held."""
        if self._workers is not None:
            self._workers.start()
        if self._spool is not None:
            state = self._spool.open()
            self._chains = {k: v for k, v in state.chains.items() if v is not None}
            self._pubstate = dict(state.pubstate)
            self._next_id = state.next_id
            for change_id, change in state.pending:
                self._queue(change_id, change)
            if state.pending:
                _log.info(
                    "xcap-diff: replayed %d pending changes from the spool", len(state.pending)
                )
            if state.skipped:
                _log.warning("xcap-diff: skipped %d unreadable spool records", state.skipped)
        if self._policy.status_interval > 0:
            self._status = LoopingCall(self._log_status)
            self._status.clock = self._reactor
            self._status.start(self._policy.status_interval, now=False)

    def stop(self, timeout: float = 10.0) -> Deferred[None]:
        """Stop timers; wait for deliveries in flight (cancelled after ``timeout``
        seconds, their changes staying pending in the spool), then close the spool."""
        self._stopping = True
        if self._status is not None and self._status.running:
            self._status.stop()
        for state in self._owners.values():
            if state.timer is not None and state.timer.active():
                state.timer.cancel()
            state.timer = None
        in_flight = list(self._in_flight.values())
        done: Deferred[Any] = gatherResults([_observe(d) for d in in_flight])
        if in_flight:
            timer = self._reactor.callLater(timeout, lambda: [d.cancel() for d in in_flight])
            done.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        if self._spool is not None:
            done.addCallback(lambda _: self._spool.stop())
        if self._workers is not None:
            workers = self._workers
            done.addBoth(lambda result: workers.stop().addCallback(lambda _: result))
        return done.addCallback(lambda _: None)

    # ------------------------------------------------------------------ input
    def accept(self, change: Change) -> None:
        """Take one committed change (reactor thread; returns at once)."""
        if self._stopping:
            _log.warning("xcap-diff: change for %s after stop: not accepted", change.sel)
            return
        change_id = self._next_id
        self._next_id += 1
        if self._spool is not None:
            self._spool.record_change(change_id, change)
        self.counters.accepted += 1
        self._queue(change_id, change)

    def _queue(self, change_id: int, change: Change) -> None:
        state = self._owners.get(change.owner)
        if state is None:
            state = self._owners[change.owner] = _Owner(change.owner)
        state.pending.append((change_id, change))
        self._pending_bytes += change.retained_bytes
        if self._pending_bytes > self._policy.max_pending_bytes:
            self._shed_bytes()
        self._schedule(state)

    def _shed_bytes(self) -> None:
        """Over the memory bound: oldest pending changes drop their document bytes."""
        queued = sorted(
            ((c.time, cid, state) for state in self._owners.values() for cid, c in state.pending),
            key=lambda item: (item[0], item[1]),
        )
        for _, cid, state in queued:
            if self._pending_bytes <= self._policy.max_pending_bytes:
                return
            for k, (pid, c) in enumerate(state.pending):
                if pid == cid and c.retained_bytes:
                    self._pending_bytes -= c.retained_bytes
                    state.pending[k] = (pid, c.without_bytes())
                    self._count_fallback("memory")
                    _log.warning(
                        "xcap-diff %s %s: pending documents over max_pending_bytes; "
                        "this change will be published etag-only",
                        state.owner,
                        c.sel,
                    )

    # ------------------------------------------------------------- scheduling
    def _schedule(self, state: _Owner) -> None:
        if state.busy or state.timer is not None or not state.pending or self._stopping:
            return
        now = self._reactor.seconds()
        due = now if state.last_sent is None else state.last_sent + self._policy.min_interval
        state.timer = self._reactor.callLater(max(0.0, due - now), self._start, state)

    def _start(self, state: _Owner) -> None:
        state.timer = None
        if not state.pending or self._stopping:
            return
        root = state.pending[0][1].xcap_root
        batch = [(cid, c) for cid, c in state.pending if c.xcap_root == root]
        state.pending = [(cid, c) for cid, c in state.pending if c.xcap_root != root]
        state.busy = True
        state.last_sent = self._reactor.seconds()
        changes = [c for _, c in batch]
        chains = {k: v for k, v in self._chains.items() if k[0] == root}
        policy, limits = self._policy, self._limits

        # A partial, not a closure: it must pickle to reach a worker process.
        plan: Callable[[], PublicationPlan] = functools.partial(
            plan_publication,
            state.owner,
            changes,
            mode=policy.diff_processing,
            chains=chains,
            max_body_bytes=policy.max_body_bytes,
            limits=limits,
        )
        if self._workers is not None:
            d = self._workers(plan)
        elif sum(c.retained_bytes for c in changes) > policy.offload_bytes:
            d = self._run_cpu(plan)
        else:
            d = maybeDeferred(plan)
        d.addCallback(self._deliver, state, batch)
        d.addErrback(self._planning_failed, state, batch)
        self._in_flight[state.owner] = d
        d.addBoth(self._finished, state)

    def _finished(self, result: object, state: _Owner) -> None:
        self._in_flight.pop(state.owner, None)
        state.busy = False
        self._schedule(state)

    # --------------------------------------------------------------- delivery
    def _deliver(
        self, plan: PublicationPlan, state: _Owner, batch: list[tuple[int, Change]]
    ) -> Deferred[None] | None:
        for fallback in plan.fallbacks:
            self._count_fallback(fallback.category)
            _log.warning(
                "xcap-diff %s %s: published etag-only (%s: %s)",
                state.owner,
                fallback.sel,
                fallback.category,
                fallback.detail,
            )
        if plan.body is None:
            self.counters.nothing_to_publish += 1
            self._done(state, batch, plan, None)
            return None
        if plan.oversize:
            self.counters.oversize += 1
            _log.warning(
                "xcap-diff %s: body of %d bytes exceeds max_body_bytes even etag-only; sent anyway",
                state.owner,
                len(plan.body),
            )
        etag = self._granted_etag(state.owner)
        publication = Publication(state.owner, plan.body, etag=etag)
        started = self._reactor.seconds()
        d = maybeDeferred(self._transport.publish, publication)
        d.addCallbacks(
            self._delivered,
            self._delivery_failed,
            callbackArgs=(state, batch, plan, started),
            errbackArgs=(state, batch, plan),
        )
        return d

    def _granted_etag(self, owner: str) -> str | None:
        etag, expires_at = self._pubstate.get(owner, (None, None))
        if etag is not None and expires_at is not None and expires_at <= self._reactor.seconds():
            return None  # expired at the peer: start a new publication
        return etag

    def _delivered(
        self,
        outcome: PublishOutcome,
        state: _Owner,
        batch: list[tuple[int, Change]],
        plan: PublicationPlan,
        started: float,
    ) -> None:
        now = self._reactor.seconds()
        self.counters.published += 1
        first = min(c.time for _, c in batch)
        self.counters.latency(max(0.0, now - first))
        _log.info(
            "xcap-diff published %s: %d document(s) %s, mode %s, %d bytes, %s, %.3f s",
            state.owner,
            len(plan.documents),
            ",".join(plan.documents),
            self._policy.diff_processing.value,
            len(plan.body or b""),
            outcome.detail or "ok",
            now - first,
        )
        if outcome.etag is not None or outcome.expires is not None:
            expires_at = now + outcome.expires if outcome.expires else None
            self._pubstate[state.owner] = (outcome.etag, expires_at)
            if self._spool is not None:
                self._spool.record_pubstate(state.owner, outcome.etag, expires_at)
        self._done(state, batch, plan, outcome)

    def _done(
        self,
        state: _Owner,
        batch: list[tuple[int, Change]],
        plan: PublicationPlan,
        outcome: PublishOutcome | None,
    ) -> None:
        state.attempts = 0
        for key, etag in plan.chains.items():
            if etag is None:
                self._chains.pop(key, None)
            else:
                self._chains[key] = etag
        self._release(batch)
        if self._spool is not None:
            self._spool.record_published(state.owner, [cid for cid, _ in batch], plan.chains)

    def _release(self, batch: list[tuple[int, Change]]) -> None:
        self._pending_bytes -= sum(c.retained_bytes for _, c in batch)

    def _delivery_failed(
        self,
        failure: Failure,
        state: _Owner,
        batch: list[tuple[int, Change]],
        plan: PublicationPlan,
    ) -> None:
        if not failure.check(TransportError, CancelledError):
            _log.error(
                "%s: transport raised %s; treating it as a failed delivery",
                state.owner,
                failure.getErrorMessage(),
            )
        err = failure.value
        retryable = bool(getattr(err, "retryable", False))
        if self._stopping and (retryable or failure.check(CancelledError)):
            # Shutting down: keep the changes pending in the spool for the next start.
            _log.warning(
                "xcap-diff %s: delivery failed during shutdown (%s); "
                "%d change(s) stay in the spool",
                state.owner,
                "cancelled" if failure.check(CancelledError) else failure.getErrorMessage(),
                len(batch),
            )
            return
        if retryable:
            state.attempts += 1
            self.counters.retried += 1
            delay = self._policy.backoff(state.attempts, self._random())
            _log.warning(
                "xcap-diff %s: delivery failed (%s); retry %d in %.1f s",
                state.owner,
                failure.getErrorMessage(),
                state.attempts,
                delay,
            )
            state.pending = batch + state.pending  # newer changes merge into the retry
            state.timer = self._reactor.callLater(delay, self._start, state)
            return
        self.counters.failed += 1
        self.counters.dropped += len(batch)
        state.attempts = 0
        _log.warning(
            "xcap-diff %s: publication dropped (%s); %d change(s) not delivered",
            state.owner,
            failure.getErrorMessage(),
            len(batch),
        )
        self._release(batch)
        self._pin_chains(batch)
        if self._spool is not None:
            self._spool.record_dropped([cid for cid, _ in batch])

    def _pin_chains(self, batch: list[tuple[int, Change]]) -> None:
        """After a drop, clients still hold the version before the batch: the next
        report must start there (an etag-only gap), never from an undelivered one."""
        for _, c in batch:
            key = (c.xcap_root, c.sel)
            if key not in self._chains and c.old_etag is not None:
                self._chains[key] = c.old_etag

    def _planning_failed(
        self, failure: Failure, state: _Owner, batch: list[tuple[int, Change]]
    ) -> None:
        # plan_publication turns bad documents into etag-only entries; getting here
        # is a bug.  Drop the batch (logged and counted) rather than wedge the owner.
        _log.error(
            "xcap-diff %s: could not build the publication: %s", state.owner, failure.getTraceback()
        )
        self.counters.failed += 1
        self.counters.dropped += len(batch)
        self._release(batch)
        self._pin_chains(batch)
        if self._spool is not None:
            self._spool.record_dropped([cid for cid, _ in batch])

    # ----------------------------------------------------------------- status
    def _count_fallback(self, category: str) -> None:
        self.counters.fallbacks[category] = self.counters.fallbacks.get(category, 0) + 1

    def status(self) -> dict[str, Any]:
        """Counters plus queue facts, for the status file and ``xcapdiff status``."""
        snap = self.counters.snapshot()
        snap["pending_changes"] = sum(len(s.pending) for s in self._owners.values())
        snap["pending_bytes"] = self._pending_bytes
        snap["owners_waiting"] = sum(1 for s in self._owners.values() if s.pending or s.busy)
        snap["spool_bytes"] = self._spool.size() if self._spool is not None else 0
        return snap

    def _log_status(self) -> None:
        snap = self.status()
        _log.info(
            "xcap-diff status: accepted %d, published %d, retried %d, failed %d, dropped %d, "
            "fallbacks %s, pending %d, spool %d bytes, latency %s",
            snap["accepted"],
            snap["published"],
            snap["retried"],
            snap["failed"],
            snap["dropped"],
            snap["fallbacks"] or "{}",
            snap["pending_changes"],
            snap["spool_bytes"],
            snap["latency"] or "{}",
        )
