"""sip.client with a Clock and fake transports: timers, matching, garbage, cancel, stop."""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.sip_fakes import FakeDatagramTransport
from xcapdiff_ext.errors import TransportError
from xcapdiff_ext.sip.client import SipStreamClient, SipUdpClient, TransactionTimeout
from xcapdiff_ext.sip.message import SipRequest, SipResponse
from xcapdiff_ext.sip.transaction import PublishTransaction

BRANCH = "z9hG4bK.1"


def make_publish(branch: str = BRANCH, transport: str = "UDP") -> SipRequest:
    return SipRequest(
        "PUBLISH",
        "sip:alice@example.com",
        (
            ("Via", f"SIP/2.0/{transport} 192.0.2.1:5060;branch={branch}"),
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


def make_response(status: int = 200, branch: str = BRANCH) -> SipResponse:
    return SipResponse(
        status,
        "OK" if status == 200 else "Trying",
        (
            ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
            ("From", "<sip:alice@example.com>;tag=t1"),
            ("To", "<sip:alice@example.com>;tag=u"),
            ("Call-ID", "c1"),
            ("CSeq", "1 PUBLISH"),
            ("SIP-ETag", "e1"),
        ),
    )


class SipUdpClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.wire = Clock(), FakeDatagramTransport()
        self.client = SipUdpClient(self.clock, peer=("192.0.2.10", 5060))
        self.client.makeConnection(self.wire)

    def test_connects_and_reports_the_local_address(self) -> None:
        self.assertEqual(self.wire.connected_to, ("192.0.2.10", 5060))
        self.assertEqual(self.successResultOf(self.client.ready()), ("192.0.2.1", 5060))

    def test_retransmits_on_timer_e_then_fails_on_timer_f(self) -> None:
        d = self.client.run(PublishTransaction(make_publish(), reliable=False))
        self.clock.pump([0.5, 1.0, 2.0, 4.0])  # Timer E: 0.5, 1, 2, 4 (capped at T2)
        self.assertEqual(len(self.wire.written), 5)
        self.assertNoResult(d)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # one timer per transaction
        self.clock.advance(32.0)  # Timer F = 64*T1 after the start
        err = self.failureResultOf(d, TransactionTimeout)
        self.assertTrue(err.value.retryable)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.client.pending, 0)

    def test_final_response_fires_and_timer_k_clears(self) -> None:
        d = self.client.run(PublishTransaction(make_publish(), reliable=False))
        self.client.datagramReceived(make_response(100).to_bytes(), ("192.0.2.10", 5060))
        self.assertNoResult(d)
        self.client.datagramReceived(make_response(200).to_bytes(), ("192.0.2.10", 5060))
        self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # Timer K
        self.clock.advance(5.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.client.pending, 0)

    def test_responses_are_matched_by_branch(self) -> None:
        d1 = self.client.run(PublishTransaction(make_publish("z9hG4bK.a"), reliable=False))
        d2 = self.client.run(PublishTransaction(make_publish("z9hG4bK.b"), reliable=False))
        self.client.datagramReceived(make_response(200, "z9hG4bK.b").to_bytes(), None)
        self.client.datagramReceived(make_response(200, "z9hG4bK.other").to_bytes(), None)
        self.assertNoResult(d1)
        self.assertEqual(self.successResultOf(d2).status, 200)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)

    def test_garbage_is_dropped_with_a_warning(self) -> None:
        d = self.client.run(PublishTransaction(make_publish(), reliable=False))
        with self.assertLogs("xcapdiff.sip", logging.WARNING) as logs:
            self.client.datagramReceived(b"\x00garbage\r\n\r\n", ("192.0.2.10", 5060))
            self.client.datagramReceived(make_publish().to_bytes(), ("192.0.2.10", 5060))
        self.assertEqual(len(logs.records), 2)
        self.assertIn("dropped a datagram", logs.output[0])
        self.assertNoResult(d)

    def test_cancel_abandons_the_transaction(self) -> None:
        d = self.client.run(PublishTransaction(make_publish(), reliable=False))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.client.datagramReceived(make_response(200).to_bytes(), None)  # late: ignored
        self.assertEqual(self.client.pending, 0)

    def test_icmp_error_fails_pending_at_once(self) -> None:
        d = self.client.run(PublishTransaction(make_publish(), reliable=False))
        self.client.connectionRefused()
        self.assertIn("ICMP", self.failureResultOf(d, TransactionTimeout).value.reason)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_leaves_nothing(self) -> None:
        d = self.client.run(PublishTransaction(make_publish(), reliable=False))
        self.successResultOf(self.client.stop())
        self.failureResultOf(d, TransportError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.wire.stopped)


class _FakeStreamTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def getHost(self) -> Any:
        return type("A", (), {"host": "192.0.2.1", "port": 40000})()

    def getPeer(self) -> Any:
        return type("A", (), {"host": "192.0.2.10", "port": 5060})()

    def loseConnection(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionError("closed")))

    abortConnection = loseConnection


class _FakeEndpoint:
    def __init__(self) -> None:
        self.connects = 0
        self.transports: list[_FakeStreamTransport] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        self.connects += 1
        protocol = factory.buildProtocol(None)
        transport = _FakeStreamTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.transports.append(transport)
        return succeed(protocol)


class SipStreamClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.endpoint = Clock(), _FakeEndpoint()
        self.client = SipStreamClient(self.clock, self.endpoint)

    def test_reuses_one_connection_and_no_retransmission(self) -> None:
        self.assertEqual(self.successResultOf(self.client.ready()), ("192.0.2.1", 40000))
        self.successResultOf(self.client.ready())
        self.assertEqual(self.endpoint.connects, 1)
        d = self.client.run(PublishTransaction(make_publish(transport="TCP"), reliable=True))
        self.clock.advance(10.0)
        self.assertEqual(len(self.endpoint.transports[0].written), 1)
        protocol = self.endpoint.transports[0].protocol
        data = make_response(200).to_bytes()
        protocol.dataReceived(b"\r\n" + data[:10])  # keep-alive, then a split message
        protocol.dataReceived(data[10:])
        self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # Timer K = 0 on a stream

    def test_connection_loss_fails_pending_and_reconnects(self) -> None:
        self.successResultOf(self.client.ready())
        d = self.client.run(PublishTransaction(make_publish(transport="TCP"), reliable=True))
        self.endpoint.transports[0].loseConnection()
        self.failureResultOf(d, TransactionTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(self.client.ready())
        self.assertEqual(self.endpoint.connects, 2)

    def test_garbage_closes_the_connection(self) -> None:
        self.successResultOf(self.client.ready())
        d = self.client.run(PublishTransaction(make_publish(transport="TCP"), reliable=True))
        with self.assertLogs("xcapdiff.sip", logging.WARNING):
            self.endpoint.transports[0].protocol.dataReceived(b"garbage garbage\r\n\r\n")
        self.failureResultOf(d, TransactionTimeout)
        self.assertFalse(self.client.connected)

    def test_stop_closes(self) -> None:
        self.successResultOf(self.client.ready())
        d = self.client.run(PublishTransaction(make_publish(transport="TCP"), reliable=True))
        self.successResultOf(self.client.stop())
        self.failureResultOf(d, TransportError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failureResultOf(self.client.ready(), TransportError)
