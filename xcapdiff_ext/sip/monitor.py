"""A small SIP event state compositor for xcap-diff (shell; RFC 3903, RFC 5874).

``PublishMonitor`` answers PUBLISH over UDP (``udp_protocol()``) and TCP
(``tcp_factory()``), both sharing one ESC state: publications per (AOR of the
Request-URI, event package), keyed by SIP-ETag, each with an expiry taken from
``reactor.seconds()`` (checked lazily on every request: no timers).

* PUBLISH with ``Event: xcap-diff`` (case-insensitive, parameters ignored):
  no SIP-If-Match → a new publication (a body is required); a known SIP-If-Match
  → modify (body) or refresh (no body); an unknown or expired one → 412;
  ``Expires: 0`` → removal.  Every success is a 200 OK with a fresh SIP-ETag
  and the granted Expires.  An initial PUBLISH with ``Expires: 0`` (OpenXCAP
  3.2's one-shot style) is answered 200 and reported, but nothing is kept.
* Any other event package → 489 Bad Event with ``Allow-Events: xcap-diff``.
* OPTIONS → 200 OK; ACK → nothing; any other method → 405 with ``Allow``.
* A request that parses but lacks a mandatory header → 400.  Bytes that are
  not SIP are dropped (UDP) or close the connection (TCP).
* A retransmitted request (same top Via branch, Call-ID and CSeq, within
  Timer J = 32 s) gets the same response again, not a second publication.

Every body received (initial or modify) is reported once to ``on_publication``
as a frozen ``Received`` record, which says whether the body is a valid
xcap-diff document: it parses with ``parse_xcap_diff`` and validates against
the RFC 5874 schema shipped in ``xcapdiff_ext/schemas/``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lxml import etree
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import RemoteProtocolError, XmlInputError
from ..xcapdiff import MEDIA_TYPE, parse_xcap_diff
from ..xmlsafe import parse_document
from .message import NEED_DATA, SipMessageReader, SipRequest, SipResponse, parse_message

__all__ = ["ALLOW", "EVENT", "PublishMonitor", "Received", "validate_xcap_diff"]

EVENT: Final = "xcap-diff"
ALLOW: Final = "PUBLISH, OPTIONS"
DEFAULT_EXPIRES: Final = 3600
MAX_EXPIRES: Final = 86400
TIMER_J: Final = 32.0  # 64 * T1: how long a UDP server transaction absorbs retransmissions
_SCHEMA_DIR: Final = Path(__file__).resolve().parent.parent / "schemas"
_MANDATORY: Final = ("Via", "From", "To", "Call-ID", "CSeq")
_schema_cache: list[etree.XMLSchema] = []
_log = Logger()


@dataclass(frozen=True, slots=True)
class Received:
    """One xcap-diff body a publisher sent us (initial publication or modification)."""

    time: float  # reactor.seconds() when it arrived (the epoch on the real reactor)
    source: tuple[str, int]  # the peer's (host, port)
    transport: str  # "udp" or "tcp"
    aor: str  # the Request-URI: the presentity whose state this is
    etag: str  # the SIP-ETag we granted for it
    expires: int  # the Expires we granted (0: not kept)
    body: bytes  # exactly as received
    valid: bool  # parses with parse_xcap_diff and validates against the RFC 5874 XSD
    problem: str | None  # why not, when not valid
    kind: str = "initial"  # "initial" or "modify"


def _schema() -> etree.XMLSchema:
    if not _schema_cache:
        # patch-ops.xsd builds its patterns from an internal DTD subset: entities must
        # be expanded; nothing is ever fetched (no_network, no external DTD).
        parser = etree.XMLParser(no_network=True, resolve_entities=True, load_dtd=False)
        tree = etree.parse(str(_SCHEMA_DIR / "xcap-diff.local.xsd"), parser)
        _schema_cache.append(etree.XMLSchema(tree))
    return _schema_cache[0]


def validate_xcap_diff(body: bytes) -> tuple[bool, str | None]:
    """(valid, problem): hardened parse, RFC 5874 schema, then ``parse_xcap_diff``."""
    try:
        tree = parse_document(body, where="body")
    except XmlInputError as err:
        return False, str(err)
    schema = _schema()
    if not schema.validate(tree):
        errors = list(schema.error_log)
        error = errors[0] if errors else None
        where = f"line {error.line}: " if error is not None and error.line else ""
        detail = error.message if error is not None else "not valid"
        return False, f"schema: {where}{detail}"
    try:
        parse_xcap_diff(body)
    except (XmlInputError, ValueError) as err:
        return False, str(err)
    return True, None


@dataclass(slots=True)
class _Publication:
    key: tuple[str, str]  # (aor, event)
    expires_at: float


def _event_package(value: str | None) -> str | None:
    if value is None:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def _aor(uri: str) -> str:
    """The Request-URI without URI parameters or headers (the presentity)."""
    return uri.split(";", 1)[0].split("?", 1)[0]


class PublishMonitor:
    """An RFC 3903 ESC for the xcap-diff event package that reports what it receives."""

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        on_publication: Callable[[Received], None],
        new_etag: Callable[[], str] | None = None,
        min_expires: int = 0,
        max_expires: int = MAX_EXPIRES,
    ) -> None:
        self._reactor: Any = reactor  # typed above; Any here: zope methods vs mypy
        self._on_publication = on_publication
        self._new_etag = new_etag or (lambda: secrets.token_hex(8))
        self._min_expires = min_expires
        self._max_expires = max_expires
        self._publications: dict[str, _Publication] = {}  # keyed by SIP-ETag
        self._answered: dict[tuple[str, str, str], tuple[float, SipResponse]] = {}
        self._connections: set[_MonitorStream] = set()

    # ------------------------------------------------------------------ introspection

    def publications(self) -> dict[str, tuple[str, str, float]]:
        """Live publications: SIP-ETag → (aor, event, expires_at)."""
        self._purge(self._reactor.seconds())
        return {e: (*p.key, p.expires_at) for e, p in self._publications.items()}

    # ------------------------------------------------------------------ listeners

    def udp_protocol(self) -> DatagramProtocol:
        """A protocol for ``reactor.listenUDP(port, protocol, interface=host)``."""
        return _MonitorDatagram(self)

    def tcp_factory(self) -> Factory:
        """A factory for ``reactor.listenTCP(port, factory, interface=host)``."""
        return _MonitorFactory(self)

    def stop(self) -> Deferred[None]:
        """Close every open TCP connection; fires once they are all gone.  (The
        listening ports belong to the caller: stop them with ``stopListening``.)"""
        waits = [c.close() for c in list(self._connections)]
        if not waits:
            return succeed(None)
        d = gatherResults(waits)
        return d.addCallback(lambda _: None)

    # ------------------------------------------------------------------ the ESC

    def handle(
        self, message: SipRequest | SipResponse, source: tuple[str, int], transport: str
    ) -> SipResponse | None:
        """The response to send back for ``message`` (None: send nothing)."""
        if not isinstance(message, SipRequest) or message.method == "ACK":
            return None
        now = self._reactor.seconds()
        self._purge(now)
        key = self._transaction_key(message)
        if key is not None and key in self._answered:
            return self._answered[key][1]
        response = self._respond(message, now, source, transport)
        if key is not None:
            self._answered[key] = (now + TIMER_J, response)
        return response

    def _transaction_key(self, request: SipRequest) -> tuple[str, str, str] | None:
        branch, call_id, cseq = request.branch, request.call_id, request.header("CSeq")
        if not branch or not branch.startswith("z9hG4bK") or call_id is None or cseq is None:
            return None
        return branch, call_id, cseq

    def _purge(self, now: float) -> None:
        for etag in [e for e, p in self._publications.items() if p.expires_at <= now]:
            del self._publications[etag]
        for key in [k for k, (until, _) in self._answered.items() if until <= now]:
            del self._answered[key]

    def _respond(
        self, request: SipRequest, now: float, source: tuple[str, int], transport: str
    ) -> SipResponse:
        missing = [h for h in _MANDATORY if request.header(h) is None]
        if missing:
            return _reply(request, 400, f"Missing {missing[0]}")
        cseq = request.cseq
        if cseq is None or cseq[1] != request.method:
            return _reply(request, 400, "Bad CSeq")
        if request.method == "OPTIONS":
            return _reply(
                request,
                200,
                "OK",
                [("Allow", ALLOW), ("Allow-Events", EVENT), ("Accept", MEDIA_TYPE)],
            )
        if request.method != "PUBLISH":
            return _reply(request, 405, "Method Not Allowed", [("Allow", ALLOW)])
        return self._publish(request, now, source, transport)

    def _publish(
        self, request: SipRequest, now: float, source: tuple[str, int], transport: str
    ) -> SipResponse:
        event = _event_package(request.header("Event"))
        if event != EVENT:
            return _reply(request, 489, "Bad Event", [("Allow-Events", EVENT)])
        raw_expires = request.header("Expires")
        if raw_expires is None:
            expires = DEFAULT_EXPIRES
        elif raw_expires.strip().isdigit() and len(raw_expires.strip()) <= 10:
            expires = int(raw_expires)
        else:
            return _reply(request, 400, "Bad Expires")
        if 0 < expires < self._min_expires:
            return _reply(
                request, 423, "Interval Too Brief", [("Min-Expires", str(self._min_expires))]
            )
        expires = min(expires, self._max_expires)
        body = request.body
        if body:
            content_type = (request.header("Content-Type") or "").split(";", 1)[0].strip()
            if content_type.lower() != MEDIA_TYPE:
                return _reply(request, 415, "Unsupported Media Type", [("Accept", MEDIA_TYPE)])
        aor = _aor(request.uri)
        if_match = request.header("SIP-If-Match")
        if if_match is None:
            if not body:
                return _reply(request, 400, "Initial PUBLISH Without Body")
            kind = "initial"
        else:
            old = self._publications.get(if_match)
            if old is None or old.key != (aor, EVENT):
                return _reply(request, 412, "Conditional Request Failed")
            del self._publications[if_match]
            if expires == 0:
                return _reply(request, 200, "OK", [("SIP-ETag", if_match), ("Expires", "0")])
            kind = "modify"
        etag = self._new_etag()
        if expires > 0:
            self._publications[etag] = _Publication((aor, EVENT), now + expires)
        if body:
            valid, problem = validate_xcap_diff(body)
            received = Received(
                now, source, transport, aor, etag, expires, body, valid, problem, kind
            )
            try:
                self._on_publication(received)
            except Exception:
                _log.failure("xcapdiff monitor: on_publication failed")
        return _reply(request, 200, "OK", [("SIP-ETag", etag), ("Expires", str(expires))])


def _reply(
    request: SipRequest, status: int, reason: str, extra: list[tuple[str, str]] | None = None
) -> SipResponse:
    """RFC 3261 §8.2.6.2: Via (all, in order), From, To (+ tag), Call-ID, CSeq copied."""
    headers: list[tuple[str, str]] = [("Via", v) for v in request.header_values("Via")]
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.header(name)
        if value is None:
            continue
        if name == "To" and "tag" not in _to_params(value):
            value = f"{value};tag={secrets.token_hex(6)}"
        headers.append((name, value))
    headers.append(("Server", "xcapdiff-monitor"))
    headers.extend(extra or ())
    return SipResponse(status, reason, tuple(headers))


def _to_params(value: str) -> set[str]:
    """Parameter names of a To header, outside its <URI> (whose params are the URI's)."""
    tail = value.rsplit(">", 1)[1] if ">" in value else value
    return {p.split("=", 1)[0].strip().lower() for p in tail.split(";")[1:]}


class _MonitorDatagram(DatagramProtocol):
    def __init__(self, monitor: PublishMonitor) -> None:
        self._monitor = monitor

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not datagram.strip(b"\r\n"):
            return  # keep-alive
        try:
            message = parse_message(datagram)
        except RemoteProtocolError as err:
            _log.info(
                "xcapdiff monitor: dropped a datagram from {host}:{port}: {err}",
                host=addr[0],
                port=addr[1],
                err=err,
            )
            return
        source = (str(addr[0]), int(addr[1]))
        response = self._monitor.handle(message, source, "udp")
        transport: Any = self.transport
        if response is not None and transport is not None:
            transport.write(response.to_bytes(), addr)


class _MonitorStream(Protocol):
    def __init__(self, monitor: PublishMonitor) -> None:
        self._monitor = monitor
        self._reader = SipMessageReader()
        self._closed: list[Deferred[None]] = []
        self._gone = False

    def connectionMade(self) -> None:
        self._monitor._connections.add(self)

    def dataReceived(self, data: bytes) -> None:
        transport: Any = self.transport
        peer = transport.getPeer()
        source = (str(getattr(peer, "host", "?")), int(getattr(peer, "port", 0)))
        self._reader.feed(data)
        while True:
            try:
                message = self._reader.next_message()
            except RemoteProtocolError as err:
                _log.info(
                    "xcapdiff monitor: closing tcp from {host}:{port}: {err}",
                    host=source[0],
                    port=source[1],
                    err=err,
                )
                transport.loseConnection()
                return
            if message is NEED_DATA:
                return
            response = self._monitor.handle(message, source, "tcp")
            if response is not None:
                transport.write(response.to_bytes())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone = True
        self._monitor._connections.discard(self)
        waiting, self._closed = self._closed, []
        for d in waiting:
            d.callback(None)

    def close(self) -> Deferred[None]:
        if self._gone:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        transport: Any = self.transport
        transport.loseConnection()
        return d


class _MonitorFactory(Factory):
    def __init__(self, monitor: PublishMonitor) -> None:
        self._monitor = monitor

    def buildProtocol(self, addr: Any) -> Protocol:
        proto = _MonitorStream(self._monitor)
        proto.factory = self
        return proto
