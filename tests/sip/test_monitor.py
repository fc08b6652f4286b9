"""sip.monitor.PublishMonitor over real loopback UDP/TCP, and ``xcapdiff monitor``.

The socket tests are ``twisted.trial.unittest.TestCase`` classes (pytest runs them;
trial spins the global reactor and fails a test that leaves a socket behind).  The
ESC logic that depends on time runs against ``task.Clock`` through ``handle``.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.task import Clock
from twisted.trial import unittest

from xcapdiff_ext.cli import main
from xcapdiff_ext.sip.message import (
    NEED_DATA,
    SipMessageReader,
    SipRequest,
    SipResponse,
    parse_message,
)
from xcapdiff_ext.sip.monitor import PublishMonitor, Received, validate_xcap_diff

reactor: Any = _reactor
ROOT = Path(__file__).resolve().parent.parent.parent

BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/">\n'
    b'  <document sel="resource-lists/users/sip:alice@127.0.0.1/index" new-etag="2"/>\n'
    b"</xcap-diff>\n"
)
# Well-formed, but <document> has no sel: the schema (and parse_xcap_diff) refuse it.
BAD_BODY = (
    b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/">'
    b'<document new-etag="2"/></xcap-diff>'
)


def publish(
    *,
    n: int = 1,
    etag: str | None = None,
    expires: int | None = 60,
    event: str = "xcap-diff",
    body: bytes = BODY,
    method: str = "PUBLISH",
    transport: str = "UDP",
) -> SipRequest:
    headers = [
        ("Via", f"SIP/2.0/{transport} 127.0.0.1:5070;branch=z9hG4bK.t{n};rport"),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@127.0.0.1>;tag=f1"),
        ("To", "<sip:alice@127.0.0.1>"),
        ("Call-ID", "call-1@127.0.0.1"),
        ("CSeq", f"{n} {method}"),
        ("Event", event),
    ]
    if expires is not None:
        headers.append(("Expires", str(expires)))
    if etag is not None:
        headers.append(("SIP-If-Match", etag))
    if body:
        headers.append(("Content-Type", "application/xcap-diff+xml"))
    return SipRequest(method, "sip:alice@127.0.0.1", tuple(headers), body)


def counter() -> Any:
    state = [0]

    def new_etag() -> str:
        state[0] += 1
        return f"e{state[0]}"

    return new_etag


class _UdpClient(DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: list[Deferred[SipResponse]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        message = parse_message(datagram)
        assert isinstance(message, SipResponse)
        self.waiting.pop(0).callback(message)

    def ask(self, request: SipRequest, port: int) -> Deferred[SipResponse]:
        d: Deferred[SipResponse] = Deferred()
        self.waiting.append(d)
        assert self.transport is not None
        self.transport.write(request.to_bytes(), ("127.0.0.1", port))
        return d.addTimeout(5, reactor)


class _TcpClient(Protocol):
    def __init__(self) -> None:
        self.reader = SipMessageReader()
        self.waiting: list[Deferred[SipResponse]] = []
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.reader.feed(data)
        while (message := self.reader.next_message()) is not NEED_DATA:
            assert isinstance(message, SipResponse)
            self.waiting.pop(0).callback(message)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)

    def ask(self, request: SipRequest, *, split: int = 0) -> Deferred[SipResponse]:
        d: Deferred[SipResponse] = Deferred()
        self.waiting.append(d)
        data = request.to_bytes()
        assert self.transport is not None
        if split:
            self.transport.write(data[:split])
            reactor.callLater(0.01, self.transport.write, data[split:])
        else:
            self.transport.write(data)
        return d.addTimeout(5, reactor)


class UdpMonitorTests(unittest.TestCase):
    timeout = 15

    def setUp(self) -> None:
        self.received: list[Received] = []
        self.monitor = PublishMonitor(
            reactor, on_publication=self.received.append, new_etag=counter()
        )
        self.server = reactor.listenUDP(0, self.monitor.udp_protocol(), interface="127.0.0.1")
        self.port = self.server.getHost().port
        self.client = _UdpClient()
        self.client_port = reactor.listenUDP(0, self.client, interface="127.0.0.1")

    @inlineCallbacks
    def tearDown(self) -> Any:
        yield self.client_port.stopListening()
        yield self.server.stopListening()

    @inlineCallbacks
    def test_initial_publication(self) -> Any:
        request = publish()
        response = yield self.client.ask(request, self.port)
        assert (response.status, response.reason) == (200, "OK")
        assert response.header("SIP-ETag") == "e1"
        assert response.header("Expires") == "60"
        # RFC 3261 §8.2.6.2: Via, From, To (+ tag), Call-ID, CSeq copied.
        assert response.header_values("Via") == request.header_values("Via")
        assert response.header("From") == request.header("From")
        assert (response.header("To") or "").startswith("<sip:alice@127.0.0.1>;tag=")
        assert response.call_id == request.call_id
        assert response.cseq == (1, "PUBLISH")
        [got] = self.received
        assert got.valid and got.problem is None
        assert (got.aor, got.etag, got.expires, got.kind) == (
            "sip:alice@127.0.0.1",
            "e1",
            60,
            "initial",
        )
        assert got.body == BODY and got.transport == "udp"
        assert got.source[0] == "127.0.0.1"
        assert got.source[1] == self.client_port.getHost().port

    @inlineCallbacks
    def test_modify_with_sip_if_match(self) -> Any:
        first = yield self.client.ask(publish(n=1), self.port)
        changed = BODY.replace(b'new-etag="2"', b'new-etag="3"')
        second = yield self.client.ask(publish(n=2, etag="e1", body=changed), self.port)
        assert second.status == 200 and second.header("SIP-ETag") == "e2"
        assert first.header("SIP-ETag") == "e1"
        assert [r.kind for r in self.received] == ["initial", "modify"]
        assert self.received[1].body == changed
        # The old entity-tag is gone: using it again is a 412.
        stale = yield self.client.ask(publish(n=3, etag="e1", body=b""), self.port)
        assert stale.status == 412

    @inlineCallbacks
    def test_refresh_without_body_is_not_reported(self) -> Any:
        yield self.client.ask(publish(n=1), self.port)
        refresh = yield self.client.ask(publish(n=2, etag="e1", body=b"", expires=120), self.port)
        assert refresh.status == 200
        assert (refresh.header("SIP-ETag"), refresh.header("Expires")) == ("e2", "120")
        assert len(self.received) == 1

    @inlineCallbacks
    def test_unknown_etag_is_412(self) -> Any:
        response = yield self.client.ask(publish(etag="nope"), self.port)
        assert (response.status, response.reason) == (412, "Conditional Request Failed")
        assert self.received == []

    @inlineCallbacks
    def test_removal(self) -> Any:
        yield self.client.ask(publish(n=1), self.port)
        assert set(self.monitor.publications()) == {"e1"}
        removed = yield self.client.ask(publish(n=2, etag="e1", body=b"", expires=0), self.port)
        assert removed.status == 200 and removed.header("Expires") == "0"
        assert self.monitor.publications() == {}
        again = yield self.client.ask(publish(n=3, etag="e1", body=b""), self.port)
        assert again.status == 412

    @inlineCallbacks
    def test_other_event_is_489(self) -> Any:
        response = yield self.client.ask(publish(event="presence"), self.port)
        assert (response.status, response.reason) == (489, "Bad Event")
        assert response.header("Allow-Events") == "xcap-diff"
        assert self.received == []

    @inlineCallbacks
    def test_event_is_case_insensitive_with_params(self) -> Any:
        response = yield self.client.ask(publish(event="XCAP-Diff;id=7"), self.port)
        assert response.status == 200

    @inlineCallbacks
    def test_options_and_other_methods(self) -> Any:
        options = yield self.client.ask(publish(method="OPTIONS", body=b""), self.port)
        assert options.status == 200 and options.cseq == (1, "OPTIONS")
        assert "PUBLISH" in (options.header("Allow") or "")
        other = yield self.client.ask(publish(n=2, method="MESSAGE", body=b""), self.port)
        assert (other.status, other.header("Allow")) == (405, "PUBLISH, OPTIONS")

    @inlineCallbacks
    def test_invalid_body_reported_invalid(self) -> Any:
        response = yield self.client.ask(publish(body=BAD_BODY), self.port)
        assert response.status == 200  # the monitor accepts it and says what is wrong
        [got] = self.received
        assert not got.valid and got.problem and "sel" in got.problem
        assert got.body == BAD_BODY

    @inlineCallbacks
    def test_garbage_dropped_then_still_serving(self) -> Any:
        assert self.client.transport is not None
        self.client.transport.write(b"hello\r\n\r\nnot sip", ("127.0.0.1", self.port))
        response = yield self.client.ask(publish(), self.port)
        assert response.status == 200

    @inlineCallbacks
    def test_missing_header_is_400(self) -> Any:
        request = publish().without_header("Call-ID")
        response = yield self.client.ask(request, self.port)
        assert response.status == 400 and self.received == []


class TcpMonitorTests(unittest.TestCase):
    timeout = 15

    @inlineCallbacks
    def setUp(self) -> Any:
        self.received: list[Received] = []
        self.monitor = PublishMonitor(
            reactor, on_publication=self.received.append, new_etag=counter()
        )
        self.server = reactor.listenTCP(0, self.monitor.tcp_factory(), interface="127.0.0.1")
        self.client = _TcpClient()
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.getHost().port)
        yield connectProtocol(endpoint, self.client)

    @inlineCallbacks
    def tearDown(self) -> Any:
        yield self.monitor.stop()
        yield self.client.lost
        yield self.server.stopListening()

    @inlineCallbacks
    def test_publish_modify_remove_over_one_connection(self) -> Any:
        first = yield self.client.ask(publish(n=1, transport="TCP"), split=40)
        assert first.status == 200 and first.header("SIP-ETag") == "e1"
        second = yield self.client.ask(publish(n=2, etag="e1", transport="TCP"))
        assert second.status == 200 and second.header("SIP-ETag") == "e2"
        gone = yield self.client.ask(publish(n=3, etag="e2", body=b"", expires=0, transport="TCP"))
        assert gone.status == 200 and self.monitor.publications() == {}
        assert [(r.transport, r.kind, r.valid) for r in self.received] == [
            ("tcp", "initial", True),
            ("tcp", "modify", True),
        ]

    @inlineCallbacks
    def test_412_and_489_over_tcp(self) -> Any:
        r412 = yield self.client.ask(publish(etag="x", transport="TCP"))
        r489 = yield self.client.ask(publish(n=2, event="dialog", transport="TCP"))
        assert (r412.status, r489.status) == (412, 489)

    @inlineCallbacks
    def test_garbage_closes_the_connection(self) -> Any:
        assert self.client.transport is not None
        self.client.transport.write(b"PUBLISH sip:a@b SIP/2.0\r\nVia: x\r\n\r\n")  # no length
        yield self.client.lost


class ClockTests(unittest.SynchronousTestCase):
    """Time-dependent ESC behaviour through ``handle`` with a fake clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.received: list[Received] = []
        self.monitor = PublishMonitor(
            self.clock, on_publication=self.received.append, new_etag=counter(), min_expires=30
        )

    def handle(self, request: SipRequest) -> SipResponse:
        response = self.monitor.handle(request, ("127.0.0.1", 5070), "udp")
        assert response is not None
        return response

    def test_expired_publication_is_412(self) -> None:
        assert self.handle(publish(n=1, expires=60)).status == 200
        self.clock.advance(61)
        assert self.handle(publish(n=2, etag="e1", body=b"")).status == 412

    def test_retransmission_gets_the_same_answer_once(self) -> None:
        first = self.handle(publish(n=1))
        again = self.handle(publish(n=1))
        assert again == first and len(self.received) == 1
        self.clock.advance(33)  # after Timer J it is a new request
        assert self.handle(publish(n=1)).header("SIP-ETag") == "e2"

    def test_too_brief_is_423(self) -> None:
        response = self.handle(publish(expires=10))
        assert (response.status, response.header("Min-Expires")) == (423, "30")

    def test_initial_with_expires_zero_is_reported_not_kept(self) -> None:
        response = self.handle(publish(expires=0))
        assert response.status == 200 and response.header("Expires") == "0"
        assert len(self.received) == 1 and self.monitor.publications() == {}

    def test_initial_without_body_is_400(self) -> None:
        assert self.handle(publish(body=b"")).status == 400

    def test_wrong_content_type_is_415(self) -> None:
        request = publish().with_header("Content-Type", "application/pidf+xml")
        assert self.handle(request).status == 415

    def test_ack_and_responses_get_nothing(self) -> None:
        ack = publish(method="ACK", body=b"")
        assert self.monitor.handle(ack, ("127.0.0.1", 1), "udp") is None
        assert self.monitor.handle(SipResponse(200, "OK"), ("127.0.0.1", 1), "udp") is None

    def test_to_tag_kept(self) -> None:
        request = publish().with_header("To", "<sip:alice@127.0.0.1>;tag=abc")
        assert self.handle(request).header("To") == "<sip:alice@127.0.0.1>;tag=abc"


