"""In-process SIP UAS fakes on loopback (UDP and TCP) and a fake datagram transport.

``FakeSipUas`` answers PUBLISH like an RFC 3903 ESC: 200 + SIP-ETag + Expires, 412 for
an unknown SIP-If-Match, 423 + Min-Expires below ``min_expires``, 401 digest challenge
(the Authorization is verified by recomputing it with ``sip.digest.authorization``),
489 for another event or when ``reject_event`` is set.  ``drop`` drops that many
requests first (retransmission tests); ``answer`` forces a status line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from xcapdiff_ext.sip.digest import Challenge, authorization
from xcapdiff_ext.sip.message import (
    NEED_DATA,
    SipMessageReader,
    SipRequest,
    SipResponse,
    parse_message,
)

_AUTH_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def _auth_params(value: str) -> dict[str, str]:
    scheme, _, rest = value.partition(" ")
    assert scheme.lower() == "digest", value
    return {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _AUTH_PARAM.finditer(rest)}


@dataclass
class FakeSipUas:
    """The answering logic, shared by the UDP and TCP fakes."""

    drop: int = 0
    min_expires: int | None = None
    auth: tuple[str, str] | None = None  # (username, password) required
    realm: str = "example.com"
    nonce: str = "nonce-1"
    reject_event: bool = False
    answer: tuple[int, str, tuple[tuple[str, str], ...]] | None = None
    expires_cap: int | None = None
    requests: list[SipRequest] = field(default_factory=list)
    etags: dict[str, bytes] = field(default_factory=dict)  # live SIP-ETag -> body
    auth_ok: int = 0
    _n: int = 0

    def handle(self, request: SipRequest) -> SipResponse | None:
        self.requests.append(request)
        if self.drop > 0:
            self.drop -= 1
            return None
        if self.answer is not None:
            status, reason, extra = self.answer
            return self._reply(request, status, reason, extra)
        if request.method != "PUBLISH":
            return self._reply(request, 501, "Not Implemented")
        if self.auth is not None:
            given = request.header("Authorization")
            if given is None or not self._verify(request, given):
                challenge = (
                    f'Digest realm="{self.realm}", nonce="{self.nonce}", qop="auth", algorithm=MD5'
                )
                return self._reply(request, 401, "Unauthorized", (("WWW-Authenticate", challenge),))
            self.auth_ok += 1
        if self.reject_event or request.header("Event") != "xcap-diff":
            return self._reply(request, 489, "Bad Event", (("Allow-Events", "presence"),))
        expires = int(request.header("Expires") or "3600")
        if self.min_expires is not None and 0 < expires < self.min_expires:
            return self._reply(
                request, 423, "Interval Too Brief", (("Min-Expires", str(self.min_expires)),)
            )
        match = request.header("SIP-If-Match")
        if match is not None and match not in self.etags:
            return self._reply(request, 412, "Conditional Request Failed")
        body = request.body or (self.etags.get(match, b"") if match else b"")
        if match is not None:
            del self.etags[match]
        if expires == 0:
            return self._reply(request, 200, "OK", (("Expires", "0"),))
        if self.expires_cap is not None:
            expires = min(expires, self.expires_cap)
        self._n += 1
        etag = f"e{self._n}"
        self.etags[etag] = body
        return self._reply(request, 200, "OK", (("SIP-ETag", etag), ("Expires", str(expires))))

    def _verify(self, request: SipRequest, value: str) -> bool:
        params = _auth_params(value)
        challenge = Challenge(realm=self.realm, nonce=self.nonce, algorithm="MD5", qop=("auth",))
        assert self.auth is not None
        expected = authorization(
            challenge,
            method=request.method,
            uri=params["uri"],
            username=self.auth[0],
            password=self.auth[1],
            cnonce=params["cnonce"],
            nc=int(params["nc"], 16),
        )
        return (
            params["username"] == self.auth[0]
            and params["uri"] == request.uri
            and _auth_params(expected)["response"] == params["response"]
        )

    @staticmethod
    def _reply(
        request: SipRequest,
        status: int,
        reason: str,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> SipResponse:
        headers = [("Via", v) for v in request.header_values("Via")]
        to = request.header("To") or ""
        headers += [
            ("From", request.header("From") or ""),
            ("To", to if ";tag=" in to else f"{to};tag=uas"),
            ("Call-ID", request.header("Call-ID") or ""),
            ("CSeq", request.header("CSeq") or ""),
            *extra,
        ]
        return SipResponse(status, reason, tuple(headers))


class _Udp(DatagramProtocol):
    def __init__(self, uas: FakeSipUas) -> None:
        self.uas = uas

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        message = parse_message(data)
        assert isinstance(message, SipRequest)
        response = self.uas.handle(message)
        if response is not None:
            self.transport.write(response.to_bytes(), addr)


class FakeUdpUas(FakeSipUas):
    """The UAS on a loopback UDP port (``port`` once ``start``ed)."""

    def start(self, reactor: Any) -> int:
        self._port = reactor.listenUDP(0, _Udp(self), interface="127.0.0.1")
        self.port: int = self._port.getHost().port
        return self.port

    def stop(self) -> Deferred[Any]:
        return self._port.stopListening() or succeed(None)


class _Stream(Protocol):
    def __init__(self, uas: FakeTcpUas) -> None:
        self.uas = uas
        self.reader = SipMessageReader()
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.uas.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.reader.feed(data)
        while (message := self.reader.next_message()) is not NEED_DATA:
            assert isinstance(message, SipRequest)
            response = self.uas.handle(message)
            if response is not None:
                self.transport.write(response.to_bytes())

    def connectionLost(self, reason: Any = None) -> None:
        self.uas.connections.remove(self)
        self.closed.callback(None)


class FakeTcpUas(FakeSipUas):
    """The UAS on a loopback TCP port; ``accepted`` counts connections."""

    def start(self, reactor: Any) -> int:
        self.connections: list[_Stream] = []
        self.accepted = 0

        def build() -> _Stream:
            self.accepted += 1
            return _Stream(self)

        self._port = reactor.listenTCP(0, Factory.forProtocol(build), interface="127.0.0.1")
        self.port: int = self._port.getHost().port
        return self.port

    def stop(self) -> Deferred[Any]:
        closing = [c.closed for c in self.connections]
        for c in self.connections:
            c.transport.abortConnection()
        return gatherResults([self._port.stopListening() or succeed(None), *closing])


@dataclass
class _Address:
    host: str
    port: int


class FakeDatagramTransport:
    """What ``SipUdpClient`` uses of a connected ``udp.Port``: records writes."""

    def __init__(self, local: tuple[str, int] = ("192.0.2.1", 5060)) -> None:
        self.written: list[bytes] = []
        self.connected_to: tuple[str, int] | None = None
        self.stopped = False
        self._local = local

    def connect(self, host: str, port: int) -> None:
        self.connected_to = (host, port)

    def write(self, data: bytes, addr: Any = None) -> None:
        self.written.append(data)

    def getHost(self) -> _Address:
        return _Address(*self._local)

    def stopListening(self) -> None:
        self.stopped = True
