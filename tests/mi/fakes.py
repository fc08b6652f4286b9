"""In-process fake OpenSIPS MI servers (datagram and FIFO) and a per-test reactor.

``FakePua`` replays what OpenSIPS 3.6.8 answered to ``pua_publish`` (shared/opensips/MI.md):
one publication per presentity, a new ETag on every success (the ETag names the
presentity's user, so tests can see that no reply crossed to another owner), 418 for an
etag pua does not hold, removal with the old ETag and ``Expires: 0``, 500 when there is
nothing to remove, ``400 Unknown event``, and the modes a test switches on:

``reply_408``   a result ``{"reply": "408 Request Timeout"}`` (the PUBLISH got no answer)
``garbage``     bytes that are no MI reply
``silent``      no reply at all
``drop_first``  (datagram) this many datagrams are received and ignored
``parse_error`` (datagram) the plain-text ``400 Parse_error`` to every datagram

``run(test)`` runs ``async def test(harness)`` on a fresh ``PollReactor`` that is NOT the
global reactor (so code that falls back to the global reactor hangs and the test fails),
with a hard time limit; the reactor's own descriptors are closed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.pollreactor import PollReactor
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

# ------------------------------------------------------------------------ the reactor


@dataclass
class Harness:
    reactor: Any
    guard: Any = None

    def delayed_calls(self) -> list[Any]:
        """Our DelayedCalls (not the harness's time limit)."""
        return [c for c in self.reactor.getDelayedCalls() if c is not self.guard]

    async def sleep(self, seconds: float) -> None:
        d: Deferred[None] = Deferred()
        self.reactor.callLater(seconds, d.callback, None)
        await d

    async def settle(self) -> None:
        """Let the reactor run a few iterations (pending I/O and callLater(0))."""
        for _ in range(3):
            await self.sleep(0)


def run(test: Callable[[Harness], Coroutine[Any, Any, Any]], *, limit: float = 8.0) -> Any:
    reactor = PollReactor()
    harness = Harness(reactor)
    outcome: list[Any] = []

    def go() -> None:
        d = Deferred.fromCoroutine(test(harness))
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    harness.guard = reactor.callLater(limit, reactor.stop)
    reactor.callWhenRunning(go)
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        if harness.guard.active():
            harness.guard.cancel()
        for call in reactor.getDelayedCalls():
            call.cancel()
        for selectable in reactor.removeAll():
            fileno = getattr(selectable, "fileno", None)
            if callable(fileno):  # close what a failed test left behind
                with contextlib.suppress(OSError):
                    os.close(fileno())
        if reactor.waker is not None:  # removeAll() keeps it: it is the reactor's own
            # Public removeReader: the private _removeInternalReader is not in Twisted
            # 22.4 (Debian 12); the reactor is discarded, so _internalReaders can keep it.
            reactor.removeReader(reactor.waker)
            reactor.waker.connectionLost(None)
    if not outcome:
        raise AssertionError(f"the test did not finish within {limit}s")
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------------------ pua


@dataclass
class FakePua:
    """pua + pua_mi behind the MI: decides the JSON-RPC reply to a ``pua_publish``."""

    reply_408: bool = False
    garbage: bool = False
    silent: bool = False
    publications: dict[str, str] = field(default_factory=dict)  # presentity -> ETag
    requests: list[dict[str, Any]] = field(default_factory=list)
    counter: int = 0

    def answer(self, message: dict[str, Any]) -> bytes | None:
        self.requests.append(message)
        if self.silent or "id" not in message:
            return None
        if self.garbage:
            return b"\x00\xffthis is not an MI reply"
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        outcome = self.publish(message.get("params"))
        out["error" if "code" in outcome else "result"] = outcome
        return json.dumps(out, separators=(",", ":")).encode()

    def publish(self, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict) or "extra_headers" in params:
            return {"code": -32602, "message": "Invalid params", "data": "test: unexpected"}
        if params.get("event_package") != "xcap-diff":
            return {"code": 400, "message": "Unknown event"}
        uri, expires, etag = params["presentity_uri"], int(params["expires"]), params.get("etag")
        if not uri.startswith("sip:"):
            return {"code": 404, "message": "Bad presentity URI"}
        if etag is not None and etag not in self.publications.values():
            return {"code": 418, "message": "Wrong ETag"}  # decided locally by pua
        if self.reply_408:
            return {"reply": "408 Request Timeout"}
        if expires == 0:
            old = self.publications.pop(uri, None)
            if old is None:
                return {"code": 500, "message": "MI/PUBLISH failed"}
            return {"reply": "200 OK", "ETag": old, "Expires": 0}
        self.counter += 1
        user = uri[4:].split("@", 1)[0]
        self.publications[uri] = tag = f"a.{user}.{self.counter}"
        return {"reply": "200 OK", "ETag": tag, "Expires": max(300, min(expires, 3600))}


# ------------------------------------------------------------------------ mi_datagram


class FakeMiDatagram(DatagramProtocol):
    """mi_datagram: one JSON-RPC request per datagram, reply to the sender."""

    def __init__(
        self, pua: FakePua | None = None, *, drop_first: int = 0, parse_error: bool = False
    ) -> None:
        self.pua = pua or FakePua()
        self.drop_first = drop_first
        self.parse_error = parse_error  # answer as if every datagram arrived truncated
        self.received: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)
        if self.drop_first > 0:
            self.drop_first -= 1
            return
        try:
            message = json.loads(datagram)
            if self.parse_error:
                raise ValueError("truncated")
        except ValueError:
            self.transport.write(b"400 Parse_error", addr)
            return
        reply = self.pua.answer(message)
        if reply is not None:
            self.transport.write(reply, addr)


