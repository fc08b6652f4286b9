"""MiDatagramChannel against the in-process fake mi_datagram (tests/mi/fakes.py).

Each test runs on its own PollReactor (``fakes.run``), never the global one."""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, DeferredList, gatherResults

from tests.mi.fakes import FakeMiDatagram, FakePua, Harness, listen_datagram, open_fds, run
from xcapdiff_ext.errors import TransportError
from xcapdiff_ext.interfaces import Publication
from xcapdiff_ext.mi.codec import (
    MiError,
    MiProtocol,
    Published,
    PublishRequest,
    RemoteProtocolError,
    RequestTooLarge,
    RetryWithoutEtag,
    SipRejected,
)
from xcapdiff_ext.mi.datagram import MiDatagramChannel
from xcapdiff_ext.mi.transport import MiPublishTransport

CT = "application/xcap-diff+xml"
BODY = b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/"/>'


def req(user: str = "alice", etag: str | None = None, body: bytes = BODY) -> PublishRequest:
    return PublishRequest(f"sip:{user}@127.0.0.1", 3600, CT, body, etag)


async def with_server(
    h: Harness, server: FakeMiDatagram, **kw: Any
) -> tuple[MiDatagramChannel, Any]:
    port = listen_datagram(h.reactor, server)
    channel = MiDatagramChannel(h.reactor, "127.0.0.1", port.getHost().port, **kw)
    return channel, port


async def shutdown(h: Harness, channel: MiDatagramChannel, port: Any) -> None:
    await channel.stop()
    await port.stopListening()
    assert h.delayed_calls() == []


def test_success_and_new_etag_each_time() -> None:
    async def test(h: Harness) -> None:
        server = FakeMiDatagram()
        channel, port = await with_server(h, server)
        first = await channel.call(req(), "sip:alice@127.0.0.1")
        second = await channel.call(req(etag=first.etag), "sip:alice@127.0.0.1")
        assert isinstance(first, Published) and first.etag == "a.alice.1"
        assert first.expires == 3600 and second.etag == "a.alice.2"
        sent = json.loads(server.received[1])
        assert sent["params"]["etag"] == "a.alice.1" and "extra_headers" not in sent["params"]
        await shutdown(h, channel, port)

    run(test)


def test_418_then_success_through_publish_transport() -> None:
    async def test(h: Harness) -> None:
        server = FakeMiDatagram()
        channel, port = await with_server(h, server)
        transport = MiPublishTransport(channel, expires=3600)
        outcome = await transport.publish(Publication("sip:bob@127.0.0.1", BODY, etag="stale"))
        assert outcome.etag == "a.bob.1"
        params = [json.loads(d)["params"] for d in server.received]
        assert params[0]["etag"] == "stale" and "etag" not in params[1]
        raw = await channel.call(req("bob", etag="stale"), "sip:bob@127.0.0.1")
        assert isinstance(raw, RetryWithoutEtag)
        await transport.stop()
        await port.stopListening()
        assert h.delayed_calls() == []

    run(test)


def test_result_level_408_is_a_retryable_failure() -> None:
    async def test(h: Harness) -> None:
        channel, port = await with_server(h, FakeMiDatagram(FakePua(reply_408=True)))
        with pytest.raises(SipRejected) as info:
            await channel.call(req(), "sip:alice@127.0.0.1")
        assert info.value.status == 408 and info.value.retryable
        await shutdown(h, channel, port)

    run(test)


def test_dropped_datagram_is_retransmitted_with_the_same_id() -> None:
    async def test(h: Harness) -> None:
        server = FakeMiDatagram(drop_first=1)
        channel, port = await with_server(h, server, timeout=0.6, attempts=3)
        result = await channel.call(req(), "sip:alice@127.0.0.1")
        assert result.etag == "a.alice.1"
        assert len(server.received) == 2 and server.received[0] == server.received[1]
        await shutdown(h, channel, port)

    run(test)