def test_validate_xcap_diff() -> None:
    assert validate_xcap_diff(BODY) == (True, None)
    valid, problem = validate_xcap_diff(b"<not-closed>")
    assert not valid and problem
    valid, problem = validate_xcap_diff(b'<xcap-diff xmlns="urn:other" xcap-root="x"/>')
    assert not valid and problem and problem.startswith("schema:")


def test_cli_bad_listen_is_2(capsys: Any) -> None:
    assert main(["monitor", "--listen", "sctp:127.0.0.1:5099"]) == 2
    assert main(["monitor", "--listen", "udp:127.0.0.1"]) == 2
    assert main(["monitor", "--count", "0"]) == 2
    assert "expected udp:HOST:PORT" in capsys.readouterr().err


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_cli_count_json_receives_one_publish() -> None:
    port = _free_udp_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xcapdiff_ext",
            "monitor",
            "--listen",
            f"udp:127.0.0.1:{port}",
            "--count",
            "1",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 20)
        assert ready, "the monitor did not start"
        assert b"listening on udp:127.0.0.1" in proc.stderr.readline()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(10)
            sock.sendto(publish().to_bytes(), ("127.0.0.1", port))
            response = parse_message(sock.recv(65535))
        assert isinstance(response, SipResponse) and response.status == 200
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    [line] = out.decode().splitlines()
    record = json.loads(line)
    assert record["valid"] is True and record["problem"] is None
    assert record["aor"] == "sip:alice@127.0.0.1"
    assert record["etag"] == response.header("SIP-ETag")
    assert record["transport"] == "udp" and record["expires"] == 60
    assert record["source"].startswith("127.0.0.1:")
    assert record["body"].encode() == BODY
