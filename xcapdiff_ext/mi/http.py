"""MI over HTTP: ``mi_http`` (JSON-RPC, ``POST /mi``) and XML-RPC (``/RPC2``) (shell).

``MiHttpChannel`` implements ``transport.IMiChannel`` for ``mi_url`` forms
``http(s)://host:port/mi`` (``MiTransport.HTTP``) and ``xmlrpc:http(s)://host:port/RPC2``
(``MiTransport.XMLRPC``; the ``xmlrpc:`` prefix is the caller's to strip).  The codec
encodes and classifies; this module moves bytes:

- ``POST`` with ``Content-Type: application/json`` (mi_http) or ``text/xml`` (XML-RPC).
  mi_http drops ``text/plain`` and *hangs* on curl's form content type (MI.md), so the
  header is fixed here, never configurable.
- Calls wait in a ``FairQueue`` keyed by owner; at most ``concurrency`` requests are in
  flight.  mi_http has one HTTPD process and answers each async command after >= 500 ms,
  so more in flight buys nothing there: the default is 1.  Datagram or FIFO suit volume.
- Every request has ``timeout`` seconds (``Deferred.addTimeout``), covering connect,
  send and the whole body.  A timeout or a connection failure is a retryable
  ``TransportError``; an HTTP status other than 200 is ``HttpStatusError`` (retryable for
  5xx, 408, 429); a body above ``max_reply_bytes`` is ``codec.ReplyTooLarge`` (read is
  stopped there, the connection dropped).
- ``call()``'s Deferred can be cancelled: a queued call leaves the queue, an in-flight
  one cancels its HTTP request.  Cancellation fails it with ``CancelledError``.
- ``stop()`` cancels every call (``CancelledError``), later calls fail with a permanent
  ``TransportError``; it fires once nothing is in flight, after closing the cached
  connections of an agent this module built (``from_url``).

No global reactor: the caller passes ``reactor`` (``IReactorTime``) and an ``IAgent``
(``twisted.web.client.Agent``; like treq's ``HTTPClient(agent)``).  ``from_url`` builds
``Agent(reactor)`` with Twisted's default TLS verification for ``https``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import error as internet_error
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import client as web_client
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from ..errors import TransportError
from .codec import (
    DEFAULT_MAX_REPLY_BYTES,
    LocalProtocolError,
    MiProtocol,
    MiResult,
    MiTransport,
    PublishRequest,
    ReplyTooLarge,
    decode_reply,
    encode_request,
)
from .fairqueue import FairQueue
from .transport import IMiChannel

__all__ = ["CONTENT_TYPES", "HttpStatusError", "MiHttpChannel"]

CONTENT_TYPES: dict[MiTransport, bytes] = {
    MiTransport.HTTP: b"application/json",  # anything else hangs or is dropped (MI.md)
    MiTransport.XMLRPC: b"text/xml",
}

_USER_AGENT = b"xcapdiff-ext mi"


# Seen on a real OpenSIPS 3.6.8: httpd refuses request bodies over its
# receive_buf_size (default 1024 bytes; post_buf_size is the same for form data); a
# request a little over it gets no reply at all, a larger one HTTP 400 with an empty
# body.  Most xcap-diff bodies are larger than 1 KiB.
_POST_BUF_LIMIT = 1024
_POST_BUF_HINT = (
    "OpenSIPS's httpd refuses requests over its receive_buf_size (default 1024 bytes); "
    'set modparam("httpd", "receive_buf_size", 65536) or use mi_url udp:/fifo:'
)


class HttpStatusError(TransportError):
    """The MI's HTTP server answered a status other than 200 (``code``, ``phrase``)."""

    def __init__(self, code: int, phrase: str, *, url: str) -> None:
        retryable = code >= 500 or code in (408, 429)
        hint = {
            400: f": {_POST_BUF_HINT}",
            404: ": wrong path? mi_http serves /mi (its 'root'), mi_xmlrpc_ng /RPC2",
            405: ": mi_http answers 405 to anything but POST",
        }.get(code, "")
        super().__init__(f"{url}: HTTP {code} {phrase}{hint}", retryable=retryable)
        self.code, self.phrase = code, phrase


