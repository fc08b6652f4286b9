"""``SipPublishTransport``: ``IPublishTransport`` over direct SIP PUBLISH (issue 5).

One ``sip.publication.Publication`` state machine per owner (AOR); each request it
builds runs in a ``PublishTransaction`` through a ``sip.client`` client, and the final
response goes back into ``Publication.receive`` until it says ``Published``/``Removed``
or ``Failed`` (``SendAgain`` — 412 recovery, 423, 401/407 digest — is followed).

Decisions:

- The next hop of one ``SipPublishTransport`` is fixed: ``(transport, host, port)`` with
  transport ``udp``, ``tcp`` or ``tls``.  ``from_settings`` takes it from ``sip_proxy``
  (a proxy without a port uses 5060, 5061 for TLS, without an SRV lookup); with an
  empty ``sip_proxy`` and a DNS resolver it returns a ``sip.locate``
  ``LocatingPublishTransport`` that finds each owner's next hop by RFC 3263.
- UDP: a request larger than 1300 bytes (RFC 3261 §18.1.1, unknown path MTU) goes over
  TCP to the same host and port instead; the Via is rewritten to the transport used.
  The Via sent-by is the local address of the socket or connection used.
- One operation per owner at a time (a ``DeferredLock``); connections are reused per
  next hop and reopened after a loss.  A request whose reused connection is lost before
  any response is sent once more (same branch) over a new connection.
- ``Publication.etag`` from the publisher: None means "start afresh" (a new state
  machine, an initial PUBLISH); an etag we hold means a modify with SIP-If-Match; an
  etag we do not hold (we restarted) also gives an initial PUBLISH.
- Refresh: a ``DelayedCall`` per owner at the state machine's ``refresh_at``.  A failed
  refresh is logged (WARNING, ``xcapdiff.sip``) and the state dropped: the next
  publication for that owner is an initial one.
- Failures: ``Failed`` with a status → ``PublishRejected(status, reason, retryable)``,
  without (timeout, connection) → ``TransportError(retryable=True)``; both carry a
  ``retry_after`` attribute (seconds or None).  Cancelling ``publish``'s Deferred
  abandons the transaction and drops the owner's state.
- TLS verifies the certificate and host name (``optionsForClientTLS``), against
  ``tls_ca_file`` (every certificate of a PEM bundle) or the platform trust.  It needs
  pyOpenSSL and service_identity (extra ``tls``); without them a ``tls`` next hop is a
  ``ConfigError`` at construction, as is an unreadable ``tls_ca_file``.  A failed
  verification is a ``TransportError``.  Client certificates are not implemented.

The password only reaches ``Publication`` (which never logs or shows it).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredLock,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.endpoints import HostnameEndpoint
from zope.interface import implementer

from ..config import Settings
from ..errors import ConfigError, PublishRejected, TransportError
from ..interfaces import IPublishTransport, PublishOutcome
from ..interfaces import Publication as PublicationRequest
from .client import CONNECTION_LOST, SipStreamClient, SipUdpClient, TransactionTimeout
from .message import SipRequest, SipResponse
from .publication import Failed, Publication, Published, Removed, SendAgain
from .transaction import BRANCH_COOKIE, RFC, PublishTransaction, Timers

__all__ = ["UDP_MAX_BYTES", "SipPublishTransport"]

_log = logging.getLogger("xcapdiff.sip")

UDP_MAX_BYTES = 1300  # RFC 3261 §18.1.1 with an unknown path MTU
_TRANSPORTS = ("udp", "tcp", "tls")


def _token() -> str:
    return secrets.token_hex(8)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass
class _Owner:
    lock: DeferredLock = field(default_factory=DeferredLock)
    state: Publication | None = None
    refresh: Any = None  # an IDelayedCall


@implementer(IPublishTransport)
class SipPublishTransport:
    """Publishes to one next hop; see the module docstring."""

    name = "sip"

    def __init__(
        self,
        reactor: Any,
        *,
        next_hop: tuple[str, str, int],
        expires: int = 3600,
        credentials: tuple[str, str] | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
        user_agent: str = "xcapdiff-ext",
        new_token: Callable[[], str] | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        local_address: str | None = None,
        timers: Timers = RFC,
        udp_max_bytes: int = UDP_MAX_BYTES,
    ) -> None:
        transport, host, port = next_hop
        if transport not in _TRANSPORTS:
            raise ConfigError("sip_proxy", transport, "expected transport udp, tcp or tls")
        self._reactor = reactor
        self._hop = (transport, host, port)
        self._expires = expires
        self._credentials = credentials
        self._extra = tuple(extra_headers)
        self._user_agent = user_agent
        self._new_token = new_token or _token
        self._local = local_address
        self._timers = timers
        self._udp_max = udp_max_bytes
        self._owners: dict[str, _Owner] = {}
        self._udp: SipUdpClient | None = None
        self._udp_port: Any = None
        self._streams: dict[str, SipStreamClient] = {}
        self._stopped = False
        self._tls_options: Any = None
        if transport == "tls":
            self._tls_options = _tls_options(host, tls_ca_file, tls_cert_file)

    def __repr__(self) -> str:  # never the credentials
        transport, host, port = self._hop
        return f"<SipPublishTransport {transport}:{_hostport(host, port)}>"

    @classmethod
    def from_settings(
        cls,
        reactor: Any,
        settings: Settings,
        *,
        resolver: Any = None,
        random_unit: Callable[[], float] | None = None,
    ) -> Any:
        """Build it from ``sip_proxy`` & co.

        An empty ``sip_proxy`` needs ``resolver`` (a ``twisted.names`` ``IResolver``, e.g.
        ``twisted.names.client.createResolver()``; never taken implicitly): the result is
        then a ``sip.locate.LocatingPublishTransport`` that applies RFC 3263 to each
        owner's domain at publish time.  Without a resolver it is refused, as before."""
        proxy = settings.sip_proxy
        if proxy is None and resolver is None:
            raise ConfigError(
                "sip_proxy",
                "",
                "RFC 3263 lookup needs a DNS resolver (transports.build_transport passes one); "
                "or set sip_proxy",
            )
        credentials = (
            (settings.sip_username, settings.sip_password) if settings.sip_username else None
        )
        if proxy is None:
            import functools
            import random

            from .locate import LocatingPublishTransport

            make_hop = functools.partial(
                cls._from_hop, reactor, settings=settings, credentials=credentials
            )
            return LocatingPublishTransport(
                resolver, make_hop, random_unit=random_unit or random.random
            )
        transport = proxy.transport or ("tls" if proxy.scheme == "sips" else "udp")
        port = proxy.port or (5061 if transport == "tls" else 5060)
        return cls._from_hop(
            reactor, (transport, proxy.host, port), settings=settings, credentials=credentials
        )

    @classmethod
    def _from_hop(
        cls,
        reactor: Any,
        next_hop: tuple[str, str, int],
        *,
        settings: Settings,
        credentials: tuple[str, str] | None,
    ) -> SipPublishTransport:
        return cls(
            reactor,
            next_hop=next_hop,
            expires=settings.publish_expires,
            credentials=credentials,
            extra_headers=settings.sip_extra_headers,
            user_agent=settings.sip_user_agent,
            tls_ca_file=settings.sip_tls_ca_file or None,
            tls_cert_file=settings.sip_tls_cert_file or None,
            local_address=settings.sip_local_address or None,
        )

    # -- IPublishTransport --------------------------------------------------------------

    def publish(self, publication: PublicationRequest) -> Deferred[PublishOutcome]:
        """Publish ``publication.body`` for its owner (see the module docstring)."""
        if self._stopped:
            return fail(TransportError("the SIP transport is stopped"))
        owner = self._owner(publication.owner)
        return owner.lock.run(self._publish_locked, owner, publication)

    def remove(self, owner_aor: str) -> Deferred[None]:
        """Remove the owner's publication at the ESC (Expires: 0); nothing held → done."""
        owner = self._owners.get(owner_aor)
        if owner is None or self._stopped:
            return succeed(None)
        return owner.lock.run(self._remove_locked, owner)

    def options(self) -> Deferred[SipResponse]:
        """Send OPTIONS to the next hop and fire with its final response (any status
        means it is there); for ``xcapdiff check``."""
        return Deferred.fromCoroutine(self._options())

    async def _options(self) -> SipResponse:
        transport, host, port = self._hop
        local = await self._ready(transport)
        target = f"sip:{_hostport(host, port)}"
        headers = (
            ("Via", f"{self._via(transport, local)};branch={BRANCH_COOKIE}{self._new_token()}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:xcapdiff-check@{_hostport(*local)}>;tag={self._new_token()}"),
            ("To", f"<{target}>"),
            ("Call-ID", self._new_token()),
            ("CSeq", "1 OPTIONS"),
            ("Accept", "application/sdp"),
        ) + ((("User-Agent", self._user_agent),) if self._user_agent else ())
        return await self._send(SipRequest("OPTIONS", target, headers))

    def stop(self) -> Deferred[None]:
        """Cancel refreshes, fail pending transactions, close sockets and connections."""
        self._stopped = True
        for owner in self._owners.values():
            self._cancel_refresh(owner)
        stops: list[Deferred[Any]] = [c.stop() for c in self._streams.values()]
        self._streams.clear()
        if self._udp is not None:
            stops.append(self._udp.stop())
            self._udp = None
        return gatherResults(stops).addCallback(lambda _: None)

    @property
    def pending(self) -> int:
        """Transactions in flight (for tests and status)."""
        clients: list[Any] = [*self._streams.values(), self._udp]
        return sum(c.pending for c in clients if c is not None)

    # -- operations --------------------------------------------------------------------

    def _owner(self, aor: str) -> _Owner:
        owner = self._owners.get(aor)
        if owner is None:
            owner = self._owners[aor] = _Owner()
        return owner

    def _publish_locked(
        self, owner: _Owner, publication: PublicationRequest
    ) -> Deferred[PublishOutcome]:
        state = owner.state
        # A live state is the freshest truth (our refreshes renew its SIP-ETag without
        # the publisher seeing it): keep modifying it.  Without one, start from the
        # SIP-ETag the publisher remembers, if any.
        if state is None:
            state = owner.state = Publication(
                publication.owner,
                event=publication.event,
                expires=self._expires,
                new_token=self._new_token,
                extra_headers=self._extra,
                user_agent=self._user_agent,
                credentials=self._credentials,
                content_type=publication.content_type,
                # The SIP-ETag the publisher remembers (spool, across restarts): modify
                # that publication rather than leave a second one at the ESC.
                etag=publication.etag,
            )
        self._cancel_refresh(owner)
        body = publication.body
        coro = self._exchange(owner, lambda via, now: state.publish(body, via=via, now=now))
        return Deferred.fromCoroutine(coro)

    def _remove_locked(self, owner: _Owner) -> Deferred[None]:
        self._cancel_refresh(owner)
        state = owner.state
        if state is None or state.etag is None:
            return succeed(None)
        coro = self._exchange(owner, lambda via, now: state.remove(via=via, now=now))
        return Deferred.fromCoroutine(coro).addCallback(lambda _: None)

    def _refresh(self, owner: _Owner) -> None:
        owner.refresh = None
        state = owner.state
        if state is None or state.etag is None or self._stopped:
            return

        def run() -> Deferred[Any]:
            coro = self._exchange(owner, lambda via, now: state.refresh(via=via, now=now))
            return Deferred.fromCoroutine(coro)

        def failed(failure: Any) -> None:
            owner.state = None
            _log.warning(
                "xcap-diff: refresh of %s failed: %s", state.aor, failure.getErrorMessage()
            )

        owner.lock.run(run).addErrback(failed)

    async def _exchange(
        self, owner: _Owner, build: Callable[[str, float], SipRequest]
    ) -> PublishOutcome:
        state = owner.state
        assert state is not None
        primary = self._hop[0]
        try:
            local = await self._ready(primary)
            request = build(self._via(primary, local), self._reactor.seconds())
            while True:
                try:
                    response = await self._send(request)
                except TransactionTimeout as err:
                    outcome: Any = state.transaction_failed(err.reason, self._reactor.seconds())
                except TransportError as err:
                    outcome = state.transaction_failed(err.detail, self._reactor.seconds())
                else:
                    outcome = state.receive(response, self._reactor.seconds())
                if isinstance(outcome, SendAgain):
                    _log.info("xcap-diff: PUBLISH for %s again: %s", state.aor, outcome.reason)
                    request = outcome.request
                    continue
                break
        except CancelledError:
            owner.state = None  # the request in flight is abandoned
            raise
        if isinstance(outcome, Published):
            if outcome.refresh_at is not None and not self._stopped:
                delay = max(0.0, outcome.refresh_at - self._reactor.seconds())
                owner.refresh = self._reactor.callLater(delay, self._refresh, owner)
            return PublishOutcome(outcome.etag, outcome.expires)
        if isinstance(outcome, Removed):
            return PublishOutcome(None, 0, "removed")
        assert isinstance(outcome, Failed)
        error: TransportError
        if outcome.status is not None:
            error = PublishRejected(outcome.status, outcome.reason, retryable=outcome.retryable)
        else:
            error = TransportError(outcome.reason, retryable=outcome.retryable)
        error.retry_after = outcome.retry_after  # type: ignore[attr-defined]
        raise error

    async def _send(self, request: SipRequest) -> SipResponse:
        transport = self._hop[0]
        if transport == "udp" and len(request.to_bytes()) > self._udp_max:
            transport = "tcp"  # RFC 3261 §18.1.1
        local = await self._ready(transport)
        via = request.header("Via") or ""
        params = via[via.index(";") :] if ";" in via else ""
        request = request.with_header("Via", self._via(transport, local) + params)
        if transport == "udp":
            assert self._udp is not None
            return await self._udp.run(
                PublishTransaction(request, reliable=False, timers=self._timers)
            )
        stream = self._streams[transport]
        try:
            return await stream.run(PublishTransaction(request, reliable=True, timers=self._timers))
        except TransactionTimeout as err:
            if not err.reason.startswith(CONNECTION_LOST):
                raise
        # The reused connection was gone (the peer closed it while idle): the request
        # never got a response, so send it once more over a new connection.
        _log.info(
            "xcap-diff: SIP connection to %s lost; sending %s again", self._hop[1], request.branch
        )
        await self._ready(transport)
        return await stream.run(PublishTransaction(request, reliable=True, timers=self._timers))

    @staticmethod
    def _via(transport: str, local: tuple[str, int]) -> str:
        return f"SIP/2.0/{transport.upper()} {_hostport(*local)}"

    async def _ready(self, transport: str) -> tuple[str, int]:
        if self._stopped:
            raise TransportError("the SIP transport is stopped")
        _, host, port = self._hop
        if transport == "udp":
            if self._udp is None:
                address = host if _is_ip(host) else await self._reactor.resolve(host)
                if self._stopped:
                    raise TransportError("the SIP transport is stopped")
                client = SipUdpClient(self._reactor, (address, port))
                interface = self._local or ("::" if ":" in address else "0.0.0.0")
                try:
                    self._udp_port = self._reactor.listenUDP(0, client, interface=interface)
                except Exception as err:
                    raise TransportError(f"cannot open a UDP socket: {err}") from err
                self._udp = client
            return await self._udp.ready()
        stream = self._streams.get(transport)
        if stream is None:
            bind = (self._local, 0) if self._local else None
            endpoint: Any = HostnameEndpoint(self._reactor, host, port, bindAddress=bind)
            if transport == "tls":
                from twisted.internet.endpoints import wrapClientTLS

                endpoint = wrapClientTLS(self._tls_options, endpoint)
            stream = self._streams[transport] = SipStreamClient(self._reactor, endpoint)
        return await stream.ready()

    @staticmethod
    def _cancel_refresh(owner: _Owner) -> None:
        if owner.refresh is not None and owner.refresh.active():
            owner.refresh.cancel()
        owner.refresh = None


