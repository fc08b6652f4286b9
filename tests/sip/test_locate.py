"""sip.locate: RFC 3263 next-hop selection, pure part and Twisted shell.

The shell runs against ``FakeResolver`` (answers ``twisted.names.dns.RRHeader`` lists,
fails with ``DNSNameError`` for NXDOMAIN); all Deferreds fire synchronously.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSServerError
from twisted.trial import unittest

from tests.sip.sip_fakes import FakeUdpUas
from xcapdiff_ext.config import Settings
from xcapdiff_ext.errors import ConfigError, PublishRejected, TransportError
from xcapdiff_ext.interfaces import IPublishTransport, Publication, PublishOutcome
from xcapdiff_ext.sip.locate import (
    LocatingPublishTransport,
    Naptr,
    Srv,
    Target,
    locate,
    order_srv,
    parse_sip_uri,
    pure_targets,
)
from xcapdiff_ext.sip.transport import SipPublishTransport

reactor: Any = _reactor
BODY = b"<x/>"


def randoms(*values: float) -> Any:
    it: Iterator[float] = iter(values)
    return lambda: next(it)


def never() -> float:
    raise AssertionError("random_unit should not be called")


def naptr(order: int, pref: int, service: str, replacement: str, flags: bytes = b"s") -> Any:
    record = dns.Record_NAPTR(order, pref, flags, service.encode(), b"", replacement.encode())
    return dns.RRHeader(b"example.com", dns.NAPTR, payload=record)


def srv(name: str, priority: int, weight: int, port: int, target: str) -> Any:
    record = dns.Record_SRV(priority, weight, port, target.encode())
    return dns.RRHeader(name.encode(), dns.SRV, payload=record)


def a(name: str, address: str = "192.0.2.10") -> Any:
    return dns.RRHeader(name.encode(), dns.A, payload=dns.Record_A(address))


def aaaa(name: str, address: str = "2001:db8::10") -> Any:
    return dns.RRHeader(name.encode(), dns.AAAA, payload=dns.Record_AAAA(address))


class FakeResolver:
    """``IResolver`` subset: ``records[(kind, name)]`` → RRHeaders; ``nxdomain`` names
    fail with ``DNSNameError`` for every kind; anything else → an empty answer."""

    def __init__(self, *records: Any, nxdomain: tuple[str, ...] = (), errors: Any = None) -> None:
        self.answers: dict[tuple[int, str], list[Any]] = {}
        for rr in records:
            self.answers.setdefault((rr.type, rr.name.name.decode()), []).append(rr)
        self.nxdomain = nxdomain
        self.errors = errors or {}
        self.queries: list[tuple[str, str]] = []

    def _lookup(self, kind: int, label: str, name: str) -> Deferred[Any]:
        self.queries.append((label, name))
        if (label, name) in self.errors:
            return fail(self.errors[(label, name)])
        if name in self.nxdomain:
            return fail(DNSNameError(name))
        return succeed((self.answers.get((kind, name), []), [], []))

    def lookupNamingAuthorityPointer(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._lookup(dns.NAPTR, "NAPTR", name)

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._lookup(dns.SRV, "SRV", name)

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._lookup(dns.A, "A", name)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._lookup(dns.AAAA, "AAAA", name)


def run(resolver: Any, uri: str, random_unit: Any = never) -> list[Target]:
    results: list[Any] = []
    locate(resolver, uri, random_unit=random_unit).addBoth(results.append)
    assert results, "locate did not fire synchronously"
    if isinstance(results[0], list):
        return results[0]
    results[0].raiseException()
    raise AssertionError("unreachable")


def run_error(resolver: Any, uri: str) -> TransportError:
    try:
        run(resolver, uri)
    except TransportError as err:
        return err
    raise AssertionError("no TransportError")


# -- pure part ----------------------------------------------------------------------


class PureTests(unittest.TestCase):
    def test_parse_sip_uri(self) -> None:
        uri = parse_sip_uri("sip:alice@Example.COM:5070;transport=TCP")
        self.assertEqual(
            (uri.scheme, uri.host, uri.port, uri.transport), ("sip", "example.com", 5070, "tcp")
        )
        uri = parse_sip_uri("sips:[2001:db8::1]:5071")
        self.assertEqual((uri.host, uri.port, uri.transport), ("2001:db8::1", 5071, "tls"))
        with self.assertRaises(TransportError) as caught:
            parse_sip_uri("mailto:alice@example.com")
        self.assertFalse(caught.exception.retryable)

    def test_srv_priority_then_weight(self) -> None:
        records = [
            Srv(20, 0, 5060, "backup.example.com"),
            Srv(10, 10, 5060, "light.example.com"),
            Srv(10, 90, 5060, "heavy.example.com"),
            Srv(10, 0, 5060, "zero.example.com"),
        ]
        # total 100 over [zero 0, light 10, heavy 90]; 0.05*100=5 → light; then 0.5*90 → heavy
        order = order_srv(records, randoms(0.05, 0.5, 0.0))
        self.assertEqual(
            [r.target for r in order],
            ["light.example.com", "heavy.example.com", "zero.example.com", "backup.example.com"],
        )
        order = order_srv(records, randoms(0.5, 0.99, 0.0))
        self.assertEqual(order[0].target, "heavy.example.com")
        self.assertEqual(order[1].target, "light.example.com")

    def test_srv_dot_target_means_not_offered(self) -> None:
        self.assertEqual(order_srv([Srv(0, 0, 0, ".")], never), [])

    def test_naptr_order_preference_and_unsupported(self) -> None:
        records = [
            Naptr(20, 10, "s", "SIP+D2U", "_sip._udp.example.com"),
            Naptr(10, 20, "s", "SIP+D2T", "_sip._tcp.example.com"),
            Naptr(10, 10, "s", "SIP+D2S", "_sip._sctp.example.com"),  # SCTP: unsupported
            Naptr(10, 15, "s", "SIPS+D2T", "_sips._tcp.example.com"),
            Naptr(5, 5, "a", "SIP+D2U", "weird.example.com"),  # flag a: not for us
        ]
        srvs = {
            "_sip._udp.example.com": [Srv(0, 0, 5060, "u.example.com")],
            "_sip._tcp.example.com": [Srv(0, 0, 5060, "t.example.com")],
            "_sips._tcp.example.com": [Srv(0, 0, 5061, "s.example.com")],
            "_sip._sctp.example.com": [Srv(0, 0, 5060, "sctp.example.com")],
        }
        self.assertEqual(
            pure_targets("example.com", records, srvs, random_unit=never),
            [
                Target("tls", "s.example.com", 5061),
                Target("tcp", "t.example.com", 5060),
                Target("udp", "u.example.com", 5060),
            ],
        )
        only_udp = pure_targets("example.com", records, srvs, random_unit=never, supported=("udp",))
        self.assertEqual(only_udp, [Target("udp", "u.example.com", 5060)])

    def test_no_srv_falls_back_to_the_domain(self) -> None:
        self.assertEqual(
            pure_targets("example.com", [], {}, random_unit=never),
            [Target("udp", "example.com", 5060)],
        )
        self.assertEqual(
            pure_targets("example.com", [], {}, random_unit=never, scheme="sips"),
            [Target("tls", "example.com", 5061)],
        )


# -- Twisted shell ------------------------------------------------------------------


class LocateTests(unittest.TestCase):
    def test_ip_literal(self) -> None:
        resolver = FakeResolver()
        self.assertEqual(run(resolver, "sip:alice@192.0.2.1"), [Target("udp", "192.0.2.1", 5060)])
        self.assertEqual(
            run(resolver, "sip:alice@[2001:db8::1]:5070;transport=tcp"),
            [Target("tcp", "2001:db8::1", 5070)],
        )
        self.assertEqual(run(resolver, "sips:alice@192.0.2.1"), [Target("tls", "192.0.2.1", 5061)])
        self.assertEqual(resolver.queries, [])

    def test_explicit_port_is_a_and_aaaa_only(self) -> None:
        resolver = FakeResolver(aaaa("example.com"))
        self.assertEqual(
            run(resolver, "sip:alice@example.com:5080"), [Target("udp", "example.com", 5080)]
        )
        self.assertEqual(sorted(resolver.queries), [("A", "example.com"), ("AAAA", "example.com")])

    def test_naptr_srv_a(self) -> None:
        resolver = FakeResolver(
            naptr(10, 10, "SIP+D2T", "_sip._tcp.example.com"),
            naptr(20, 10, "SIP+D2U", "_sip._udp.example.com"),
            srv("_sip._tcp.example.com", 10, 0, 5070, "tcp1.example.com"),
            srv("_sip._udp.example.com", 10, 0, 5060, "udp1.example.com"),
            srv("_sip._udp.example.com", 20, 0, 5060, "gone.example.com"),
            a("tcp1.example.com"),
            aaaa("udp1.example.com"),
        )
        self.assertEqual(
            run(resolver, "sip:alice@example.com"),
            [Target("tcp", "tcp1.example.com", 5070), Target("udp", "udp1.example.com", 5060)],
        )
        self.assertNotIn(("SRV", "_sips._tcp.example.com"), resolver.queries)

    def test_srv_only(self) -> None:
        resolver = FakeResolver(
            srv("_sip._tcp.example.com", 0, 0, 5060, "pres.example.com"),
            a("pres.example.com"),
        )
        self.assertEqual(
            run(resolver, "sip:alice@example.com"), [Target("tcp", "pres.example.com", 5060)]
        )
        srv_queries = [name for kind, name in resolver.queries if kind == "SRV"]
        self.assertEqual(
            srv_queries,
            ["_sip._udp.example.com", "_sip._tcp.example.com", "_sips._tcp.example.com"],
        )

    def test_transport_param_restricts_srv(self) -> None:
        resolver = FakeResolver(
            srv("_sip._udp.example.com", 0, 0, 5060, "u.example.com"),
            srv("_sip._tcp.example.com", 0, 0, 5060, "t.example.com"),
            a("u.example.com"),
            a("t.example.com"),
        )
        self.assertEqual(
            run(resolver, "sip:alice@example.com;transport=tcp"),
            [Target("tcp", "t.example.com", 5060)],
        )

    def test_a_only(self) -> None:
        resolver = FakeResolver(a("example.com"))
        self.assertEqual(
            run(resolver, "sip:alice@example.com"), [Target("udp", "example.com", 5060)]
        )

    def test_weights_deterministic(self) -> None:
        records = (
            srv("_sip._udp.example.com", 1, 25, 5060, "one.example.com"),
            srv("_sip._udp.example.com", 1, 75, 5060, "two.example.com"),
            a("one.example.com"),
            a("two.example.com"),
        )
        low = run(FakeResolver(*records), "sip:alice@example.com", randoms(0.1, 0.0))
        high = run(FakeResolver(*records), "sip:alice@example.com", randoms(0.9, 0.0))
        self.assertEqual([t.host for t in low], ["one.example.com", "two.example.com"])
        self.assertEqual([t.host for t in high], ["two.example.com", "one.example.com"])

    def test_unsupported_naptr_services_are_skipped(self) -> None:
        resolver = FakeResolver(
            naptr(10, 10, "SIP+D2S", "_sip._sctp.example.com"),
            naptr(10, 20, "SIP+D2W", "_sip._ws.example.com"),
            naptr(20, 10, "SIP+D2U", "_sip._udp.example.com"),
            srv("_sip._sctp.example.com", 0, 0, 5060, "sctp.example.com"),
            srv("_sip._udp.example.com", 0, 0, 5060, "udp.example.com"),
            a("sctp.example.com"),
            a("udp.example.com"),
        )
        self.assertEqual(
            run(resolver, "sip:alice@example.com"), [Target("udp", "udp.example.com", 5060)]
        )
        self.assertNotIn(("SRV", "_sip._sctp.example.com"), resolver.queries)

    def test_only_unsupported_naptr_falls_back_to_direct_srv(self) -> None:
        resolver = FakeResolver(
            naptr(10, 10, "SIP+D2S", "_sip._sctp.example.com"),
            srv("_sip._tcp.example.com", 0, 0, 5060, "t.example.com"),
            a("t.example.com"),
        )
        self.assertEqual(
            run(resolver, "sip:alice@example.com"), [Target("tcp", "t.example.com", 5060)]
        )

    def test_nxdomain_is_a_retryable_transport_error(self) -> None:
        err = run_error(FakeResolver(nxdomain=("example.com",)), "sip:alice@example.com")
        self.assertTrue(err.retryable)
        self.assertIn("example.com does not exist (NXDOMAIN)", str(err))
        self.assertIn("sip:alice@example.com", str(err))

    def test_nxdomain_with_explicit_port(self) -> None:
        err = run_error(FakeResolver(nxdomain=("example.com",)), "sip:alice@example.com:5060")
        self.assertTrue(err.retryable)
        self.assertIn("no A/AAAA record for example.com", str(err))

    def test_srv_targets_without_address(self) -> None:
        resolver = FakeResolver(
            srv("_sip._udp.example.com", 0, 0, 5060, "ghost.example.com"),
            nxdomain=("ghost.example.com",),
        )
        err = run_error(resolver, "sip:alice@example.com")
        self.assertTrue(err.retryable)
        self.assertIn("ghost.example.com", str(err))

    def test_server_failure_is_retryable(self) -> None:
        resolver = FakeResolver(errors={("NAPTR", "example.com"): DNSServerError("SERVFAIL")})
        err = run_error(resolver, "sip:alice@example.com")
        self.assertTrue(err.retryable)
        self.assertIn("NAPTR lookup of example.com failed", str(err))

    def test_bad_uri_is_not_retryable(self) -> None:
        err = run_error(FakeResolver(), "http://example.com/")
        self.assertFalse(err.retryable)


# -- LocatingPublishTransport with fake hops -------------------------------------------


class FakeHop:
    def __init__(self, hop: tuple[str, str, int], fail_with: Exception | None = None) -> None:
        self.hop, self.fail_with = hop, fail_with
        self.published: list[Publication] = []
        self.removed: list[str] = []
        self.stopped = False
        self.pending = 0

    def publish(self, publication: Publication) -> Deferred[PublishOutcome]:
        self.published.append(publication)
        if self.fail_with is not None:
            return fail(self.fail_with)
        return succeed(PublishOutcome(f"etag-{self.hop[1]}", 3600))

    def remove(self, owner: str) -> Deferred[None]:
        self.removed.append(owner)
        return succeed(None)

    def stop(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)


TWO_SERVERS = (
    srv("_sip._udp.example.com", 1, 0, 5060, "first.example.com"),
    srv("_sip._udp.example.com", 2, 0, 5060, "second.example.com"),
    a("first.example.com"),
    a("second.example.com"),
)


class RouterTests(unittest.TestCase):
    def router(
        self, failing: dict[str, Exception]
    ) -> tuple[LocatingPublishTransport, dict[str, FakeHop]]:
        hops: dict[str, FakeHop] = {}

        def make(hop: tuple[str, str, int]) -> FakeHop:
            hops[hop[1]] = FakeHop(hop, failing.get(hop[1]))
            return hops[hop[1]]

        return LocatingPublishTransport(FakeResolver(*TWO_SERVERS), make, random_unit=never), hops

    def outcome(self, d: Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        return results[0]

    def test_first_target_used(self) -> None:
        router, hops = self.router({})
        self.assertTrue(IPublishTransport.providedBy(router))
        out = self.outcome(router.publish(Publication("sip:alice@example.com", BODY)))
        self.assertEqual(out.etag, "etag-first.example.com")
        self.assertEqual(list(hops), ["first.example.com"])
        self.assertEqual(hops["first.example.com"].hop, ("udp", "first.example.com", 5060))
        self.outcome(router.remove("sip:alice@example.com"))
        self.assertEqual(hops["first.example.com"].removed, ["sip:alice@example.com"])
        self.outcome(router.stop())
        self.assertTrue(hops["first.example.com"].stopped)

    def test_failover_on_transport_error(self) -> None:
        router, hops = self.router({"first.example.com": TransportError("timeout")})
        out = self.outcome(router.publish(Publication("sip:alice@example.com", BODY)))
        self.assertEqual(out.etag, "etag-second.example.com")
        # the owner now sticks to the second server
        hops["first.example.com"].fail_with = None
        out = self.outcome(
            router.publish(Publication("sip:alice@example.com", BODY, etag=out.etag))
        )
        self.assertEqual(out.etag, "etag-second.example.com")
        self.assertEqual(len(hops["first.example.com"].published), 1)

    def test_no_failover_on_sip_rejection(self) -> None:
        router, hops = self.router({"first.example.com": PublishRejected(489, "Bad Event")})
        out = self.outcome(router.publish(Publication("sip:alice@example.com", BODY)))
        out.trap(PublishRejected)
        self.assertNotIn("second.example.com", hops)

    def test_all_targets_fail(self) -> None:
        err = TransportError("timeout")
        router, _ = self.router({"first.example.com": err, "second.example.com": err})
        out = self.outcome(router.publish(Publication("sip:alice@example.com", BODY)))
        self.assertIs(out.value, err)

    def test_dns_failure(self) -> None:
        router = LocatingPublishTransport(
            FakeResolver(nxdomain=("example.com",)), FakeHop, random_unit=never
        )
        out = self.outcome(router.publish(Publication("sip:alice@example.com", BODY)))
        out.trap(TransportError)
        self.assertIn("NXDOMAIN", out.getErrorMessage())


class FromSettingsTests(unittest.TestCase):
    def test_empty_sip_proxy_without_resolver_is_refused(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            SipPublishTransport.from_settings(reactor, Settings(transport="sip"))
        self.assertIn("RFC 3263 lookup needs a DNS resolver", str(caught.exception))

    @inlineCallbacks
    def test_empty_sip_proxy_publishes_to_the_located_server(self) -> Any:
        uas = FakeUdpUas()
        uas.start(reactor)
        self.addCleanup(uas.stop)
        resolver = FakeResolver(srv("_sip._udp.example.com", 0, 0, uas.port, "127.0.0.1"))  # type: ignore[attr-defined]
        transport = SipPublishTransport.from_settings(
            reactor, Settings(transport="sip"), resolver=resolver, random_unit=never
        )
        self.assertIsInstance(transport, LocatingPublishTransport)
        self.addCleanup(transport.stop)
        outcome = yield transport.publish(Publication("sip:alice@example.com", BODY))
        self.assertEqual(outcome.etag, "e1")
        self.assertEqual(uas.requests[0].uri, "sip:alice@example.com")
