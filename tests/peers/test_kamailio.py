"""SipPublishTransport against a real presence server: Kamailio (xcap-diff event).

Kamailio is started with the shared ``peers/kamailio/start.sh`` (pid file, loopback
127.0.0.1:5062 udp/tcp) and stopped with ``stop.sh`` (by that pid only).  A SIPp
subscriber (shared ``peers/sipp/subscriber.sh``) watches ``sip:carol@127.0.0.1``; our
transport publishes in-process (initial, modify with SIP-If-Match, refresh with a short
Expires, removal) over UDP and over TCP; the NOTIFY bodies the subscriber received
(shared ``extract-notify-bodies.py --json``) must carry each published body (Canonical
XML compared).  Missing binaries or shared files FAIL these tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.peers.conftest import free_port, require_binary
from tests.shared import shared_path
from xcapdiff_ext.interfaces import Publication
from xcapdiff_ext.sip.transport import SipPublishTransport
from xcapdiff_ext.xmlsafe import c14n, parse_document

reactor: Any = _reactor

OWNER = "sip:carol@127.0.0.1"
KAMAILIO_PORT = 5062
KAMAILIO_LOG = Path("/tmp/kamailio-ref-run/kamailio.log")  # start.sh's fixed run dir
EXPIRES = 5  # refresh after 4.5 s (10 % margin)


def body(n: int, kind: str) -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://xcap.example/">'
        b'<document sel="resource-lists/users/sip:carol@127.0.0.1/index" '
        + f'previous-etag="{kind}-{n - 1}" new-etag="{kind}-{n}"/>'.encode()
        + b"</xcap-diff>"
    )


def canonical(data: bytes) -> bytes:
    return c14n(parse_document(data, where="NOTIFY body"))


def run(args: list[str], what: str, timeout: float = 20) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


class KamailioTest(unittest.TestCase):
    kind = "udp"
    timeout = 40

    @classmethod
    def setUpClass(cls) -> None:
        require_binary("kamailio", "/usr/sbin")
        require_binary("sipp")
        cls.start_sh = str(shared_path("peers", "kamailio", "start.sh"))
        cls.stop_sh = str(shared_path("peers", "kamailio", "stop.sh"))
        run(["bash", cls.start_sh], "kamailio start.sh")

    @classmethod
    def tearDownClass(cls) -> None:
        run(["bash", cls.stop_sh], "kamailio stop.sh")

    def start_subscriber(self) -> tuple[str, Path, str]:
        script = str(shared_path("peers", "sipp", "subscriber.sh"))
        out = Path(tempfile.mkdtemp(prefix="kamailio-sub-"))
        port = str(free_port())
        run(
            ["bash", script, "-u", OWNER[4:], "-d", "30", "-p", port, "-o", str(out),
             "-s", f"127.0.0.1:{KAMAILIO_PORT}"],
            "subscriber.sh",
        )  # fmt: skip
        self.addCleanup(self.stop_subscriber, script, port, out)
        deadline = time.monotonic() + 5
        actions = out / "actions.log"
        while time.monotonic() < deadline:
            if actions.exists() and "SUBSCRIBE answered" in actions.read_text(errors="replace"):
                return script, out, port
            time.sleep(0.05)
        raise AssertionError(f"the SIPp subscriber got no answer from Kamailio; {out}")

    def stop_subscriber(self, script: str, port: str, out: Path) -> None:
        run(["bash", script, "-k", "-p", port, "-o", str(out)], "subscriber.sh -k")

    def notifies(self, out: Path) -> list[dict[str, Any]]:
        extract = str(shared_path("peers", "sipp", "extract-notify-bodies.py"))
        text = run([sys.executable, extract, "--json", str(out / "messages.log")], "extract")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def publishes_since(self, offset: int) -> list[str]:
        with open(KAMAILIO_LOG, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        return re.findall(r"REQ PUBLISH .*", text)

    @inlineCallbacks
    def test_publish_modify_refresh_remove(self) -> Any:
        script, out, port = self.start_subscriber()
        log_offset = KAMAILIO_LOG.stat().st_size
        transport = SipPublishTransport(
            reactor, next_hop=(self.kind, "127.0.0.1", KAMAILIO_PORT), expires=EXPIRES
        )
        self.addCleanup(transport.stop)
        first, second = body(1, self.kind), body(2, self.kind)

        outcome = yield transport.publish(Publication(OWNER, first))
        self.assertTrue(outcome.etag)
        self.assertEqual(outcome.expires, EXPIRES)
        outcome = yield transport.publish(Publication(OWNER, second, etag=outcome.etag))
        self.assertTrue(outcome.etag)

        # the refresh (no body, SIP-If-Match, Expires 5) goes out by itself at ~4.5 s
        refresh = re.compile(rf"CT=<<null>> Expires=<{EXPIRES}> If-Match=<[^<>]+>$")
        for _ in range(80):
            if any(refresh.search(line) for line in self.publishes_since(log_offset)):
                break
            yield deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail(f"no refresh PUBLISH reached Kamailio: {self.publishes_since(log_offset)}")

        yield transport.remove(OWNER)
        yield transport.stop()
        yield deferLater(reactor, 0.3, lambda: None)  # the removal NOTIFY
        self.stop_subscriber(script, port, out)

        publishes = self.publishes_since(log_offset)
        self.assertEqual(len(publishes), 4, publishes)
        self.assertTrue(all(f"/{self.kind} " in line for line in publishes), publishes)
        self.assertIn("If-Match=<<null>>", publishes[0])
        self.assertRegex(publishes[1], r"CT=<application/xcap-diff\+xml> .*If-Match=<[^<>]+>$")
        self.assertRegex(publishes[2], refresh)
        self.assertRegex(publishes[3], r"Expires=<0> If-Match=<[^<>]+>$")

        notifies = self.notifies(out)
        bodies = [canonical(n["body"].encode()) for n in notifies if n["body"]]
        self.assertEqual(bodies[:2], [canonical(first), canonical(second)], notifies)
        self.assertTrue(
            all(n["content_type"] == "application/xcap-diff+xml" for n in notifies if n["body"])
        )
        self.assertEqual(notifies[-1]["body"], "", "the removal NOTIFY carries no body")


class KamailioTcpTest(KamailioTest):
    kind = "tcp"
