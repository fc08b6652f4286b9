"""``udp:<ip>:<port>``: ``pua_publish`` over OpenSIPS's ``mi_datagram`` (Twisted shell).

``MiDatagramChannel`` implements ``transport.IMiChannel``.  One request per datagram;
mi_datagram answers to the sender's address and port (MI.md, "Datagram").

Socket.  The UDP port is bound lazily, on the first ``call`` (``reactor.listenUDP(0, ...)``,
an ephemeral port on the loopback interface when the MI address is a loopback address,
otherwise on all interfaces of its family).  Datagrams from any other address than the
MI's are dropped.  The socket is deliberately NOT ``connect()``-ed: Twisted's poll and
epoll reactors treat the ``POLLERR`` an ICMP "port unreachable" raises on a connected UDP
socket as a lost connection and close the port, so OpenSIPS being down is seen as a
timeout (retryable), like any lost datagram.  ``mi_url`` must name an IP address (no
resolver here).

Matching.  JSON-RPC: every request gets a fresh id from ``new_id`` (default: a per-channel
counter starting at a random offset), and pending calls are keyed by it (like
``twisted.names.dns.DNSMixin.liveMessages``).  A reply with an id we are not waiting for
is dropped (WARNING on logger ``xcapdiff.mi``; DEBUG when it is the late duplicate answer
to a call that was already answered, the normal result of a retransmission).

Replies without an id (mi_datagram's plain-text ``400 Parse_error``, a JSON-RPC -32700 with
``id: null``) can only answer a datagram OpenSIPS could not parse.  Ours always parse (the
codec writes compact JSON and refuses anything above 65457 bytes), so such a reply means a
truncated datagram (an mi_datagram built with a smaller buffer) or a foreign sender.  It is
given to the pending call when exactly one is pending (its decode then explains the 400);
with several pending it cannot be attributed, and failing a guessed one with a permanent
error would drop an innocent publication, so it is dropped with a WARNING and the calls
run into their timeout.

Legacy (1.x/2.x text protocol) replies carry no id: then only one request is outstanding
at a time, the others wait in a FIFO queue, and any reply belongs to the outstanding one.

Timeout and retransmission.  UDP loses datagrams in either direction.  A call sends the
SAME datagram (same bytes, same id) up to ``attempts`` times, every ``timeout / attempts``
seconds, and fails with a retryable ``TransportError("no reply from udp:...")`` when
``timeout`` has passed without a reply.  The timeout counts from the first send (a queued
legacy call's clock starts when it is sent).

Why retransmitting ``pua_publish`` is safe: pua keeps ONE publication per (presentity,
event) and a call without etag reuses the ETag pua stored (MI.md, "Semantics of repeated
calls").  If the first datagram did arrive and only the reply was lost, the duplicate is a
second modification with the same body: subscribers get one more NOTIFY with the same
content (RFC 5874 clients see the same etags again and apply nothing new) and pua hands
out a newer ETag, which is the one we keep.  A duplicate can never create a second
publication.  A retransmitted request that carries an etag pua has already replaced gets
``418 Wrong ETag``; ``MiPublishTransport`` then resends once without etag, which is again
a plain modification.  A removal (``expires`` 0) repeated after it succeeded gets ``500
MI/PUBLISH failed``, which the codec reads as "already removed".  mi_datagram's id is
echoed, not deduplicated; a late reply to an earlier attempt carries the same id and
answers the call just as well.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from ..errors import TransportError
from .codec import (
    DEFAULT_MAX_REPLY_BYTES,
    MiProtocol,
    MiResult,
    MiTransport,
    PublishRequest,
    decode_reply,
    encode_request,
    reply_id,
)
from .transport import IMiChannel

__all__ = ["MiDatagramChannel"]

_log = logging.getLogger("xcapdiff.mi")

_ANSWERED_MEMORY = 1024  # ids of answered calls remembered to recognise late duplicates


@dataclass(eq=False)
class _Call:
    key: int | str | None  # the JSON-RPC id; None for legacy
    request: PublishRequest
    owner: str
    data: bytes
    deferred: Deferred[MiResult]
    sent: int = 0
    timer: DelayedCall | None = None
    deadline: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class _Protocol(DatagramProtocol):
    def __init__(self, channel: MiDatagramChannel) -> None:
        self._channel = channel

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._channel._received(datagram, addr)


@implementer(IMiChannel)
class MiDatagramChannel:
    """``pua_publish`` over mi_datagram; see the module doc for matching and retries."""

    kind = MiTransport.DATAGRAM

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        *,
        protocol: MiProtocol = MiProtocol.JSONRPC,
        timeout: float = 10.0,
        attempts: int = 3,
        new_id: Callable[[], int | str] | None = None,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        """``reactor`` provides IReactorUDP and IReactorTime; ``host`` is an IP address."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"udp: mi_url needs an IP address, not {host!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"udp: port out of range: {port!r}")
        if timeout <= 0 or attempts < 1:
            raise ValueError("timeout must be > 0 and attempts >= 1")
        self._reactor = reactor
        self._host, self._port = str(address), port
        self._interface = (
            str(address) if address.is_loopback else ("::" if address.version == 6 else "")
        )
        self._protocol = MiProtocol(protocol)
        self._timeout, self._attempts = float(timeout), attempts
        self._max_reply_bytes = max_reply_bytes
        if new_id is None:
            counter = itertools.count(random.Random().randrange(1, 2**31))
            new_id = counter.__next__
        self._new_id = new_id
        self._udp: Any = None
        self._live: dict[int | str | None, _Call] = {}  # sent, waiting for a reply
        self._queue: collections.deque[_Call] = collections.deque()  # legacy: not yet sent
        self._answered: collections.OrderedDict[int | str, None] = collections.OrderedDict()
        self._stopped = False

    @property
    def address(self) -> str:
        return f"udp:{self._host}:{self._port}"

    # ------------------------------------------------------------------ IMiChannel

    def call(self, request: PublishRequest, owner: str) -> Deferred[MiResult]:
        if self._stopped:
            return _failed(TransportError(f"MI channel {self.address} is stopped"))
        try:
            key: int | str | None = None
            if self._protocol is MiProtocol.JSONRPC:
                key = self._fresh_id()
            data = encode_request(
                request, protocol=self._protocol, transport=MiTransport.DATAGRAM, request_id=key
            )  # raises RequestTooLarge above 65457 bytes: nothing is sent
            self._listen()
        except TransportError as err:
            return _failed(err)
        call = _Call(key, request, owner, data, Deferred(lambda d: self._cancel(call)))
        if self._protocol is MiProtocol.LEGACY and (self._live or self._queue):
            self._queue.append(call)  # no ids: one outstanding request at a time
        else:
            self._start(call)
        return call.deferred

    def stop(self) -> Deferred[None]:
        """Cancel every pending call, close the socket; fires when the port is closed."""
        self._stopped = True
        for call in [*self._queue, *self._live.values()]:
            call.deferred.cancel()
        udp, self._udp = self._udp, None
        if udp is None:
            return succeed(None)
        done = udp.stopListening()
        if isinstance(done, Deferred):
            return done.addCallback(lambda _: None)
        return succeed(None)

    # ------------------------------------------------------------------ internals

    def _fresh_id(self) -> int | str:
        for _ in range(100):
            key = self._new_id()
            if isinstance(key, int) and not isinstance(key, bool):
                key = key % (2**53)  # JSON numbers stay exact
            if key not in self._live:
                return key
        raise TransportError("new_id keeps returning ids of pending calls", retryable=False)

    def _listen(self) -> None:
        if self._udp is None:
            self._udp = self._reactor.listenUDP(0, _Protocol(self), interface=self._interface)

    def _start(self, call: _Call) -> None:
        self._live[call.key] = call
        call.deadline = self._reactor.seconds() + self._timeout
        self._send(call)

    def _send(self, call: _Call) -> None:
        call.sent += 1
        interval = self._timeout / self._attempts
        if call.sent >= self._attempts:
            interval = max(0.0, call.deadline - self._reactor.seconds())
        call.timer = self._reactor.callLater(interval, self._expired, call)
        if self._udp is not None:
            try:
                self._udp.write(call.data, (self._host, self._port))
            except (OSError, MessageLengthError) as err:
                self._finish(call, TransportError(f"cannot send to {self.address}: {err}"))

    def _expired(self, call: _Call) -> None:
        call.timer = None
        if call.sent < self._attempts:
            _log.debug("MI %s: no reply to id %r yet, retransmitting", self.address, call.key)
            self._send(call)
            return
        self._finish(
            call,
            TransportError(
                f"no reply from {self.address} to {call.request.describe} "
                f"after {call.sent} datagrams in {self._timeout:g}s (is mi_datagram listening?)",
                retryable=True,
            ),
        )

    def _received(self, datagram: bytes, addr: Any) -> None:
        host, port = addr[0], addr[1]
        if port != self._port or ipaddress.ip_address(host) != ipaddress.ip_address(self._host):
            _log.warning("xcap-diff: MI %s: datagram from %s:%s dropped", self.address, host, port)
            return
        if self._protocol is MiProtocol.LEGACY:
            call = next(iter(self._live.values()), None)
            if call is None:
                _log.warning(
                    "xcap-diff: MI %s: reply with no request outstanding dropped", self.address
                )
                return
        else:
            key = reply_id(datagram, max_reply_bytes=self._max_reply_bytes)
            if key is None:
                if len(self._live) != 1:
                    _log.warning(
                        "xcap-diff: MI %s: reply without id (%r) with %d calls pending dropped: "
                        "OpenSIPS could not parse a datagram (is mi_datagram's buffer smaller "
                        "than our requests?)",
                        self.address,
                        datagram[:80],
                        len(self._live),
                    )
                    return
                call = next(iter(self._live.values()))
            else:
                found = self._live.get(key)
                if found is None:
                    level = logging.DEBUG if key in self._answered else logging.WARNING
                    _log.log(level, "MI %s: reply with unknown id %r dropped", self.address, key)
                    return
                call = found
        try:
            result: MiResult | TransportError = decode_reply(
                datagram,
                request=call.request,
                protocol=self._protocol,
                transport=MiTransport.DATAGRAM,
                request_id=call.key,
                max_reply_bytes=self._max_reply_bytes,
            )
        except TransportError as err:
            result = err
        self._finish(call, result)

    def _forget(self, call: _Call) -> bool:
        """Remove ``call`` from every table; False when it was not pending any more."""
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        call.timer = None
        if self._live.get(call.key) is call:
            del self._live[call.key]
            if call.key is not None:
                self._answered[call.key] = None
                while len(self._answered) > _ANSWERED_MEMORY:
                    self._answered.popitem(last=False)
        elif call in self._queue:
            self._queue.remove(call)
        else:
            return False
        if self._queue and not self._live and not self._stopped:
            self._start(self._queue.popleft())
        return True

    def _finish(self, call: _Call, result: MiResult | TransportError) -> None:
        if not self._forget(call):
            return
        if isinstance(result, TransportError):
            call.deferred.errback(result)
        else:
            call.deferred.callback(result)

    def _cancel(self, call: _Call) -> None:
        self._forget(call)  # the Deferred then fails with CancelledError


def _failed(err: TransportError) -> Deferred[MiResult]:
    d: Deferred[MiResult] = Deferred()
    d.errback(err)
    return d
