"""mi.http.MiHttpChannel against the in-process mi_http / mi_xmlrpc_ng (http_fakes).

These are ``twisted.trial.unittest.TestCase`` classes: plain pytest runs them through
its unittest support, and trial spins the global reactor until a test's returned
Deferred fires (and fails a test that leaves a DelayedCall or a socket behind).  The
reactor is still passed explicitly to everything under test (STYLE §5).
"""

from __future__ import annotations

import json
import xmlrpc.client
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet import tcp
from twisted.internet.defer import CancelledError, Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from tests.mi.http_fakes import FakeMiHttp
from xcapdiff_ext.errors import TransportError
from xcapdiff_ext.interfaces import Publication, PublishOutcome
from xcapdiff_ext.mi.codec import (
    LocalProtocolError,
    MiError,
    MiProtocol,
    MiTransport,
    Published,
    PublishRequest,
    ReplyTooLarge,
    RetryWithoutEtag,
    SipRejected,
)
from xcapdiff_ext.mi.http import HttpStatusError, MiHttpChannel, _CappedBody
from xcapdiff_ext.mi.transport import IMiChannel, MiPublishTransport

reactor: Any = _reactor

BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/">\n'
    b'<document sel="resource-lists/users/sip:alice@127.0.0.1/index" new-etag="2"/>\n'
    b"</xcap-diff>"
)


def request(
    owner: str = "sip:alice@127.0.0.1", etag: str | None = None, n: int = 0
) -> PublishRequest:
    body = BODY.replace(b'new-etag="2"', f'new-etag="{n}"'.encode())
    return PublishRequest(owner, 3600, "application/xcap-diff+xml", body, etag)


def read_body(response: Any) -> Deferred[bytes]:
    body = _CappedBody(1 << 20, response.length, "test")
    response.deliverBody(body)
    return body.finished


def owner_of(seen: Any) -> str:
    params = seen.params[0] if isinstance(seen.params, tuple) else seen.params
    return str(params["presentity_uri"])


def tag_of(seen: Any) -> str:
    body = str(seen.params["body"])
    return body.split('new-etag="')[1].split('"', maxsplit=1)[0]


class ChannelTest(unittest.TestCase):
    """A fake server per test; ``self.channel(...)`` builds a channel stopped at cleanup."""

    def setUp(self) -> None:
        self.fake = FakeMiHttp(reactor)
        self.fake.start()
        self.addCleanup(self.fake.stop)

    def channel(self, url: str | None = None, **kwargs: Any) -> MiHttpChannel:
        channel = MiHttpChannel.from_url(reactor, url or self.fake.url, **kwargs)
        self.addCleanup(self.assert_clean_after_stop, channel)
        return channel

    @inlineCallbacks
    def assert_clean_after_stop(self, channel: MiHttpChannel) -> Any:
        yield channel.stop()
        self.assertEqual(channel.pending, 0)