def test_no_reply_times_out_after_all_attempts() -> None:
    async def test(h: Harness) -> None:
        server = FakeMiDatagram(FakePua(silent=True))
        channel, port = await with_server(h, server, timeout=0.3, attempts=3)
        start = h.reactor.seconds()
        with pytest.raises(TransportError, match=r"no reply from udp:127\.0\.0\.1") as info:
            await channel.call(req(), "sip:alice@127.0.0.1")
        assert info.value.retryable
        assert 0.25 <= h.reactor.seconds() - start < 1.0
        assert len(server.received) == 3 and len(set(server.received)) == 1
        await shutdown(h, channel, port)

    run(test)


def test_garbage_reply_is_a_typed_error() -> None:
    async def test(h: Harness) -> None:
        channel, port = await with_server(h, FakeMiDatagram(FakePua(garbage=True)))
        # Garbage carries no id: with one call pending it is that call's reply.
        with pytest.raises(RemoteProtocolError):
            await channel.call(req(), "sip:alice@127.0.0.1")
        await shutdown(h, channel, port)

    run(test)


def test_plain_text_parse_error_goes_to_the_single_pending_call() -> None:
    async def test(h: Harness) -> None:
        channel, port = await with_server(h, FakeMiDatagram(parse_error=True))
        with pytest.raises(MiError) as info:
            await channel.call(req(), "sip:alice@127.0.0.1")
        assert info.value.code == 400 and not info.value.retryable
        await shutdown(h, channel, port)

    run(test)


def test_parse_error_with_several_pending_is_not_guessed(caplog: pytest.LogCaptureFixture) -> None:
    async def test(h: Harness) -> None:
        channel, port = await with_server(h, FakeMiDatagram(parse_error=True), timeout=0.2)
        calls = [channel.call(req(u), f"sip:{u}@127.0.0.1") for u in ("a", "b")]
        for outcome in await DeferredList(calls, consumeErrors=True):
            assert not outcome[0] and "no reply" in outcome[1].value.detail
        await shutdown(h, channel, port)

    with caplog.at_level(logging.WARNING, logger="xcapdiff.mi"):
        run(test)
    assert any("reply without id" in r.getMessage() for r in caplog.records)


def test_unknown_id_is_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def test(h: Harness) -> None:
        server = FakeMiDatagram(FakePua(silent=True))
        channel, port = await with_server(h, server, timeout=0.3, attempts=1)
        d = channel.call(req(), "sip:alice@127.0.0.1")
        address = ("127.0.0.1", channel._udp.getHost().port)
        reply = {"jsonrpc": "2.0", "result": {"reply": "200 OK"}, "id": "nobody"}
        server.transport.write(json.dumps(reply).encode(), address)
        with pytest.raises(TransportError, match="no reply"):
            await d
        await shutdown(h, channel, port)

    with caplog.at_level(logging.WARNING, logger="xcapdiff.mi"):
        run(test)
    assert any("unknown id 'nobody'" in r.getMessage() for r in caplog.records)


def test_oversized_request_is_refused_before_send() -> None:
    async def test(h: Harness) -> None:
        server = FakeMiDatagram()
        channel, port = await with_server(h, server)
        big = b"<x>" + b"a" * 70000 + b"</x>"
        with pytest.raises(RequestTooLarge) as info:
            await channel.call(req(body=big), "sip:alice@127.0.0.1")
        assert not info.value.retryable
        await h.settle()
        assert server.received == []
        await shutdown(h, channel, port)

    run(test)


def test_100_owners_at_once_get_their_own_etags() -> None:
    async def test(h: Harness) -> None:
        server = FakeMiDatagram()
        channel, port = await with_server(h, server)
        users = [f"user{i}" for i in range(100)]
        results = await gatherResults([channel.call(req(u), f"sip:{u}@127.0.0.1") for u in users])
        for user, result in zip(users, results, strict=True):
            assert result.etag.startswith(f"a.{user}.")
        assert len({r.etag for r in results}) == 100
        await shutdown(h, channel, port)

    run(test)


