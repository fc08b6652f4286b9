"""The RFC 3261 §17.1.2 non-INVITE client transaction, sans I/O (STYLE §3).

``PublishTransaction`` sends one request and reports its fate: it owns Timers E
(retransmission, unreliable transports only), F (give up after 64*T1) and K (absorb
retransmitted final responses).  Time enters only as ``now`` (seconds, any epoch, never
decreasing); every input returns the ``TxOutput`` list the caller must act on, and the
caller keeps one timer armed at ``next_deadline()``.  The RFC 3903 logic (what to send
next) lives one layer up, in ``sip.publication``.

Contract, decided here:

- Exactly one ``Final`` or ``TimedOut`` is ever produced per transaction.
- ``receive_response`` takes responses the caller matched by branch (RFC 3261 §17.1.3,
  like ``DNSMixin.liveMessages``).  A response with another top-Via branch is the
  caller's bug: ``LocalProtocolError``.  A response with our branch but another CSeq
  method (or no CSeq) does not belong to this transaction (§17.1.3): it comes from the
  peer, so it is ignored (``[]``) and cannot kill the transaction.
- Retransmitted final responses and late provisionals in COMPLETED are absorbed (§17.1.2.2).
- ``handle_timer(now)`` may run late or early.  Early: nothing happens.  Late: it decides
  from ``now`` alone: past Timer F means ``TimedOut`` with no last retransmission, and
  several missed Timer E firings give one retransmission, never a burst.
- Over a reliable transport Timer K is zero: a final response moves the transaction
  through COMPLETED straight to TERMINATED in the same call.
- ``transport_failed`` in TRYING/PROCEEDING gives ``TimedOut`` (§17.1.4); in COMPLETED the
  outcome is already known, so it only terminates the transaction.
- Any other input the state forbids (a second ``start``, anything before ``start`` or
  after TERMINATED) raises ``LocalProtocolError`` and leaves the transaction TERMINATED.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from xcapdiff_ext.errors import LocalProtocolError

if TYPE_CHECKING:
    from xcapdiff_ext.sip.message import SipRequest, SipResponse

__all__ = [
    "RFC",
    "Final",
    "Provisional",
    "PublishTransaction",
    "TimedOut",
    "Timers",
    "Transmit",
    "TxOutput",
    "TxState",
]

BRANCH_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7 magic cookie


class TxState(enum.Enum):
    """RFC 3261 Figure 6 (non-INVITE client transaction)."""

    TRYING = "Trying"  # request sent, no response yet; Timers E (unreliable) and F run
    PROCEEDING = "Proceeding"  # a 1xx arrived; Timer E runs at T2, Timer F still runs
    COMPLETED = "Completed"  # final response delivered; Timer K absorbs retransmissions
    TERMINATED = "Terminated"  # done (or misused); the caller forgets the transaction


class _Input(enum.Enum):
    START = "start"
    PROVISIONAL = "1xx"
    FINAL = "final response"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_K = "Timer K"
    TRANSPORT_ERROR = "transport error"


_S, _I = TxState, _Input

# (state, input) -> next state: every legal move, in one place.  START is legal only
# while not yet started (checked separately: TRYING is also the state before start).
_TRANSITIONS: dict[tuple[TxState, _Input], TxState] = {
    (_S.TRYING, _I.START): _S.TRYING,
    (_S.TRYING, _I.PROVISIONAL): _S.PROCEEDING,
    (_S.TRYING, _I.FINAL): _S.COMPLETED,
    (_S.TRYING, _I.TIMER_E): _S.TRYING,
    (_S.TRYING, _I.TIMER_F): _S.TERMINATED,
    (_S.TRYING, _I.TRANSPORT_ERROR): _S.TERMINATED,
    (_S.PROCEEDING, _I.PROVISIONAL): _S.PROCEEDING,
    (_S.PROCEEDING, _I.FINAL): _S.COMPLETED,
    (_S.PROCEEDING, _I.TIMER_E): _S.PROCEEDING,
    (_S.PROCEEDING, _I.TIMER_F): _S.TERMINATED,
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): _S.TERMINATED,
    (_S.COMPLETED, _I.PROVISIONAL): _S.COMPLETED,  # absorbed
    (_S.COMPLETED, _I.FINAL): _S.COMPLETED,  # retransmission, absorbed
    (_S.COMPLETED, _I.TIMER_K): _S.TERMINATED,
    (_S.COMPLETED, _I.TRANSPORT_ERROR): _S.TERMINATED,  # outcome already delivered
}


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 §17.1.1.1 / Table 4 base values, in seconds."""

    t1: float = 0.5  # RTT estimate: first retransmission interval; Timer F = 64*T1
    t2: float = 4.0  # retransmission interval cap
    t4: float = 5.0  # how long a message may live in the network: Timer K (unreliable)

    def __post_init__(self) -> None:
        for name in ("t1", "t2", "t4"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise LocalProtocolError(f"Timers.{name} = {value!r}: expected seconds >= 0")
        if self.t1 <= 0 or self.t2 < self.t1:
            raise LocalProtocolError(f"{self!r}: expected 0 < t1 <= t2")


RFC = Timers()


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send these bytes to the next hop (the request, or a retransmission of it)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Provisional:
    """A 1xx arrived (TRYING/PROCEEDING only); informational."""

    response: SipResponse


@dataclass(frozen=True, slots=True)
class Final:
    """The final response (2xx-6xx): the transaction's result, produced once."""

    response: SipResponse


@dataclass(frozen=True, slots=True)
class TimedOut:
    """No final response: Timer F fired or the transport failed; produced once."""

    reason: str


TxOutput = Transmit | Provisional | Final | TimedOut


class PublishTransaction:
    """One non-INVITE client transaction (PUBLISH, or any non-INVITE request).

    ``reliable`` is the transport of the next hop: True for TCP/TLS (no Timer E, K = 0),
    False for UDP.  The request's top Via must carry an RFC 3261 branch
    (``z9hG4bK...``): it is the matching key, ``branch``.
    """

    def __init__(self, request: SipRequest, *, reliable: bool, timers: Timers = RFC) -> None:
        branch = request.branch
        if not branch or not branch.startswith(BRANCH_COOKIE):
            raise LocalProtocolError(
                f"request top Via branch {branch!r}: expected one starting with {BRANCH_COOKIE}"
            )
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError(f"{request.method}: not a non-INVITE transaction")
        self._request = request
        self._data = request.to_bytes()
        self._branch = branch
        self._method = request.method
        self._reliable = reliable
        self._timers = timers
        self._state = TxState.TRYING
        self._started = False
        self._interval = timers.t1  # the current Timer E interval
        self._timer_e: float | None = None
        self._timer_f: float | None = None
        self._timer_k: float | None = None

    def __repr__(self) -> str:
        return f"<PublishTransaction {self._method} branch={self._branch} {self._state.name}>"

    @property
    def branch(self) -> str:
        """The top Via branch of the request: the key responses are matched by."""
        return self._branch

    @property
    def state(self) -> TxState:
        return self._state

    @property
    def request(self) -> SipRequest:
        return self._request

    @property
    def reliable(self) -> bool:
        return self._reliable

    # -- inputs ---------------------------------------------------------------------

    def start(self, now: float) -> list[TxOutput]:
        """Send the request; arms Timer F (and Timer E when unreliable).  Once only."""
        if self._started:
            self._fail("start", "the transaction was already started")
        self._move(_I.START)
        self._started = True
        self._timer_f = now + 64 * self._timers.t1
        if not self._reliable:
            self._timer_e = now + self._interval
        return [Transmit(self._data)]

    def receive_response(self, response: SipResponse, now: float) -> list[TxOutput]:
        """Feed a response whose top Via branch is ``branch`` (see the module contract)."""
        self._require_started("a response")
        if response.branch != self._branch:
            self._fail(
                f"a response for branch {response.branch!r}",
                f"this transaction is {self._branch!r}; match responses by branch first",
            )
        cseq = response.cseq
        if cseq is None or cseq[1] != self._method:
            return []  # §17.1.3: not ours (another method on the same branch); peer noise
        status = response.status
        if not 100 <= status <= 699:
            self._fail(f"a response with status {status}", "expected 100..699")
        if status < 200:
            before = self._state
            self._move(_I.PROVISIONAL)
            return [] if before is TxState.COMPLETED else [Provisional(response)]
        if self._state is TxState.COMPLETED:
            self._move(_I.FINAL)
            return []  # a retransmission of the final response
        self._move(_I.FINAL)
        self._timer_e = self._timer_f = None
        out: list[TxOutput] = [Final(response)]
        if self._reliable:
            self._move(_I.TIMER_K)  # Timer K = 0 over reliable transports
        else:
            self._timer_k = now + self._timers.t4
        return out

    def transport_failed(self, now: float, *, reason: str = "transport error") -> list[TxOutput]:
        """The transport could not send the request (RFC 3261 §17.1.4, §18.4)."""
        self._require_started("transport_failed")
        before = self._state
        self._move(_I.TRANSPORT_ERROR)
        self._clear_timers()
        if before is TxState.COMPLETED:
            return []
        return [TimedOut(reason)]

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next run; None before ``start`` and once TERMINATED."""
        if self._state is TxState.TERMINATED:
            return None
        pending = [t for t in (self._timer_e, self._timer_f, self._timer_k) if t is not None]
        return min(pending) if pending else None

    def handle_timer(self, now: float) -> list[TxOutput]:
        """Fire whatever is due at ``now``: at most one retransmission or one outcome."""
        self._require_started("handle_timer")
        if self._state is TxState.COMPLETED:
            if self._timer_k is not None and now >= self._timer_k:
                self._move(_I.TIMER_K)
                self._clear_timers()
            return []
        if self._timer_f is not None and now >= self._timer_f:
            self._move(_I.TIMER_F)
            self._clear_timers()
            return [TimedOut(f"Timer F: no final response within {64 * self._timers.t1:g} s")]
        if self._timer_e is not None and now >= self._timer_e:
            self._move(_I.TIMER_E)
            if self._state is TxState.PROCEEDING:
                self._interval = self._timers.t2
            else:
                self._interval = min(2 * self._interval, self._timers.t2)
            # Re-armed from ``now``: a late call must not cause a catch-up burst.
            self._timer_e = now + self._interval
            return [Transmit(self._data)]
        return []

    # -- internals ------------------------------------------------------------------

    def _move(self, event: _Input) -> None:
        target = _TRANSITIONS.get((self._state, event))
        if target is None:
            self._fail(event.value, "not allowed in this state")
        self._state = target

    def _require_started(self, what: str) -> None:
        if not self._started:
            self._fail(what, "the transaction was not started")
        if self._state is TxState.TERMINATED:
            self._fail(what, "the transaction is terminated")

    def _fail(self, what: str, detail: str) -> NoReturn:
        state = self._state.name
        self._state = TxState.TERMINATED
        self._clear_timers()
        raise LocalProtocolError(f"transaction {self._branch}: {what} in state {state}: {detail}")

    def _clear_timers(self) -> None:
        self._timer_e = self._timer_f = self._timer_k = None