class JsonRpcTests(ChannelTest):
    def test_provides_the_interface(self) -> None:
        channel = self.channel()
        self.assertTrue(IMiChannel.providedBy(channel))
        self.assertIs(channel.kind, MiTransport.HTTP)

    @inlineCallbacks
    def test_success(self) -> Any:
        channel = self.channel()
        reply = yield channel.call(request(), "sip:alice@127.0.0.1")
        self.assertIsInstance(reply, Published)
        self.assertEqual(reply.etag, "a.1795696722.1981.1.0")
        self.assertEqual(reply.expires, 3600)
        [seen] = self.fake.requests
        self.assertEqual(seen.content_type, "application/json")
        self.assertEqual(seen.id, 1)
        self.assertEqual(seen.params["event_package"], "xcap-diff")
        self.assertNotIn("extra_headers", seen.params)
        again = yield channel.call(request(), "sip:alice@127.0.0.1")
        self.assertEqual(again.etag, "a.1795696722.1981.2.0")  # a new ETag each time
        self.assertEqual(self.fake.requests[1].id, 2)

    @inlineCallbacks
    def test_custom_ids(self) -> Any:
        ids = iter(["x-1", "x-2"])
        channel = self.channel(new_id=lambda: next(ids))
        yield channel.call(request(), "sip:alice@127.0.0.1")
        self.assertEqual(self.fake.requests[0].id, "x-1")

    @inlineCallbacks
    def test_wrong_etag_then_success_through_publish_transport(self) -> Any:
        transport = MiPublishTransport(self.channel(), expires=3600)
        publication = Publication(owner="sip:alice@127.0.0.1", body=BODY, etag="stale")
        outcome = yield transport.publish(publication)
        self.assertIsInstance(outcome, PublishOutcome)
        self.assertEqual(outcome.etag, "a.1795696722.1981.1.0")
        first, second = self.fake.requests
        self.assertEqual(first.params["etag"], "stale")
        self.assertNotIn("etag", second.params)

    @inlineCallbacks
    def test_wrong_etag_is_a_result_of_call(self) -> Any:
        reply = yield self.channel().call(request(etag="stale"), "sip:alice@127.0.0.1")
        self.assertIsInstance(reply, RetryWithoutEtag)
        self.assertIsNone(reply.request.etag)

    @inlineCallbacks
    def test_result_level_408_is_retryable(self) -> Any:
        self.fake.sip_reply = "408 Request Timeout"
        failure = yield self.assertFailure(
            self.channel().call(request(), "sip:alice@127.0.0.1"), SipRejected
        )
        self.assertTrue(failure.retryable)
        self.assertEqual(failure.status, 408)

    @inlineCallbacks
    def test_removal_twice(self) -> Any:
        channel = self.channel()
        yield channel.call(request(), "sip:alice@127.0.0.1")
        gone = yield channel.call(
            PublishRequest.removal("sip:alice@127.0.0.1"), "sip:alice@127.0.0.1"
        )
        self.assertEqual(gone.expires, 0)
        again = yield channel.call(
            PublishRequest.removal("sip:alice@127.0.0.1"), "sip:alice@127.0.0.1"
        )
        self.assertIn("already removed", again.detail)

    @inlineCallbacks
    def test_timeout_is_retryable(self) -> Any:
        self.fake.hang = True
        started = reactor.seconds()
        failure = yield self.assertFailure(
            self.channel(timeout=0.2).call(request(), "sip:alice@127.0.0.1"), TransportError
        )
        self.assertTrue(failure.retryable)
        self.assertIn("no reply within 0.2 s", str(failure))
        self.assertLess(reactor.seconds() - started, 2)

    @inlineCallbacks
    def test_timeout_covers_a_slow_answer_and_the_queue_moves_on(self) -> Any:
        self.fake.delay = 0.3
        channel = self.channel(timeout=0.1)
        first = channel.call(request(), "sip:a@127.0.0.1")
        yield self.assertFailure(first, TransportError)
        self.fake.delay = 0
        reply = yield channel.call(request(owner="sip:b@127.0.0.1"), "sip:b@127.0.0.1")
        self.assertIsInstance(reply, Published)

    @inlineCallbacks
    def test_http_500_is_retryable(self) -> Any:
        self.fake.http_status = 500
        failure = yield self.assertFailure(
            self.channel().call(request(), "sip:alice@127.0.0.1"), HttpStatusError
        )
        self.assertEqual(failure.code, 500)
        self.assertTrue(failure.retryable)

    @inlineCallbacks
    def test_http_405_is_permanent(self) -> Any:
        self.fake.http_status = 405
        failure = yield self.assertFailure(
            self.channel().call(request(), "sip:alice@127.0.0.1"), HttpStatusError
        )
        self.assertFalse(failure.retryable)
        self.assertIn("405", str(failure))

    @inlineCallbacks
    def test_wrong_path_is_404(self) -> Any:
        url = self.fake.url.replace("/mi", "/json")
        failure = yield self.assertFailure(
            self.channel(url).call(request(), "sip:alice@127.0.0.1"), HttpStatusError
        )
        self.assertEqual(failure.code, 404)

    @inlineCallbacks
    def test_oversized_body(self) -> Any:
        self.fake.body_override = b"{" + b" " * 5000 + b"}"
        channel = self.channel(max_reply_bytes=1000)
        failure = yield self.assertFailure(
            channel.call(request(), "sip:alice@127.0.0.1"), ReplyTooLarge
        )
        self.assertIn("exceeds 1000", str(failure))

    @inlineCallbacks
    def test_garbage_body(self) -> Any:
        self.fake.body_override = b"<html>oops</html>"
        failure = yield self.assertFailure(
            self.channel().call(request(), "sip:alice@127.0.0.1"), TransportError
        )
        self.assertIn("not a JSON-RPC reply", str(failure))

    @inlineCallbacks
    def test_connection_refused_is_retryable(self) -> Any:
        url = self.fake.url
        yield self.fake.port.stopListening()
        failure = yield self.assertFailure(
            self.channel(url).call(request(), "sip:alice@127.0.0.1"), TransportError
        )
        self.assertTrue(failure.retryable)
        self.assertIn("refused", str(failure).lower())

    def test_encoding_error_fails_at_once(self) -> Any:
        bad = PublishRequest("sip:a@127.0.0.1", 3600, "application/xcap-diff+xml", b"\xff")
        return self.assertFailure(self.channel().call(bad, "sip:a@127.0.0.1"), TransportError)

    def test_bad_configuration(self) -> None:
        agent = Agent(reactor)
        url = "http://127.0.0.1:1/mi"
        for kwargs in (
            {"transport": MiTransport.FIFO},
            {"protocol": MiProtocol.LEGACY},
            {"timeout": 0},
            {"concurrency": 0},
        ):
            with self.assertRaises(LocalProtocolError, msg=repr(kwargs)):
                MiHttpChannel(reactor, agent, url, **kwargs)
        with self.assertRaises(LocalProtocolError):
            MiHttpChannel(reactor, agent, "udp:127.0.0.1:8080")


