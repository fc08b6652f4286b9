"""RFC 3263 §4 client side: which ``(transport, host, port)`` to send a PUBLISH to.

Two layers:

- ``pure_targets`` turns DNS answers (NAPTR and SRV records, already fetched) into an
  ordered list of ``Target``; no I/O, randomness injected (``random_unit``).
- ``locate(resolver, uri, *, random_unit)`` is the Twisted shell: it asks a
  ``twisted.names`` ``IResolver`` (the caller passes it, e.g.
  ``twisted.names.client.createResolver()``; the global resolver is never used) and
  returns ``Deferred[list[Target]]``.

Decisions:

- IP literal host → one target: the URI's port or 5060 (5061 for TLS), transport from
  ``;transport=`` or udp (tls for ``sips:``).  No DNS.
- Explicit port → A/AAAA of the host only (the transport as above).
- Otherwise NAPTR of the host: flag ``s``, services ``SIP+D2U``/``SIP+D2T``/``SIPS+D2T``
  (only ``SIPS+D2T`` for a ``sips:`` URI) restricted to the transports we support (and
  to ``;transport=`` if given), ordered by (order, preference); each replacement is
  queried for SRV.  No usable NAPTR → SRV ``_sip._udp``, ``_sip._tcp``, ``_sips._tcp``
  of the host directly (that order: udp is our default).  No SRV → the host itself on
  5060 UDP (5061 TLS for ``sips:``).
- SRV order (RFC 2782): priority ascending, then weighted random within a priority;
  target ``.`` means "not offered" and is dropped.
- Targets carry host *names* (TLS verifies the name); the A/AAAA step drops names with
  neither an A nor an AAAA record; the actual address is picked by the connection code
  (``reactor.resolve``/``HostnameEndpoint``).
- NXDOMAIN for the host (or no address for any target) → ``TransportError`` with
  ``retryable=True`` (DNS may be fixed later); DNS timeouts/server failures likewise.
- Redundant queries are not avoided here: ``createResolver()`` caches per TTL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from twisted.internet.defer import (
    Deferred,
    DeferredList,
    DeferredLock,
    fail,
    gatherResults,
    succeed,
)
from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError
from zope.interface import implementer

from ..errors import PublishRejected, TransportError
from ..interfaces import IPublishTransport

__all__ = [
    "SUPPORTED",
    "LocatingPublishTransport",
    "Naptr",
    "Srv",
    "Target",
    "locate",
    "order_srv",
    "parse_sip_uri",
    "pure_targets",
]

SUPPORTED = ("udp", "tcp", "tls")
_NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
_SRV_PREFIXES = (("udp", "_sip._udp."), ("tcp", "_sip._tcp."), ("tls", "_sips._tcp."))


class Target(NamedTuple):
    transport: str  # udp, tcp or tls
    host: str  # a host name or an IP literal (no brackets)
    port: int


@dataclass(frozen=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class SipUri:
    scheme: str  # sip or sips
    host: str
    port: int | None
    transport: str | None


def default_port(transport: str) -> int:
    return 5061 if transport == "tls" else 5060


def parse_sip_uri(uri: str) -> SipUri:
    """``sip:[user@]host[:port][;params]`` → parts (IPv6 hosts in brackets)."""
    scheme, sep, rest = uri.strip().partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips"):
        raise TransportError(f"not a sip: or sips: URI: {uri!r}", retryable=False)
    rest = rest.split("?", 1)[0]
    hostport, *params = rest.rsplit("@", 1)[-1].split(";")
    transport = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "transport":
            transport = value.strip().lower()
    port: int | None = None
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        portpart = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, portpart = hostport.partition(":")
    if portpart:
        if not portpart.isdigit() or not 0 < int(portpart) < 65536:
            raise TransportError(f"bad port in {uri!r}", retryable=False)
        port = int(portpart)
    if not host:
        raise TransportError(f"no host in {uri!r}", retryable=False)
    if scheme == "sips":
        if transport not in (None, "tcp", "tls"):
            raise TransportError(f"sips: URI with transport={transport}", retryable=False)
        transport = "tls"
    elif transport == "tls":  # sip:...;transport=tls (deprecated, still TLS)
        pass
    return SipUri(scheme, host.lower().rstrip("."), port, transport)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def order_srv(records: Iterable[Srv], random_unit: Callable[[], float]) -> list[Srv]:
    """RFC 2782: priority ascending; within a priority, weighted random selection
    (weight-0 records first in the running sum, so they are rarely chosen first)."""
    usable = [r for r in records if r.target not in ("", ".")]
    ordered: list[Srv] = []
    for priority in sorted({r.priority for r in usable}):
        group = sorted((r for r in usable if r.priority == priority), key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                ordered.extend(group)
                break
            pick = random_unit() * total
            running = 0
            chosen = group[-1]
            for r in group:
                running += r.weight
                if running > pick:
                    chosen = r
                    break
            ordered.append(chosen)
            group.remove(chosen)
    return ordered


def _allowed(uri_scheme: str, transport_param: str | None, supported: Sequence[str]) -> list[str]:
    allowed = [t for t in SUPPORTED if t in supported]
    if uri_scheme == "sips":
        allowed = [t for t in allowed if t == "tls"]
    if transport_param is not None:
        allowed = [t for t in allowed if t == transport_param]
    return allowed


def srv_names(
    domain: str,
    naptr: Sequence[Naptr],
    *,
    scheme: str = "sip",
    transport: str | None = None,
    supported: Sequence[str] = SUPPORTED,
) -> list[tuple[str, str]]:
    """The ``(transport, SRV name)`` pairs to query, in order (from NAPTR or directly)."""
    allowed = _allowed(scheme, transport, supported)
    usable = [
        n
        for n in naptr
        if n.flags.lower() == "s"
        and _NAPTR_SERVICES.get(n.service.upper()) in allowed
        and n.replacement not in ("", ".")
    ]
    if usable:
        usable.sort(key=lambda n: (n.order, n.preference))
        return [(_NAPTR_SERVICES[n.service.upper()], n.replacement.lower()) for n in usable]
    return [(t, prefix + domain) for t, prefix in _SRV_PREFIXES if t in allowed]


def pure_targets(
    domain: str,
    naptr: Sequence[Naptr],
    srv: Mapping[str, Sequence[Srv]],
    *,
    random_unit: Callable[[], float],
    scheme: str = "sip",
    transport: str | None = None,
    supported: Sequence[str] = SUPPORTED,
) -> list[Target]:
    """NAPTR + SRV answers for ``domain`` → ordered targets (RFC 3263 §4.1–4.2).

    ``srv`` maps an SRV owner name (lower case, no trailing dot) to its records; a name
    absent or empty had no SRV.  Without any SRV the result is ``domain`` itself on the
    default port (udp, or tls for sips:, or ``transport`` if given)."""
    targets: list[Target] = []
    for t, name in srv_names(
        domain, naptr, scheme=scheme, transport=transport, supported=supported
    ):
        for record in order_srv(srv.get(name, ()), random_unit):
            target = Target(t, record.target.lower().rstrip("."), record.port)
            if target not in targets:
                targets.append(target)
    if not targets:
        fallback = transport or ("tls" if scheme == "sips" else "udp")
        if fallback in supported:
            targets.append(Target(fallback, domain, default_port(fallback)))
    return targets


# -- Twisted shell --------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, dns.Charstr):
        value = value.string
    elif isinstance(value, dns.Name):
        value = value.name
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).lower().rstrip(".") if value is not None else ""


def _records(result: Any, rtype: int) -> list[Any]:
    answers = result[0] if isinstance(result, tuple) else result
    return [rr.payload for rr in answers if rr.type == rtype]


def _no_such_record(err: Exception) -> bool:
    """NXDOMAIN, or the plain ``DomainError`` of hosts/chain resolvers ("not found");
    its subclasses (SERVFAIL, REFUSED, FORMERR...) are real failures."""
    return isinstance(err, DNSNameError) or type(err) is DomainError


async def _lookup(resolver: Any, method: str, name: str, rtype: int, what: str) -> list[Any]:
    """Records of one type; NXDOMAIN/no data → []; other DNS errors → TransportError."""
    try:
        result = await getattr(resolver, method)(name)
    except Exception as err:
        if _no_such_record(err):
            return []  # timeouts, SERVFAIL, REFUSED
        raise TransportError(f"DNS {what} lookup of {name} failed: {err}", retryable=True) from err
    return _records(result, rtype)


async def _has_address(resolver: Any, host: str) -> bool:
    results = await DeferredList(
        [
            Deferred.fromCoroutine(_lookup(resolver, "lookupAddress", host, dns.A, "A")),
            Deferred.fromCoroutine(_lookup(resolver, "lookupIPV6Address", host, dns.AAAA, "AAAA")),
        ],
        consumeErrors=True,
    )
    return any(ok and records for ok, records in results)


async def _locate(
    resolver: Any, uri: str, random_unit: Callable[[], float], supported: Sequence[str]
) -> list[Target]:
    parts = parse_sip_uri(uri)
    transport = parts.transport or ("tls" if parts.scheme == "sips" else "udp")
    if parts.transport is not None and parts.transport not in supported:
        raise TransportError(f"{uri}: transport {parts.transport} not supported", retryable=False)
    if _is_ip(parts.host):
        return [Target(transport, parts.host, parts.port or default_port(transport))]
    if parts.port is not None:
        candidates = [Target(transport, parts.host, parts.port)]
    else:
        try:
            naptr_result = await resolver.lookupNamingAuthorityPointer(parts.host)
        except DNSNameError as err:
            raise TransportError(
                f"DNS: {parts.host} does not exist (NXDOMAIN); cannot locate the SIP "
                f"server for {uri}",
                retryable=True,
            ) from err
        except Exception as err:
            if not _no_such_record(err):
                raise TransportError(
                    f"DNS NAPTR lookup of {parts.host} failed: {err}", retryable=True
                ) from err
            naptr_result = ([], [], [])
        naptr = [
            Naptr(
                r.order,
                r.preference,
                _text(r.flags),
                _text(r.service).upper(),
                _text(r.replacement),
            )
            for r in _records(naptr_result, dns.NAPTR)
        ]
        names = srv_names(
            parts.host, naptr, scheme=parts.scheme, transport=parts.transport, supported=supported
        )
        srv: dict[str, list[Srv]] = {}
        for _, name in names:
            if name not in srv:
                records = await _lookup(resolver, "lookupService", name, dns.SRV, "SRV")
                srv[name] = [Srv(r.priority, r.weight, r.port, _text(r.target)) for r in records]
        candidates = pure_targets(
            parts.host,
            naptr,
            srv,
            random_unit=random_unit,
            scheme=parts.scheme,
            transport=parts.transport,
            supported=supported,
        )
    known: dict[str, bool] = {}
    targets = []
    for target in candidates:
        if target.host not in known:
            known[target.host] = _is_ip(target.host) or await _has_address(resolver, target.host)
        if known[target.host]:
            targets.append(target)
    if not targets:
        hosts = ", ".join(dict.fromkeys(t.host for t in candidates)) or parts.host
        raise TransportError(
            f"DNS: no A/AAAA record for {hosts} (NXDOMAIN or no data); cannot reach the SIP "
            f"server for {uri}",
            retryable=True,
        )
    return targets


def locate(
    resolver: Any,
    uri: str,
    *,
    random_unit: Callable[[], float],
    supported: Sequence[str] = SUPPORTED,
) -> Deferred[list[Target]]:
    """Ordered next hops for a request to ``uri`` (see the module docstring).

    Fails with ``TransportError`` (``retryable=True`` for DNS trouble, ``False`` for a
    malformed URI)."""
    return Deferred.fromCoroutine(_locate(resolver, uri, random_unit, supported))


# -- a publish transport resolving the owner's domain ---------------------------------


@implementer(IPublishTransport)
class LocatingPublishTransport:
    """``IPublishTransport`` for an empty ``sip_proxy``: per publication, ``locate`` the
    owner AOR's domain (no cache here: ``createResolver()`` caches by TTL) and publish
    through a ``SipPublishTransport`` per next hop (built by ``make_hop``, reused).

    An owner sticks to the hop that last worked for it while that hop is still among the
    located targets; otherwise the first target is used.  A ``TransportError`` that is
    not a ``PublishRejected`` (no SIP response: timeout, connection) fails over to the
    next target (the new hop does not know the owner's etag → an initial PUBLISH); a SIP
    rejection is returned as is.  Publications of one owner are serialised."""

    name = "sip"

    def __init__(
        self,
        resolver: Any,
        make_hop: Callable[[tuple[str, str, int]], Any],
        *,
        random_unit: Callable[[], float],
    ) -> None:
        self._resolver = resolver
        self._make_hop = make_hop
        self._random = random_unit
        self._hops: dict[Target, Any] = {}
        self._where: dict[str, Target] = {}  # owner AOR → the hop holding its state
        self._locks: dict[str, DeferredLock] = {}
        self._stopped = False

    def __repr__(self) -> str:
        return "<LocatingPublishTransport RFC 3263>"

    def _hop(self, target: Target) -> Any:
        hop = self._hops.get(target)
        if hop is None:
            hop = self._hops[target] = self._make_hop((target.transport, target.host, target.port))
        return hop

    def publish(self, publication: Any) -> Deferred[Any]:
        if self._stopped:
            return fail(TransportError("the SIP transport is stopped"))
        lock: DeferredLock = self._locks.setdefault(publication.owner, DeferredLock())
        return lock.run(lambda: Deferred.fromCoroutine(self._publish(publication)))

    async def _publish(self, publication: Any) -> Any:
        targets = await locate(self._resolver, publication.owner, random_unit=self._random)
        current = self._where.get(publication.owner)
        if current in targets:
            targets.remove(current)
            targets.insert(0, current)
        last: TransportError | None = None
        for target in targets:
            if self._stopped:
                raise TransportError("the SIP transport is stopped")
            try:
                outcome = await self._hop(target).publish(publication)
            except TransportError as err:
                if isinstance(err, PublishRejected):
                    self._where[publication.owner] = target
                    raise
                last = err
                continue
            self._where[publication.owner] = target
            return outcome
        assert last is not None
        raise last

    def remove(self, owner_aor: str) -> Deferred[None]:
        target = self._where.pop(owner_aor, None)
        if target is None or self._stopped:
            return succeed(None)
        removed: Deferred[None] = self._hop(target).remove(owner_aor)
        return removed

    def stop(self) -> Deferred[None]:
        self._stopped = True
        stops = [hop.stop() for hop in self._hops.values()]
        return gatherResults(stops).addCallback(lambda _: None)

    @property
    def pending(self) -> int:
        return sum(hop.pending for hop in self._hops.values())
