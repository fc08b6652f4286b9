"""sip.transaction: the RFC 3261 §17.1.2 non-INVITE client transaction, fixed times only."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from xcapdiff_ext.errors import LocalProtocolError
from xcapdiff_ext.sip.message import SipRequest, SipResponse
from xcapdiff_ext.sip.transaction import (
    RFC,
    Final,
    Provisional,
    PublishTransaction,
    TimedOut,
    Timers,
    Transmit,
    TxState,
)

BRANCH = "z9hG4bK.1"


def make_publish(branch: str = BRANCH) -> SipRequest:
    return SipRequest(
        "PUBLISH",
        "sip:alice@example.com",
        (
            ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=t1"),
            ("To", "<sip:alice@example.com>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 PUBLISH"),
            ("Event", "xcap-diff"),
            ("Expires", "3600"),
        ),
        b"<xcap-diff/>",
    )


def response(status: int, *, branch: str = BRANCH, method: str = "PUBLISH") -> SipResponse:
    return SipResponse(
        status,
        "Whatever",
        (
            ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
            ("Call-ID", "c1"),
            ("CSeq", f"1 {method}"),
        ),
    )


def run_timers(tx: PublishTransaction, until: float) -> list[tuple[float, object]]:
    """Call handle_timer exactly at each deadline up to ``until``; (time, output) pairs."""
    seen: list[tuple[float, object]] = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        seen.extend((deadline, out) for out in tx.handle_timer(deadline))
    return seen


# -- Timer E / F ---------------------------------------------------------------------------


def test_timer_e_doubles() -> None:
    tx = PublishTransaction(make_publish(branch="z9hG4bK.1"), reliable=False)
    first = tx.start(now=0.0)
    assert first == [Transmit(make_publish().to_bytes())]
    assert tx.next_deadline() == 0.5
    assert tx.handle_timer(now=0.5) == first and tx.next_deadline() == 1.5


def test_unreliable_retransmission_schedule_and_timer_f() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    seen = run_timers(tx, 100.0)
    times = [t for t, out in seen if isinstance(out, Transmit)]
    # 0.5, 1.5, 3.5, then every T2 = 4 s: 7.5, 11.5, ..., 31.5
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert seen[-1] == (32.0, TimedOut("Timer F: no final response within 32 s"))
    assert len(seen) == 11
    assert tx.state is TxState.TERMINATED
    assert tx.next_deadline() is None


def test_reliable_never_retransmits_and_times_out_at_timer_f() -> None:
    tx = PublishTransaction(make_publish(), reliable=True)
    assert len(tx.start(0.0)) == 1
    assert tx.next_deadline() == 32.0
    assert tx.handle_timer(31.9) == []
    seen = run_timers(tx, 100.0)
    assert seen == [(32.0, TimedOut("Timer F: no final response within 32 s"))]


def test_custom_timers() -> None:
    tx = PublishTransaction(make_publish(), reliable=False, timers=Timers(t1=1.0, t2=2.0))
    tx.start(10.0)
    seen = run_timers(tx, 1000.0)
    times = [t for t, out in seen if isinstance(out, Transmit)]
    assert times[:4] == [11.0, 13.0, 15.0, 17.0]
    assert seen[-1][0] == 74.0 and isinstance(seen[-1][1], TimedOut)


def test_proceeding_retransmits_every_t2() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    assert tx.receive_response(response(100), 0.2) == [Provisional(response(100))]
    assert tx.state is TxState.PROCEEDING
    assert tx.next_deadline() == 0.5  # the running Timer E is kept
    seen = run_timers(tx, 100.0)
    times = [t for t, out in seen if isinstance(out, Transmit)]
    assert times == [0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    assert seen[-1] == (32.0, TimedOut("Timer F: no final response within 32 s"))


def test_late_timer_after_timer_f_times_out_without_retransmission() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    assert tx.handle_timer(40.0) == [TimedOut("Timer F: no final response within 32 s")]
    assert tx.state is TxState.TERMINATED


def test_late_timer_e_gives_one_retransmission_no_burst() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    out = tx.handle_timer(10.0)  # E was due at 0.5, 1.5, 3.5, 7.5: one send only
    assert out == [Transmit(make_publish().to_bytes())]
    assert tx.next_deadline() == 11.0  # re-armed from now with the doubled interval


def test_early_timer_call_does_nothing() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    assert tx.handle_timer(0.2) == []
    assert tx.next_deadline() == 0.5
    assert tx.state is TxState.TRYING


# -- responses, Timer K --------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 202, 302, 412, 423, 489, 503, 603])
def test_final_response_unreliable_waits_timer_k(status: int) -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    assert tx.receive_response(response(status), 1.0) == [Final(response(status))]
    assert tx.state is TxState.COMPLETED
    assert tx.next_deadline() == 6.0  # T4
    # retransmitted finals and late provisionals are absorbed
    assert tx.receive_response(response(status), 2.0) == []
    assert tx.receive_response(response(180), 2.5) == []
    assert tx.handle_timer(5.9) == []
    assert tx.handle_timer(6.0) == []
    assert tx.state is TxState.TERMINATED
    assert tx.next_deadline() is None


def test_final_response_reliable_terminates_at_once() -> None:
    tx = PublishTransaction(make_publish(), reliable=True)
    tx.start(0.0)
    assert tx.receive_response(response(180), 0.1) == [Provisional(response(180))]
    assert tx.receive_response(response(200), 0.2) == [Final(response(200))]
    assert tx.state is TxState.TERMINATED
    assert tx.next_deadline() is None


def test_no_retransmission_after_final() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    tx.receive_response(response(200), 0.1)
    assert all(not isinstance(out, Transmit) for _, out in run_timers(tx, 100.0))


def test_response_for_another_method_is_ignored() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    assert tx.receive_response(response(200, method="CANCEL"), 0.1) == []
    assert tx.state is TxState.TRYING


def test_response_without_cseq_is_ignored() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    bare = SipResponse(200, "OK", (("Via", f"SIP/2.0/UDP h;branch={BRANCH}"),))
    assert tx.receive_response(bare, 0.1) == []
    assert tx.state is TxState.TRYING


def test_response_for_another_branch_is_a_local_error() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    with pytest.raises(LocalProtocolError, match="match responses by branch"):
        tx.receive_response(response(200, branch="z9hG4bK.other"), 0.1)
    assert tx.state is TxState.TERMINATED
    assert tx.next_deadline() is None


# -- transport failure, misuse -------------------------------------------------------------


def test_transport_failure_times_out() -> None:
    tx = PublishTransaction(make_publish(), reliable=True)
    tx.start(0.0)
    assert tx.transport_failed(0.1) == [TimedOut("transport error")]
    assert tx.state is TxState.TERMINATED
    assert tx.next_deadline() is None


def test_transport_failure_after_final_only_terminates() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    tx.receive_response(response(200), 0.1)
    assert tx.transport_failed(0.2, reason="connection lost") == []
    assert tx.state is TxState.TERMINATED


@pytest.mark.parametrize(
    "misuse",
    [
        lambda tx: tx.receive_response(response(200), 0.0),
        lambda tx: tx.handle_timer(1.0),
        lambda tx: tx.transport_failed(0.0),
    ],
)
def test_inputs_before_start_are_local_errors(misuse) -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    with pytest.raises(LocalProtocolError, match="not started"):
        misuse(tx)
    assert tx.state is TxState.TERMINATED


def test_second_start_is_a_local_error() -> None:
    tx = PublishTransaction(make_publish(), reliable=False)
    tx.start(0.0)
    with pytest.raises(LocalProtocolError, match="already started"):
        tx.start(1.0)
    assert tx.state is TxState.TERMINATED
    assert tx.next_deadline() is None


def test_inputs_after_termination_are_local_errors() -> None:
    tx = PublishTransaction(make_publish(), reliable=True)
    tx.start(0.0)
    tx.receive_response(response(200), 0.1)
    with pytest.raises(LocalProtocolError, match="terminated"):
        tx.handle_timer(1.0)
    with pytest.raises(LocalProtocolError, match="terminated"):
        tx.receive_response(response(200), 0.2)


@pytest.mark.parametrize("branch", ["1234", "z9hG4bk.lower"])
def test_request_needs_an_rfc3261_branch(branch: str) -> None:
    with pytest.raises(LocalProtocolError, match="branch"):
        PublishTransaction(make_publish(branch=branch), reliable=False)


def test_request_without_via_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="branch"):
        PublishTransaction(make_publish().without_header("Via"), reliable=False)


def test_timers_are_validated() -> None:
    assert Timers(0.5, 4.0, 5.0) == RFC
    with pytest.raises(LocalProtocolError):
        Timers(t1=0.0)
    with pytest.raises(LocalProtocolError):
        Timers(t1=5.0, t2=4.0)
    with pytest.raises(LocalProtocolError):
        Timers(t4=float("nan"))


def test_repr_and_accessors() -> None:
    tx = PublishTransaction(make_publish(), reliable=True)
    assert tx.branch == BRANCH and tx.reliable and tx.request == make_publish()
    assert "PUBLISH" in repr(tx) and "TRYING" in repr(tx)
    assert tx.next_deadline() is None  # not started


# -- property: exactly one outcome ---------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
        st.one_of(
            st.none(),  # a timer call
            st.sampled_from([100, 180, 183, 200, 202, 302, 401, 412, 423, 489, 500, 503, 603]),
            st.just(-1),  # transport failure
        ),
    ),
    max_size=40,
)


@given(reliable=st.booleans(), steps=steps)
@example(reliable=False, steps=[(40.0, None), (0.0, 200)])
@example(reliable=False, steps=[(0.1, 200), (0.0, 200), (0.0, -1)])
def test_exactly_one_outcome(reliable: bool, steps: list[tuple[float, int | None]]) -> None:
    tx = PublishTransaction(make_publish(), reliable=reliable)
    outputs = list(tx.start(0.0))
    now = 0.0
    for delta, what in steps:
        if tx.state is TxState.TERMINATED:
            break
        now += delta
        if what is None:
            outputs += tx.handle_timer(now)
        elif what == -1:
            outputs += tx.transport_failed(now)
        else:
            outputs += tx.receive_response(response(what), now)
    while (deadline := tx.next_deadline()) is not None:  # let every timer run out
        now = max(now, deadline)
        outputs += tx.handle_timer(now)
    assert tx.state is TxState.TERMINATED
    outcomes = [o for o in outputs if isinstance(o, Final | TimedOut)]
    assert len(outcomes) == 1
    last = outputs.index(outcomes[0])
    assert not any(isinstance(o, Transmit | Provisional) for o in outputs[last + 1 :])
    if reliable:
        assert sum(isinstance(o, Transmit) for o in outputs) == 1