class FakeFidelityTests(ChannelTest):
    """The fake behaves as MI.md records (so the channel tests mean something)."""

    @inlineCallbacks
    def test_get_is_405(self) -> Any:
        response = yield Agent(reactor).request(b"GET", self.fake.url.encode())
        yield read_body(response)
        self.assertEqual(response.code, 405)

    @inlineCallbacks
    def test_form_content_type_hangs(self) -> Any:
        from twisted.web.client import ResponseNeverReceived

        from xcapdiff_ext.mi.http import _BytesProducer

        headers = Headers({b"content-type": [b"application/x-www-form-urlencoded"]})
        d = Agent(reactor).request(b"POST", self.fake.url.encode(), headers, _BytesProducer(b"{}"))
        d.addTimeout(0.2, reactor)
        yield self.assertFailure(d, ResponseNeverReceived)  # the timeout cancelled it
        self.assertEqual(self.fake.requests[0].content_type, "application/x-www-form-urlencoded")

    @inlineCallbacks
    def test_bad_params_get_32602(self) -> Any:
        from xcapdiff_ext.mi.http import _BytesProducer

        message = {"jsonrpc": "2.0", "method": "pua_publish", "id": 7, "params": {"event": "x"}}
        headers = Headers({b"content-type": [b"application/json"]})
        response = yield Agent(reactor).request(
            b"POST", self.fake.url.encode(), headers, _BytesProducer(json.dumps(message).encode())
        )
        reply = json.loads((yield read_body(response)))
        self.assertEqual(reply["error"]["code"], -32602)


class XmlRpcTests(ChannelTest):
    def xchannel(self, **kwargs: Any) -> MiHttpChannel:
        return self.channel(self.fake.rpc2_url, transport=MiTransport.XMLRPC, **kwargs)

    @inlineCallbacks
    def test_success_struct_form(self) -> Any:
        channel = self.xchannel()
        self.assertIs(channel.kind, MiTransport.XMLRPC)
        reply = yield channel.call(request(), "sip:alice@127.0.0.1")
        self.assertEqual(reply, Published("a.1795696722.1981.1.0", 3600, "200 OK"))
        [seen] = self.fake.requests
        self.assertEqual(seen.content_type, "text/xml")
        self.assertEqual(seen.params[0]["event_package"], "xcap-diff")

    @inlineCallbacks
    def test_fault_418_then_success(self) -> Any:
        transport = MiPublishTransport(self.xchannel(), expires=3600)
        publication = Publication(owner="sip:alice@127.0.0.1", body=BODY, etag="stale")
        outcome = yield transport.publish(publication)
        self.assertEqual(outcome.etag, "a.1795696722.1981.1.0")
        self.assertEqual(len(self.fake.requests), 2)

    @inlineCallbacks
    def test_fault_400_unknown_event(self) -> Any:
        self.fake.body_override = xmlrpc.client.dumps(
            xmlrpc.client.Fault(400, "Unknown event")
        ).encode()
        failure = yield self.assertFailure(
            self.xchannel().call(request(), "sip:alice@127.0.0.1"), MiError
        )
        self.assertIn("presence_xcapdiff", str(failure))
        self.assertFalse(failure.retryable)

    @inlineCallbacks
    def test_legacy_positional_string_reply(self) -> Any:
        self.fake.body_override = xmlrpc.client.dumps(
            ("200 OK\nETag:: x.1\nExpires:: 3600",), methodresponse=True
        ).encode()
        channel = self.xchannel(protocol=MiProtocol.LEGACY)
        reply = yield channel.call(request(), "sip:alice@127.0.0.1")
        self.assertEqual((reply.etag, reply.expires), ("x.1", 3600))
        params = self.fake.requests[0].params
        self.assertEqual(params[:3], ("sip:alice@127.0.0.1", 3600, "xcap-diff"))