def _tls_options(host: str, ca_file: str | None, cert_file: str | None = None) -> Any:
    """Client TLS options verifying ``host`` against ``ca_file`` or the platform trust,
    presenting the certificate and key of ``cert_file`` (one PEM file) when given."""
    try:
        # service_identity: older Twisted only warns without it and checks the CN only.
        import service_identity  # noqa: F401
        from twisted.internet.ssl import (
            Certificate,
            PrivateCertificate,
            optionsForClientTLS,
            platformTrust,
            trustRootFromCertificates,
        )
    except ImportError as err:  # pyOpenSSL or service_identity missing
        raise ConfigError(
            "sip_proxy",
            f"{host};transport=tls",
            f"TLS needs pyOpenSSL and service_identity, not installed: {err}",
        ) from err
    if ca_file:
        # Every certificate of the file (a bundle), not only the first one.
        try:
            with open(ca_file, "rb") as f:
                pem = f.read()
            begin = b"-----BEGIN CERTIFICATE-----"
            certs = [Certificate.loadPEM(begin + part) for part in pem.split(begin)[1:]]
        except Exception as err:  # OSError, OpenSSL.crypto.Error
            raise ConfigError("sip_tls_ca_file", ca_file, f"cannot load it: {err}") from err
        if not certs:
            raise ConfigError("sip_tls_ca_file", ca_file, "no PEM certificate in it")
        trust = trustRootFromCertificates(certs)  # type: ignore[no-untyped-call]
    else:
        trust = platformTrust()  # type: ignore[no-untyped-call]
    if cert_file:
        try:
            with open(cert_file, "rb") as f:
                client = PrivateCertificate.loadPEM(f.read())
        except Exception as err:  # OSError, OpenSSL.crypto.Error: never echo the key
            raise ConfigError(
                "sip_tls_cert_file",
                cert_file,
                f"cannot load a certificate and key: {type(err).__name__}",
            ) from err
        return optionsForClientTLS(host, trustRoot=trust, clientCertificate=client)
    return optionsForClientTLS(host, trustRoot=trust)
