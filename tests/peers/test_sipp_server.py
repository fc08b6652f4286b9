"""SipPublishTransport against SIPp as the UAS (scenarios in ./scenarios, ours).

SIPp (Debian ``sip-tester``) must be installed: a missing ``sipp`` FAILS these tests.
Each test runs SIPp for one call (``-m 1``) on a free loopback port, drives our
transport in-process (trial TestCase, the global reactor) and then checks SIPp's exit
status (0 = the scenario ran to its end, every ``check_it`` held) and its message log.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.peers import conftest
from tests.peers.conftest import SippUas
from xcapdiff_ext.interfaces import Publication
from xcapdiff_ext.sip.transaction import Timers
from xcapdiff_ext.sip.transport import SipPublishTransport

reactor: Any = _reactor

OWNER = "sip:bob@127.0.0.1"
BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://xcap.example/"/>'
)
FAST = Timers(t1=0.1, t2=0.4, t4=0.5)  # Timer F = 6.4 s


class SippServerTest(unittest.TestCase):
    kind = "udp"
    timeout = 30

    def uas(self, scenario: str) -> SippUas:
        workdir = Path(tempfile.mkdtemp(prefix="sipp-uas-"))
        uas = SippUas(scenario, self.kind, workdir).start()
        self.addCleanup(uas.kill)
        return uas

    def transport(self, uas: SippUas, **kwargs: Any) -> SipPublishTransport:
        kwargs.setdefault("timers", FAST)
        transport = SipPublishTransport(
            reactor, next_hop=(self.kind, "127.0.0.1", uas.port), **kwargs
        )
        self.addCleanup(transport.stop)
        return transport

    def assert_sipp_ok(self, uas: SippUas) -> None:
        rc = uas.finish()
        self.assertEqual(rc, 0, f"sipp {uas.scenario} failed (rc {rc}):\n{uas.report()}")

    @inlineCallbacks
    def test_digest_401_then_200(self) -> Any:
        uas = self.uas("uas-auth.xml")
        transport = self.transport(uas, credentials=("u", "p"))
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual((outcome.etag, outcome.expires), ("auth-e1", 60))
        self.assert_sipp_ok(uas)
        first, second = uas.received()
        self.assertNotIn("authorization", first)
        self.assertIn('username="u"', second["authorization"])
        self.assertIn('realm="peers.test"', second["authorization"])

    @inlineCallbacks
    def test_412_on_modify_then_fresh_initial(self) -> Any:
        uas = self.uas("uas-412.xml")
        transport = self.transport(uas)
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome.etag, "e1")
        outcome = yield transport.publish(Publication(OWNER, BODY + b"\n", etag="e1"))
        self.assertEqual(outcome.etag, "e2")
        self.assert_sipp_ok(uas)
        initial, modify, fresh = uas.received()
        self.assertNotIn("sip-if-match", initial)
        self.assertEqual(modify["sip-if-match"], "e1")
        self.assertNotIn("sip-if-match", fresh)
        self.assertEqual(fresh["content-type"], "application/xcap-diff+xml")

    @inlineCallbacks
    def test_423_min_expires_then_200(self) -> Any:
        uas = self.uas("uas-423.xml")
        transport = self.transport(uas, expires=30)
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual((outcome.etag, outcome.expires), ("e423", 120))
        self.assert_sipp_ok(uas)
        first, second = uas.received()
        self.assertEqual((first["expires"], second["expires"]), ("30", "120"))


class SippServerTcpTest(SippServerTest):
    kind = "tcp"


class SippServerUdpRetransmissionTest(SippServerTest):
    """SIPp leaves the first copy of the PUBLISH unanswered; our Timer E retransmission
    is what it answers (UDP only: no retransmissions over TCP)."""

    test_digest_401_then_200 = None  # type: ignore[assignment]
    test_412_on_modify_then_fresh_initial = None  # type: ignore[assignment]
    test_423_min_expires_then_200 = None  # type: ignore[assignment]

    @inlineCallbacks
    def test_retransmission_gets_the_200(self) -> Any:
        uas = self.uas("uas-retrans.xml")
        transport = self.transport(uas)
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome.etag, "eR")
        self.assert_sipp_ok(uas)
        received = uas.received()
        self.assertGreaterEqual(len(received), 2, received)
        log = [
            (m["direction"], m["start"].split()[0]) for m in conftest.sipp_messages(uas.messages)
        ]
        first_sent = log.index(("sent", "SIP/2.0"))
        self.assertGreaterEqual(first_sent, 2, f"the 200 must follow a retransmission: {log}")
        branches = {m["via"] for m in received}
        self.assertEqual(len(branches), 1, "the copies must be one request (same Via branch)")