class QueueTests(ChannelTest):
    @inlineCallbacks
    def test_fairness_b_is_served_second_not_eleventh(self) -> Any:
        self.fake.delay = 0.01
        channel = self.channel()
        a = [channel.call(request("sip:a@127.0.0.1", n=i), "sip:a@127.0.0.1") for i in range(10)]
        b = channel.call(request("sip:b@127.0.0.1"), "sip:b@127.0.0.1")
        yield gatherResults([*a, b])
        owners = [owner_of(seen) for seen in self.fake.requests]
        self.assertEqual(owners[:3], ["sip:a@127.0.0.1", "sip:b@127.0.0.1", "sip:a@127.0.0.1"])
        # per-owner order kept
        self.assertEqual(
            [tag_of(s) for s in self.fake.requests if owner_of(s) == "sip:a@127.0.0.1"],
            [str(i) for i in range(10)],
        )

    @inlineCallbacks
    def test_at_most_concurrency_in_flight(self) -> Any:
        self.fake.delay = 0.05
        channel = self.channel(concurrency=2)
        calls = [
            channel.call(request(f"sip:u{i}@127.0.0.1"), f"sip:u{i}@127.0.0.1") for i in range(5)
        ]
        self.assertEqual(len(channel._in_flight), 2)
        self.assertEqual(len(channel._queue), 3)
        yield gatherResults(calls)
        self.assertEqual(channel.pending, 0)

    @inlineCallbacks
    def test_cancel_a_queued_call(self) -> Any:
        self.fake.delay = 0.05
        channel = self.channel()
        first = channel.call(request("sip:a@127.0.0.1", n=1), "sip:a@127.0.0.1")
        second = channel.call(request("sip:a@127.0.0.1", n=2), "sip:a@127.0.0.1")
        third = channel.call(request("sip:a@127.0.0.1", n=3), "sip:a@127.0.0.1")
        second.cancel()
        yield self.assertFailure(second, CancelledError)
        yield first
        yield third
        self.assertEqual([tag_of(s) for s in self.fake.requests], ["1", "3"])

    @inlineCallbacks
    def test_cancel_an_in_flight_call(self) -> Any:
        self.fake.hang = True
        channel = self.channel()
        call = channel.call(request(), "sip:alice@127.0.0.1")
        yield deferLater(reactor, 0.05, lambda: None)  # let it reach the server
        self.assertEqual(len(self.fake.hanging), 1)
        call.cancel()
        yield self.assertFailure(call, CancelledError)
        self.assertEqual(channel.pending, 0)
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(self.fake.hanging), 0)  # the server saw the connection go

    @inlineCallbacks
    def test_stop_cancels_everything_and_leaves_nothing(self) -> Any:
        self.fake.hang = True
        channel = self.channel()
        calls = [
            channel.call(request(f"sip:u{i}@127.0.0.1"), f"sip:u{i}@127.0.0.1") for i in range(3)
        ]
        yield deferLater(reactor, 0.05, lambda: None)
        yield channel.stop()
        for call in calls:
            yield self.assertFailure(call, CancelledError)
        self.assertEqual(channel.pending, 0)
        # no client socket left in the reactor, no timer left
        clients = [
            s for s in reactor.getReaders() + reactor.getWriters() if isinstance(s, tcp.Client)
        ]
        self.assertEqual(clients, [])
        others = ("HTTPFactory._updateLogDateTime", "TestCase._run")  # the fake's, trial's
        left = [c for c in reactor.getDelayedCalls() if not any(o in repr(c) for o in others)]
        self.assertEqual(left, [])
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(self.fake.hanging), 0)  # the server saw them go
        late = yield self.assertFailure(channel.call(request(), "sip:x@127.0.0.1"), TransportError)
        self.assertFalse(late.retryable)

    @inlineCallbacks
    def test_stop_when_idle(self) -> Any:
        channel = self.channel()
        d: Deferred[None] = channel.stop()
        yield d
        self.assertEqual(channel.pending, 0)