def listen_datagram(reactor: Any, server: FakeMiDatagram) -> Any:
    return reactor.listenUDP(0, server, interface="127.0.0.1")


# ------------------------------------------------------------------------ mi_fifo


@implementer(IReadDescriptor)
class FakeMiFifo:
    """mi_fifo on a real FIFO: reads ``:<reply>:<JSON>`` requests, writes the reply into
    ``<reply_dir>/<reply>`` and closes it (no trailing newline)."""

    def __init__(self, reactor: Any, fifo_path: str, reply_dir: str, pua: FakePua | None = None):
        self.reactor, self.fifo_path, self.reply_dir = reactor, fifo_path, reply_dir
        self.pua = pua or FakePua()
        self.buffer = b""
        self.unanswered: list[str] = []  # reply FIFOs nobody was listening on
        os.mkfifo(fifo_path, 0o600)
        self.fd = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK)
        # Keep a writer open ourselves, as mi_fifo does, so no EOF spins the reactor.
        self.keep = os.open(fifo_path, os.O_WRONLY | os.O_NONBLOCK)
        reactor.addReader(self)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "FakeMiFifo"

    def connectionLost(self, reason: Any) -> None:
        pass

    def doRead(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.buffer += chunk
        self.parse()

    def parse(self) -> None:
        decoder = json.JSONDecoder()
        while True:
            self.buffer = self.buffer.lstrip(b"\n")
            if not self.buffer.startswith(b":"):
                self.buffer = b""  # garbage: mi_fifo skips it without a reply
                return
            end = self.buffer.find(b":", 1)
            if end < 0:
                return
            name = self.buffer[1:end].decode()
            text = self.buffer[end + 1 :].decode("utf-8", "replace")
            try:
                message, used = decoder.raw_decode(text)
            except ValueError:
                return  # incomplete: wait for more
            self.buffer = text[used:].encode()
            reply = self.pua.answer(message)
            if reply is not None:
                self.reply(name, reply)

    def reply(self, name: str, data: bytes) -> None:
        path = os.path.join(self.reply_dir, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            self.unanswered.append(name)  # "no client at ..."
            return
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def stop(self) -> None:
        self.reactor.removeReader(self)
        os.close(self.fd)
        os.close(self.keep)
        os.unlink(self.fifo_path)