def test_legacy_one_request_at_a_time() -> None:
    async def test(h: Harness) -> None:
        class Legacy(FakeMiDatagram):
            def datagramReceived(self, datagram: bytes, addr: Any) -> None:
                self.received.append(datagram)
                lines = datagram.decode().split("\n")
                assert lines[0] == ":pua_publish:"
                user = lines[1][4:].split("@")[0]
                tree = f"200 OK\n200 OK\nETag:: a.{user}.{len(self.received)}\nExpires:: 3600\n\n"
                # Answer later, so both calls could be outstanding if the channel let them.
                h.reactor.callLater(0.01, self.transport.write, tree.encode(), addr)

        server = Legacy()
        channel, port = await with_server(h, server, protocol=MiProtocol.LEGACY)
        first = channel.call(req("one"), "sip:one@127.0.0.1")
        second = channel.call(req("two"), "sip:two@127.0.0.1")
        assert len(server.received) == 0 or len(server.received) == 1
        await h.settle()
        assert len(server.received) == 1
        a, b = await first, await second
        assert a.etag == "a.one.1" and b.etag == "a.two.2"
        await shutdown(h, channel, port)

    run(test)


def test_cancel_and_stop_leave_nothing_behind() -> None:
    async def test(h: Harness) -> None:
        server = FakeMiDatagram(FakePua(silent=True))
        port = listen_datagram(h.reactor, server)
        before = open_fds()
        channel = MiDatagramChannel(h.reactor, "127.0.0.1", port.getHost().port, timeout=5)
        cancelled = channel.call(req("c"), "sip:c@127.0.0.1")
        cancelled.cancel()
        pending = [channel.call(req(f"u{i}"), f"sip:u{i}@127.0.0.1") for i in range(5)]
        assert len(h.delayed_calls()) == 5
        await channel.stop()
        outcomes = await DeferredList(pending, consumeErrors=True)
        assert all(not ok and f.check(CancelledError) for ok, f in outcomes)
        with pytest.raises(CancelledError):
            await cancelled
        assert h.delayed_calls() == []
        assert open_fds() == before
        with pytest.raises(TransportError, match="stopped"):
            await channel.call(req(), "sip:alice@127.0.0.1")
        await port.stopListening()

    run(test)


def test_nobody_listening_is_a_retryable_timeout() -> None:
    async def test(h: Harness) -> None:
        port = listen_datagram(h.reactor, FakeMiDatagram())
        number = port.getHost().port
        await port.stopListening()  # nobody listens there any more: ICMP unreachable
        channel = MiDatagramChannel(h.reactor, "127.0.0.1", number, timeout=0.3)
        with pytest.raises(TransportError, match="no reply") as info:
            await channel.call(req(), "sip:alice@127.0.0.1")
        assert info.value.retryable
        await channel.stop()
        assert h.delayed_calls() == []

    run(test)


def test_datagrams_from_elsewhere_are_dropped() -> None:
    async def test(h: Harness) -> None:
        server = FakeMiDatagram()
        channel, port = await with_server(h, server, new_id=itertools.count(1).__next__)
        other = listen_datagram(h.reactor, FakeMiDatagram())
        first = await channel.call(req(), "sip:alice@127.0.0.1")
        forged = {"jsonrpc": "2.0", "result": {"reply": "200 OK", "ETag": "evil"}, "id": 1}
        d = channel.call(req(), "sip:alice@127.0.0.1")
        forged["id"] = 2  # the id of the call just made, before OpenSIPS could answer
        other.write(json.dumps(forged).encode(), ("127.0.0.1", channel._udp.getHost().port))
        second = await d
        assert first.etag == "a.alice.1" and second.etag == "a.alice.2"
        await other.stopListening()
        await shutdown(h, channel, port)

    run(test)


def test_host_must_be_an_address() -> None:
    with pytest.raises(ValueError, match="IP address"):
        MiDatagramChannel(object(), "localhost", 8080)
