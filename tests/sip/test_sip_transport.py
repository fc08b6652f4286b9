"""sip.transport.SipPublishTransport against the loopback UAS fakes (sip_fakes).

``twisted.trial.unittest.TestCase`` classes, like tests/mi/test_http.py: pytest runs
them, trial spins the global reactor for a returned Deferred and fails a test that
leaves a DelayedCall or a socket behind.  The reactor is passed explicitly.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import CancelledError, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.sip.sip_fakes import FakeSipUas, FakeTcpUas, FakeUdpUas
from xcapdiff_ext.config import Settings, SipProxy
from xcapdiff_ext.errors import ConfigError, PublishRejected, TransportError
from xcapdiff_ext.interfaces import IPublishTransport, Publication, PublishOutcome
from xcapdiff_ext.sip.transaction import Timers
from xcapdiff_ext.sip.transport import SipPublishTransport

reactor: Any = _reactor

OWNER = "sip:alice@127.0.0.1"
BODY = b'<?xml version="1.0"?><xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/"/>'
FAST = Timers(t1=0.02, t2=0.08, t4=0.1)  # Timer F = 1.28 s


def via_of(uas: FakeSipUas, n: int = -1) -> str:
    return uas.requests[n].header("Via") or ""


class TransportTest(unittest.TestCase):
    uas: FakeSipUas
    kind = "udp"

    def setUp(self) -> None:
        self.uas = FakeUdpUas() if self.kind == "udp" else FakeTcpUas()
        self.uas.start(reactor)
        self.addCleanup(self.uas.stop)

    def transport(self, **kwargs: Any) -> SipPublishTransport:
        kwargs.setdefault("timers", FAST)
        port = self.uas.port  # type: ignore[attr-defined]
        transport = SipPublishTransport(reactor, next_hop=(self.kind, "127.0.0.1", port), **kwargs)
        self.addCleanup(self.stop_clean, transport)
        return transport

    @inlineCallbacks
    def stop_clean(self, transport: SipPublishTransport) -> Any:
        yield transport.stop()
        self.assertEqual(transport.pending, 0)


class UdpTests(TransportTest):
    def test_provides_the_interface(self) -> None:
        transport = self.transport()
        self.assertTrue(IPublishTransport.providedBy(transport))
        self.assertEqual(transport.name, "sip")

    @inlineCallbacks
    def test_success_then_modify(self) -> Any:
        transport = self.transport(extra_headers=(("Thor-Scope", "publish-xcap"),))
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome, PublishOutcome("e1", 3600))
        request = self.uas.requests[0]
        self.assertTrue(via_of(self.uas).startswith("SIP/2.0/UDP 127.0.0.1:"))
        self.assertIsNone(request.header("SIP-If-Match"))
        self.assertEqual(request.header("Thor-Scope"), "publish-xcap")
        self.assertEqual(request.body, BODY)
        outcome = yield transport.publish(Publication(OWNER, BODY + b" ", etag="e1"))
        self.assertEqual(outcome.etag, "e2")
        self.assertEqual(self.uas.requests[1].header("SIP-If-Match"), "e1")

    @inlineCallbacks
    def test_host_name_is_resolved_for_udp(self) -> Any:
        port = self.uas.port  # type: ignore[attr-defined]
        transport = SipPublishTransport(reactor, next_hop=("udp", "localhost", port), timers=FAST)
        self.addCleanup(self.stop_clean, transport)
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome.etag, "e1")

    @inlineCallbacks
    def test_retransmission_after_a_dropped_request(self) -> Any:
        self.uas.drop = 1
        outcome = yield self.transport().publish(Publication(OWNER, BODY))
        self.assertEqual(outcome.etag, "e1")
        first, second = self.uas.requests
        self.assertEqual(first.to_bytes(), second.to_bytes())  # the same transaction

    @inlineCallbacks
    def test_412_recovery(self) -> Any:
        transport = self.transport()
        yield transport.publish(Publication(OWNER, BODY))
        self.uas.etags.clear()  # the ESC lost its state
        outcome = yield transport.publish(Publication(OWNER, BODY, etag="e1"))
        self.assertEqual(outcome.etag, "e2")
        _, modify, initial = self.uas.requests
        self.assertEqual(modify.header("SIP-If-Match"), "e1")
        self.assertIsNone(initial.header("SIP-If-Match"))
        self.assertEqual(initial.body, BODY)

    @inlineCallbacks
    def test_after_a_restart_the_remembered_etag_is_modified_not_duplicated(self) -> Any:
        first = self.transport()
        yield first.publish(Publication(OWNER, BODY))  # the ESC granted e1
        restarted = self.transport()  # a new process: no state, the spool kept "e1"
        outcome = yield restarted.publish(Publication(OWNER, BODY, etag="e1"))
        self.assertEqual(outcome.etag, "e2")
        _, resumed = self.uas.requests
        self.assertEqual(resumed.header("SIP-If-Match"), "e1")  # no second publication

    @inlineCallbacks
    def test_a_remembered_etag_the_esc_forgot_falls_back_to_an_initial(self) -> Any:
        outcome = yield self.transport().publish(Publication(OWNER, BODY, etag="e9"))
        self.assertEqual(outcome.etag, "e1")
        resumed, initial = self.uas.requests
        self.assertEqual(resumed.header("SIP-If-Match"), "e9")
        self.assertIsNone(initial.header("SIP-If-Match"))

    @inlineCallbacks
    def test_423_retries_with_min_expires(self) -> Any:
        self.uas.min_expires = 7200
        outcome = yield self.transport().publish(Publication(OWNER, BODY))
        self.assertEqual(outcome, PublishOutcome("e1", 7200))
        self.assertEqual([r.header("Expires") for r in self.uas.requests], ["3600", "7200"])

    @inlineCallbacks
    def test_401_digest(self) -> Any:
        self.uas.auth = ("alice", "s3cret")
        transport = self.transport(credentials=("alice", "s3cret"))
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome.etag, "e1")
        self.assertEqual(self.uas.auth_ok, 1)
        self.assertIsNone(self.uas.requests[0].header("Authorization"))
        self.assertNotIn("s3cret", repr(transport))
        self.assertNotIn(b"s3cret", self.uas.requests[1].to_bytes())

    @inlineCallbacks
    def test_401_wrong_password_is_permanent(self) -> Any:
        self.uas.auth = ("alice", "s3cret")
        d = self.transport(credentials=("alice", "wrong")).publish(Publication(OWNER, BODY))
        err = yield self.assertFailure(d, PublishRejected)
        self.assertEqual(err.status, 401)
        self.assertFalse(err.retryable)

    @inlineCallbacks
    def test_489_is_permanent(self) -> Any:
        self.uas.reject_event = True
        d = self.transport().publish(Publication(OWNER, BODY))
        err = yield self.assertFailure(d, PublishRejected)
        self.assertEqual(err.status, 489)
        self.assertFalse(err.retryable)
        self.assertIn("presence", str(err))

    @inlineCallbacks
    def test_503_is_retryable_with_retry_after(self) -> Any:
        self.uas.answer = (503, "Service Unavailable", (("Retry-After", "30"),))
        err = yield self.assertFailure(
            self.transport().publish(Publication(OWNER, BODY)), PublishRejected
        )
        self.assertTrue(err.retryable)
        self.assertEqual(err.retry_after, 30.0)

    @inlineCallbacks
    def test_timeout_is_retryable(self) -> Any:
        self.uas.drop = 1000
        err = yield self.assertFailure(
            self.transport().publish(Publication(OWNER, BODY)), TransportError
        )
        self.assertNotIsInstance(err, PublishRejected)
        self.assertTrue(err.retryable)
        self.assertIsNone(err.retry_after)
        self.assertGreater(len(self.uas.requests), 3)  # Timer E retransmissions

    @inlineCallbacks
    def test_large_request_goes_over_tcp(self) -> Any:
        tcp = FakeTcpUas()
        port = self.uas.port  # type: ignore[attr-defined]
        tcp._port = reactor.listenTCP(port, _tcp_factory(tcp), interface="127.0.0.1")
        tcp.connections, tcp.accepted = [], 0
        self.addCleanup(tcp.stop)
        transport = self.transport()
        big = BODY + b" " * 1400
        outcome = yield transport.publish(Publication(OWNER, big))
        self.assertEqual(outcome.etag, "e1")
        self.assertEqual(self.uas.requests, [])
        [request] = tcp.requests
        self.assertTrue(via_of(tcp).startswith("SIP/2.0/TCP 127.0.0.1:"))
        self.assertEqual(request.body, big)
        small = yield transport.publish(Publication(OWNER, BODY, etag="e1"))  # UDP again
        self.assertEqual(small.etag, "e1")  # the UDP fake knows no e1: 412, then initial
        self.assertEqual([r.header("SIP-If-Match") for r in self.uas.requests], ["e1", None])

    @inlineCallbacks
    def test_cancel_drops_the_state(self) -> Any:
        self.uas.drop = 1000
        transport = self.transport()
        d = transport.publish(Publication(OWNER, BODY))
        d.cancel()
        yield self.assertFailure(d, CancelledError)
        self.assertEqual(transport.pending, 0)

    @inlineCallbacks
    def test_remove(self) -> Any:
        transport = self.transport()
        yield transport.publish(Publication(OWNER, BODY))
        yield transport.remove(OWNER)
        remove = self.uas.requests[-1]
        self.assertEqual(remove.header("Expires"), "0")
        self.assertEqual(remove.header("SIP-If-Match"), "e1")
        self.assertEqual(self.uas.etags, {})
        yield transport.remove(OWNER)  # nothing held: no request
        self.assertEqual(len(self.uas.requests), 2)

    @inlineCallbacks
    def test_stop_is_clean_with_work_pending(self) -> Any:
        self.uas.drop = 1000
        transport = self.transport()
        d = transport.publish(Publication(OWNER, BODY))
        yield transport.stop()
        err = yield self.assertFailure(d, TransportError)
        self.assertTrue(err.retryable)
        yield self.assertFailure(transport.publish(Publication(OWNER, BODY)), TransportError)


def _tcp_factory(uas: FakeTcpUas) -> Any:
    from twisted.internet.protocol import Factory

    from tests.sip.sip_fakes import _Stream

    return Factory.forProtocol(lambda: _Stream(uas))


class TcpTests(TransportTest):
    kind = "tcp"

    @inlineCallbacks
    def test_success_reuses_the_connection(self) -> Any:
        transport = self.transport()
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome, PublishOutcome("e1", 3600))
        self.assertTrue(via_of(self.uas).startswith("SIP/2.0/TCP 127.0.0.1:"))
        yield transport.publish(Publication(OWNER, BODY, etag="e1"))
        yield transport.publish(Publication("sip:bob@127.0.0.1", BODY))
        self.assertEqual(self.uas.accepted, 1)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_reconnects_after_loss(self) -> Any:
        transport = self.transport()
        yield transport.publish(Publication(OWNER, BODY))
        yield self.uas.stop()  # closes the connection and the port
        self.uas._port = reactor.listenTCP(  # type: ignore[attr-defined]
            self.uas.port,  # type: ignore[attr-defined]
            _tcp_factory(self.uas),  # type: ignore[arg-type]
            interface="127.0.0.1",
        )
        outcome = yield transport.publish(Publication(OWNER, BODY, etag="e1"))
        self.assertEqual(outcome.etag, "e2")

    @inlineCallbacks
    def test_401_digest_over_tcp(self) -> Any:
        self.uas.auth = ("alice", "s3cret")
        outcome = yield self.transport(credentials=("alice", "s3cret")).publish(
            Publication(OWNER, BODY)
        )
        self.assertEqual(outcome.etag, "e1")
        self.assertEqual(self.uas.auth_ok, 1)

    @inlineCallbacks
    def test_connection_refused_is_retryable(self) -> Any:
        yield self.uas.stop()
        self.uas.stop = lambda: None  # type: ignore[method-assign]
        err = yield self.assertFailure(
            self.transport().publish(Publication(OWNER, BODY)), TransportError
        )
        self.assertTrue(err.retryable)


class RefreshTests(unittest.TestCase):
    @inlineCallbacks
    def test_refresh_is_scheduled_before_expiry(self) -> Any:
        uas = FakeUdpUas(expires_cap=2)  # granted 2 s: refresh at 2 - 0.2 = 1.8 s
        uas.start(reactor)
        self.addCleanup(uas.stop)
        transport = SipPublishTransport(
            reactor, next_hop=("udp", "127.0.0.1", uas.port), timers=FAST
        )
        self.addCleanup(transport.stop)
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome, PublishOutcome("e1", 2))
        calls = [c for c in reactor.getDelayedCalls() if "_refresh" in repr(c.func)]
        self.assertEqual(len(calls), 1)
        self.assertLess(abs(calls[0].getTime() - reactor.seconds() - 1.8), 0.2)
        waited = _defer_later(2.2)
        yield waited
        refresh = uas.requests[1]
        self.assertEqual(refresh.header("SIP-If-Match"), "e1")
        self.assertEqual(refresh.body, b"")
        self.assertEqual(list(uas.etags), ["e2"])
        # The publisher never saw e2 (and its e1 may have expired): it passes no etag,
        # and the live, refreshed publication is modified -- not duplicated.
        yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(uas.requests[-1].header("SIP-If-Match"), "e2")

    def test_stop_cancels_refresh(self) -> Any:
        clock = Clock()
        transport = SipPublishTransport(clock, next_hop=("udp", "127.0.0.1", 9))
        owner = transport._owner(OWNER)
        owner.refresh = clock.callLater(100, lambda: None)
        transport.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


def _defer_later(seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


class SettingsTests(unittest.TestCase):
    def test_empty_sip_proxy_needs_a_resolver(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            SipPublishTransport.from_settings(reactor, Settings(transport="sip"))
        self.assertIn("RFC 3263 lookup needs a DNS resolver", str(caught.exception))

    def test_build_transport_locates_by_rfc3263_without_sip_proxy(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from xcapdiff_ext.sip.locate import LocatingPublishTransport
        from xcapdiff_ext.transports import build_transport

        transport = build_transport(Settings(transport="sip"), MemoryReactorClock())
        self.assertIsInstance(transport, LocatingPublishTransport)

    def test_from_settings(self) -> None:
        settings = Settings(
            transport="sip",
            sip_proxy=SipProxy.from_text("sip:127.0.0.1;transport=tcp"),
            sip_username="alice",
            sip_password="s3cret",
        )
        transport = SipPublishTransport.from_settings(reactor, settings)
        self.assertEqual(transport._hop, ("tcp", "127.0.0.1", 5060))
        self.assertNotIn("s3cret", repr(transport))

    def test_tls_without_pyopenssl_is_a_config_error(self) -> None:
        try:
            import OpenSSL  # noqa: F401
        except ImportError:
            pass
        else:
            raise unittest.SkipTest("pyOpenSSL is installed")
        proxy = SipProxy.from_text("sips:127.0.0.1")
        with self.assertRaises(ConfigError) as caught:
            SipPublishTransport.from_settings(reactor, Settings(transport="sip", sip_proxy=proxy))
        self.assertIn("pyOpenSSL", str(caught.exception))
