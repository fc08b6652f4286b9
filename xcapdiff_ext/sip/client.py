"""The Twisted shell around ``PublishTransaction`` (STYLE §5): UDP and stream (TCP/TLS).

Both clients decide nothing: they feed bytes and time to the transaction, do what its
outputs say, keep exactly one ``DelayedCall`` per pending transaction armed at
``next_deadline()``, and key pending work by the top-Via branch (like
``DNSMixin.liveMessages``).

- ``run(tx)`` starts ``tx`` and returns a ``Deferred[SipResponse]`` firing with the final
  response, or failing with ``TransactionTimeout`` (a retryable ``TransportError``) on
  ``TimedOut`` (Timer F, a lost connection, an ICMP error).  Cancelling it abandons the
  transaction (its timer is cancelled, late responses are dropped).
- ``ready()`` fires with the local ``(host, port)`` to put in the Via sent-by: the
  socket's (UDP, a connected socket, so the routed source address) or the
  connection's (TCP/TLS; the stream client connects, or reuses its open connection).
- Bytes that are not a SIP message, and requests, are dropped with a WARNING on the
  ``xcapdiff.sip`` logger.  A stream that breaks the grammar is closed (the reader
  cannot resynchronise); its pending transactions fail and the next ``ready()``
  reconnects.
- ``stop()`` fails what is pending, cancels every timer and closes the socket or
  connection; its Deferred fires once nothing is left.

Nothing here reads the global reactor: the constructors take it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from ..errors import RemoteProtocolError, TransportError
from .message import NEED_DATA, SipMessageReader, SipRequest, SipResponse, parse_message
from .transaction import Final, PublishTransaction, TimedOut, Transmit, TxOutput

__all__ = ["CONNECTION_LOST", "SipStreamClient", "SipUdpClient", "TransactionTimeout"]

_log = logging.getLogger("xcapdiff.sip")

CONNECTION_LOST = "connection lost"  # the start of TransactionTimeout.reason after a loss


class TransactionTimeout(TransportError):
    """No final response for ``branch``: Timer F fired or the transport failed."""

    retryable = True

    def __init__(self, branch: str, reason: str) -> None:
        super().__init__(f"SIP transaction {branch}: {reason}")
        self.branch, self.reason = branch, reason


@dataclass
class _Pending:
    tx: PublishTransaction
    done: Deferred[SipResponse]
    timer: Any = None  # the IDelayedCall armed at next_deadline()


class _TransactionUser:
    """Pending transactions keyed by branch, one timer each (shared by both clients)."""

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor: Any = reactor  # Any: zope interfaces are opaque to mypy here
        self._pending: dict[str, _Pending] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _send(self, data: bytes) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self, tx: PublishTransaction) -> Deferred[SipResponse]:
        """Start ``tx``; fires with its final response (see the module docstring)."""
        branch = tx.branch
        if branch in self._pending:
            raise TransportError(f"branch {branch} is already pending", retryable=False)
        pending = _Pending(tx, Deferred(lambda _d: self._abandon(branch)))
        self._pending[branch] = pending
        self._drive(pending, tx.start(self._reactor.seconds()))
        return pending.done

    def _on_response(self, response: SipResponse, source: object) -> None:
        pending = self._pending.get(response.branch or "")
        if pending is None:
            _log.debug("dropped a %d for no pending branch from %s", response.status, source)
            return
        self._drive(pending, pending.tx.receive_response(response, self._reactor.seconds()))

    def _on_timer(self, pending: _Pending) -> None:
        pending.timer = None
        self._drive(pending, pending.tx.handle_timer(self._reactor.seconds()))

    def _fail_all(self, reason: str) -> None:
        for pending in list(self._pending.values()):
            now = self._reactor.seconds()
            self._drive(pending, pending.tx.transport_failed(now, reason=reason))

    def _drive(self, pending: _Pending, outputs: list[TxOutput]) -> None:
        branch = pending.tx.branch
        for out in outputs:
            if isinstance(out, Transmit):
                if not self._send(out.data):
                    outputs = pending.tx.transport_failed(
                        self._reactor.seconds(), reason="not connected"
                    )
                    self._drive(pending, outputs)
                    return
            elif isinstance(out, Final):
                pending.done.callback(out.response)
            elif isinstance(out, TimedOut):
                pending.done.errback(TransactionTimeout(branch, out.reason))
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        pending.timer = None
        if self._pending.get(branch) is not pending:
            return  # abandoned (cancelled) while its outputs ran
        deadline = pending.tx.next_deadline()
        if deadline is None:
            del self._pending[branch]
        else:
            delay = max(0.0, deadline - self._reactor.seconds())
            pending.timer = self._reactor.callLater(delay, self._on_timer, pending)

    def _abandon(self, branch: str) -> None:
        pending = self._pending.pop(branch, None)
        if pending is not None and pending.timer is not None and pending.timer.active():
            pending.timer.cancel()

    def _stop_pending(self) -> None:
        for branch, pending in list(self._pending.items()):
            self._abandon(branch)
            if not pending.done.called:
                pending.done.errback(TransactionTimeout(branch, "the SIP client was stopped"))


def _drop(what: str, source: object, err: Exception) -> None:
    _log.warning("xcap-diff: dropped %s from %s: %s", what, source, err)


class SipUdpClient(_TransactionUser, DatagramProtocol):
    """Client transactions over one UDP socket connected to ``peer`` (an IP address).

    The owner listens (``reactor.listenUDP(0, client, interface=...)``); ``startProtocol``
    connects the socket, so ICMP errors fail pending transactions at once."""

    def __init__(self, reactor: IReactorTime, peer: tuple[str, int]) -> None:
        _TransactionUser.__init__(self, reactor)
        self._peer = peer

    def startProtocol(self) -> None:
        transport: Any = self.transport
        transport.connect(*self._peer)

    def ready(self) -> Deferred[tuple[str, int]]:
        """The local (host, port) of the socket, for the Via sent-by."""
        transport: Any = self.transport
        host = transport.getHost()
        return succeed((host.host, host.port))

    def _send(self, data: bytes) -> bool:
        transport: Any = self.transport
        if transport is None:
            return False
        transport.write(data)
        return True

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            message = parse_message(data)
        except RemoteProtocolError as err:
            _drop("a datagram", addr, err)
            return
        if isinstance(message, SipRequest):
            _log.warning(
                "xcap-diff: dropped a %s request from %s: this is a client", message.method, addr
            )
            return
        self._on_response(message, addr)

    def connectionRefused(self) -> None:
        self._fail_all(f"ICMP: {self._peer[0]}:{self._peer[1]} refused the datagram")

    def stop(self) -> Deferred[None]:
        """Fail what is pending, cancel every timer, close the socket."""
        self._stop_pending()
        transport: Any = self.transport
        self.transport = None
        if transport is None:
            return succeed(None)
        return maybeDeferred(transport.stopListening).addCallback(lambda _: None)


class _StreamProtocol(Protocol):
    def __init__(self, client: SipStreamClient) -> None:
        self._client = client
        self._reader = SipMessageReader()
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._reader.feed(data)
        transport: Any = self.transport
        peer = transport.getPeer()
        while True:
            try:
                message = self._reader.next_message()
            except RemoteProtocolError as err:
                _drop("a stream message", peer, err)
                transport.abortConnection()
                return
            if message is NEED_DATA:
                return
            if isinstance(message, SipRequest):
                _log.warning(
                    "xcap-diff: dropped a %s request from %s: this is a client",
                    message.method,
                    peer,
                )
                continue
            self._client._on_response(message, peer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._client._lost(self, reason)
        self.closed.callback(None)


class SipStreamClient(_TransactionUser):
    """Client transactions over one reused stream connection (TCP, or TLS: pass a
    ``wrapClientTLS`` endpoint) to one next hop; reconnects after a loss."""

    def __init__(self, reactor: IReactorTime, endpoint: IStreamClientEndpoint) -> None:
        super().__init__(reactor)
        self._endpoint: Any = endpoint
        self._protocol: _StreamProtocol | None = None
        self._connecting: Deferred[_StreamProtocol] | None = None
        self._waiting: list[Deferred[tuple[str, int]]] = []
        self._stopped = False

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def ready(self) -> Deferred[tuple[str, int]]:
        """Connect (or reuse the connection); fires with its local (host, port)."""
        if self._stopped:
            return fail(TransportError("the SIP client was stopped"))
        if self._protocol is not None:
            return succeed(self._local(self._protocol))
        d: Deferred[tuple[str, int]] = Deferred(self._waiting.remove)
        self._waiting.append(d)
        if self._connecting is None:
            factory = Factory.forProtocol(lambda: _StreamProtocol(self))
            self._connecting = self._endpoint.connect(factory)
            self._connecting.addCallbacks(self._connected, self._connect_failed)
        return d

    @staticmethod
    def _local(protocol: _StreamProtocol) -> tuple[str, int]:
        transport: Any = protocol.transport
        host = transport.getHost()
        return (host.host, host.port)

    def _connected(self, protocol: _StreamProtocol) -> None:
        self._connecting = None
        self._protocol = protocol
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self._local(protocol))

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        waiting, self._waiting = self._waiting, []
        if isinstance(failure.value, CancelledError) and self._stopped:
            error = TransportError("the SIP client was stopped")
        else:
            error = TransportError(f"cannot connect: {failure.getErrorMessage()}")
        for d in waiting:
            d.errback(error)

    def _send(self, data: bytes) -> bool:
        if self._protocol is None:
            return False
        transport: Any = self._protocol.transport
        transport.write(data)
        return True

    def _lost(self, protocol: _StreamProtocol, reason: Failure) -> None:
        if self._protocol is protocol:
            self._protocol = None
            self._fail_all(f"{CONNECTION_LOST}: {reason.getErrorMessage()}")

    def stop(self) -> Deferred[None]:
        """Fail what is pending, cancel every timer, close the connection."""
        self._stopped = True
        self._stop_pending()
        if self._connecting is not None:
            self._connecting.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is None:
            return succeed(None)
        transport: Any = protocol.transport
        transport.loseConnection()
        return protocol.closed