@implementer(IBodyProducer)
class _BytesProducer:
    """The request body in one write (``FileBodyProducer`` would use the global
    cooperator, hence the global reactor)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _CappedBody(Protocol):
    """Collects a response body up to ``limit`` bytes; more fails ``ReplyTooLarge``."""

    def __init__(self, limit: int, length: int | object, where: str) -> None:
        self._limit, self._length, self._where = limit, length, where
        self._parts: list[bytes] = []
        self._size = 0
        self._cancelled = False
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def connectionMade(self) -> None:
        length = self._length
        if length is not UNKNOWN_LENGTH and isinstance(length, int) and length > self._limit:
            self._too_large(length)

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._too_large(self._size)
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = web_client.ResponseDone) -> None:  # type: ignore[assignment]
        if self.finished.called:
            return
        if self._cancelled:
            self.finished.errback(CancelledError())  # addTimeout turns it into TimeoutError
        elif reason.check(web_client.ResponseDone, PotentialDataLoss):
            # PotentialDataLoss: no Content-Length, the body ended with the connection.
            self.finished.callback(b"".join(self._parts))
        else:
            self.finished.errback(
                Failure(TransportError(f"{self._where}: reply body lost: {reason.value!r}"))
            )

    def _too_large(self, size: int) -> None:
        self._parts.clear()
        self.finished.errback(
            Failure(ReplyTooLarge(f"{self._where}: reply of {size}+ bytes exceeds {self._limit}"))
        )
        self._abort()

    def _cancel(self, _: Deferred[bytes]) -> None:
        self._cancelled = True
        self._abort()

    def _abort(self) -> None:
        transport = self.transport
        if transport is None:
            return
        # Response bodies come through a TransportProxyProducer; stopProducing drops
        # the connection (there is no other way to skip the rest of a body).
        transport.stopProducing()  # type: ignore[attr-defined]


@dataclass(eq=False)
class _Call:
    request: PublishRequest
    owner: str
    data: bytes
    request_id: int | str | None
    result: Deferred[MiResult] = field(init=False)
    work: Deferred[Any] | None = None
    cancelled: bool = False


@implementer(IMiChannel)
class MiHttpChannel:
    """``pua_publish`` over HTTP POST: mi_http JSON-RPC or XML-RPC (module doc)."""

    def __init__(
        self,
        reactor: IReactorTime,
        agent: IAgent,
        url: str | bytes,
        *,
        protocol: MiProtocol | str = MiProtocol.JSONRPC,
        transport: MiTransport | str = MiTransport.HTTP,
        timeout: float = 10.0,
        concurrency: int = 1,
        new_id: Callable[[], int | str] | None = None,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.kind = MiTransport(transport)
        self.protocol = MiProtocol(protocol)
        if self.kind not in CONTENT_TYPES:
            raise LocalProtocolError(f"MiHttpChannel speaks HTTP or XMLRPC, not {self.kind}")
        if self.kind is MiTransport.HTTP and self.protocol is MiProtocol.LEGACY:
            raise LocalProtocolError("legacy MI over HTTP is XML-RPC: use the xmlrpc transport")
        raw = url.encode("ascii") if isinstance(url, str) else bytes(url)
        if not raw.lower().startswith((b"http://", b"https://")):
            raise LocalProtocolError(f"MI URL must be http:// or https://: {raw!r}")
        if not timeout > 0:
            raise LocalProtocolError(f"timeout must be > 0: {timeout!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise LocalProtocolError(f"concurrency must be an int >= 1: {concurrency!r}")
        self._reactor, self._agent, self._url = reactor, agent, raw
        self._where = raw.decode("ascii", "replace")
        self._timeout, self._concurrency = timeout, concurrency
        self._max_reply_bytes = max_reply_bytes
        self._new_id: Callable[[], int | str] = new_id or itertools.count(1).__next__
        self._queue: FairQueue[_Call] = FairQueue()
        self._in_flight: set[_Call] = set()
        self._stopped = False
        self._stopping: list[Deferred[None]] = []
        self._pool: web_client.HTTPConnectionPool | None = None
        self._headers = {
            b"content-type": [CONTENT_TYPES[self.kind]],
            b"user-agent": [_USER_AGENT],
        }

    @classmethod
    def from_url(cls, reactor: Any, url: str, **kwargs: Any) -> MiHttpChannel:
        """A channel with its own ``Agent(reactor)`` (non-persistent pool), closed by
        ``stop()``.  ``reactor`` must provide what ``Agent`` needs (TCP, TLS, time)."""
        pool = web_client.HTTPConnectionPool(reactor, persistent=False)
        channel = cls(reactor, web_client.Agent(reactor, pool=pool), url, **kwargs)
        channel._pool = pool
        return channel

    def __repr__(self) -> str:
        return (
            f"<MiHttpChannel {self.kind.value} {self._where} queued={len(self._queue)} "
            f"in_flight={len(self._in_flight)}>"
        )

    @property
    def pending(self) -> int:
        """Calls queued or in flight."""
        return len(self._queue) + len(self._in_flight)

    # ------------------------------------------------------------------ IMiChannel

    def call(self, request: PublishRequest, owner: str) -> Deferred[MiResult]:
        if self._stopped:
            return fail(TransportError(f"{self._where}: MI channel stopped", retryable=False))
        request_id = self._new_id() if self.kind is MiTransport.HTTP else None
        try:
            data = encode_request(
                request, protocol=self.protocol, transport=self.kind, request_id=request_id
            )
        except Exception:  # codec errors: BodyNotEncodable, LocalProtocolError
            return fail()
        call = _Call(request, owner, data, request_id)
        call.result = Deferred(lambda _: self._cancel(call))
        self._queue.push(owner, call)
        self._pump()
        return call.result

    def stop(self) -> Deferred[None]:
        self._stopped = True
        while (popped := self._queue.pop()) is not None:
            popped[1].result.cancel()
        for call in list(self._in_flight):
            call.result.cancel()
        done: Deferred[None] = Deferred()
        if self._in_flight:
            self._stopping.append(done)
        else:
            done.callback(None)
        pool = self._pool
        if pool is not None:
            done.addCallback(lambda _: pool.closeCachedConnections())
        # An aborted TCP connection reports connectionLost one reactor turn later.
        done.addCallback(lambda _: self._turn())
        return done

    # ------------------------------------------------------------------ internals

    def _turn(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._reactor.callLater(0, d.callback, None)
        return d

    def _cancel(self, call: _Call) -> None:
        if call.work is None:
            self._queue.remove(call.owner, call)
            return  # Deferred.cancel fails call.result with CancelledError
        call.cancelled = True
        call.work.cancel()

    def _pump(self) -> None:
        while not self._stopped and len(self._in_flight) < self._concurrency:
            popped = self._queue.pop()
            if popped is None:
                return
            self._start(popped[1])

    def _start(self, call: _Call) -> None:
        self._in_flight.add(call)
        headers = Headers(self._headers)
        work: Deferred[Any] = self._agent.request(
            b"POST", self._url, headers, _BytesProducer(call.data)
        )
        call.work = work
        work.addCallback(self._response)
        work.addCallback(self._decode, call)
        # Whatever cancelling the request produced (CancelledError, ResponseNeverReceived
        # wrapping it, ...) becomes a timeout when the timer fired.
        size = len(call.data)
        work.addTimeout(
            self._timeout,
            self._reactor,
            onTimeoutCancel=lambda result, timeout: self._timed_out(result, timeout, size),
        )
        work.addBoth(self._finished, call)

    def _response(self, response: IResponse) -> Deferred[bytes]:
        body = _CappedBody(self._max_reply_bytes, response.length, self._where)
        response.deliverBody(body)
        if response.code != 200:
            status = HttpStatusError(
                response.code, response.phrase.decode("latin-1", "replace"), url=self._where
            )

            def fail_status(_: object) -> Failure:
                return Failure(status)

            body.finished.addBoth(fail_status)  # read (capped) so the connection ends cleanly
        return body.finished

    def _timed_out(self, result: object, timeout: float, size: int = 0) -> Failure:
        if isinstance(result, Failure):
            result.trap(Exception)  # replaced by the timeout
        hint = f" ({size} bytes sent; {_POST_BUF_HINT})" if size > _POST_BUF_LIMIT else ""
        return Failure(
            TransportError(f"{self._where}: no reply within {timeout:g} s{hint}", retryable=True)
        )

    def _decode(self, data: bytes, call: _Call) -> MiResult:
        return decode_reply(
            data,
            request=call.request,
            protocol=self.protocol,
            transport=self.kind,
            request_id=call.request_id,
            max_reply_bytes=self._max_reply_bytes,
        )

    def _finished(self, outcome: object, call: _Call) -> None:
        self._in_flight.discard(call)
        call.work = None
        if call.cancelled:
            if isinstance(outcome, Failure):
                outcome.trap(Exception)  # consumed: the caller sees CancelledError
        elif isinstance(outcome, Failure):
            call.result.errback(self._transport_failure(outcome))
        else:
            call.result.callback(outcome)  # type: ignore[arg-type]
        if not self._in_flight and self._stopping:
            waiting, self._stopping = self._stopping, []
            for done in waiting:
                done.callback(None)
        self._pump()

    def _transport_failure(self, failure: Failure) -> Failure:
        """Every failure of the HTTP exchange as a ``TransportError``."""
        if failure.check(TransportError):
            return failure
        if failure.check(
            internet_error.TimeoutError,
            internet_error.ConnectError,
            internet_error.ConnectionLost,
            internet_error.ConnectionClosed,
            internet_error.DNSLookupError,
            web_client.ResponseFailed,
            web_client.ResponseNeverReceived,
            web_client.RequestTransmissionFailed,
            web_client.RequestNotSent,
            OSError,
        ):
            err = TransportError(f"{self._where}: {_describe(failure)}", retryable=True)
        else:
            return failure  # a bug here (LocalProtocolError, ...): keep its traceback
        return Failure(err)


def _describe(failure: Failure) -> str:
    value = failure.value
    reasons = getattr(value, "reasons", None)  # ResponseFailed & co wrap failures
    if reasons:
        inner = "; ".join(repr(reason.value) for reason in reasons)
        return f"{type(value).__name__}: {inner}"
    return repr(value)
