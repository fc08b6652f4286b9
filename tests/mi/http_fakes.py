"""An in-process OpenSIPS MI HTTP server replaying shared/opensips/MI.md (3.6.8).

``FakeMiHttp(reactor)`` serves ``POST /mi`` (mi_http, JSON-RPC 2.0) and ``POST /RPC2``
(mi_xmlrpc_ng, the named params as one struct) on a loopback ``listenTCP(0)``:

- ``pua_publish`` success: ``{"reply":"200 OK","ETag":<new each time>,"Expires":n}``
  (expires raised to 300, capped at 3600), one publication per presentity;
  ``expires`` 0 removes it (``Expires`` 0) and a second removal gets ``500 MI/PUBLISH failed``;
- errors: unknown etag ``418 Wrong ETag``, ``400 Unknown event``, ``404 Bad presentity
  URI``, ``-32602`` for a name set outside the recipes or a non-numeric expires,
  ``-32601`` for another method, ``-32700`` (id null) for bad JSON; XML-RPC: faults with
  the same codes;
- ``/mi`` with a Content-Type other than ``application/json``: never answered (mi_http
  hangs); ``GET`` gets 405;
- knobs: ``delay`` (seconds before each answer, e.g. 0.5 like mi_http), ``sip_reply``
  (e.g. ``"408 Request Timeout"``: a result-level SIP failure), ``http_status`` (answer
  that status instead), ``body_override`` (answer these bytes), ``hang`` (answer nothing).

``requests`` records what arrived: ``Seen(path, content_type, params, id)``.
``stop()`` closes the port, cancels pending answers and drops hanging connections.
"""

from __future__ import annotations

import itertools
import json
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

_REQUIRED = {"presentity_uri", "expires", "event_package"}
_OPTIONAL = {"etag", "extra_headers", "content_type", "body"}


@dataclass
class Seen:
    path: str
    content_type: str
    params: Any
    id: Any


class MiFailure(Exception):
    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(code, message)
        self.code, self.message, self.data = code, message, data


class _Publications:
    """pua's table: one publication per presentity, a new ETag per accepted call."""

    def __init__(self) -> None:
        self.etags: dict[str, str] = {}
        self._counter = itertools.count(1)
        self.sip_reply: str | None = None

    def publish(self, params: object) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise MiFailure(
                -32602, "Invalid params", "Ambiguous call, use named parameters instead"
            )
        names = set(params)
        if (
            not names >= _REQUIRED
            or not names <= _REQUIRED | _OPTIONAL
            or ("content_type" in names) != ("body" in names)
        ):
            data = "Too few or too many parameters"
            if names - _REQUIRED - _OPTIONAL or ("content_type" in names) != ("body" in names):
                data = "Named parameters do not match"
            raise MiFailure(-32602, "Invalid params", data)
        expires = params["expires"]
        if isinstance(expires, str) and expires.isdigit():
            expires = int(expires)
        if isinstance(expires, bool) or not isinstance(expires, int):
            raise MiFailure(-32602, "Invalid params", "Bad type for parameter 'expires'")
        if params["event_package"] != "xcap-diff":
            raise MiFailure(400, "Unknown event")
        uri = params["presentity_uri"]
        if not isinstance(uri, str) or not uri.startswith(("sip:", "sips:")):
            raise MiFailure(404, "Bad presentity URI")
        etag = params.get("etag")
        if etag is not None and self.etags.get(uri) != etag:
            raise MiFailure(418, "Wrong ETag")  # decided locally, no SIP sent
        if expires == 0:
            old = self.etags.pop(uri, None)
            if old is None:
                raise MiFailure(500, "MI/PUBLISH failed")
            return {"reply": "200 OK", "ETag": old, "Expires": 0}
        if "body" not in params and uri not in self.etags:
            raise MiFailure(500, "MI/PUBLISH failed")
        if self.sip_reply is not None:
            return {"reply": self.sip_reply}
        new = f"a.1795696722.1981.{next(self._counter)}.0"
        self.etags[uri] = new
        return {"reply": "200 OK", "ETag": new, "Expires": min(max(expires, 300), 3600)}


class _Root(Resource):
    def getChild(self, path: bytes, request: Request) -> Resource:
        return notFound()


class _MiResource(Resource):
    isLeaf = True

    def __init__(self, fake: FakeMiHttp, xmlrpc: bool) -> None:
        super().__init__()
        self._fake, self._xmlrpc = fake, xmlrpc

    def render_GET(self, request: Request) -> bytes:
        request.setResponseCode(405)
        return b"Method Not Allowed"

    def render_POST(self, request: Request) -> Any:
        fake = self._fake
        content_type = (request.getHeader("content-type") or "").split(";")[0].strip()
        data = request.content.read()
        if self._xmlrpc:
            reply, seen = self._xmlrpc_reply(data, content_type)
        else:
            if content_type != "application/json":
                fake.requests.append(Seen(request.path.decode(), content_type, None, None))
                return self._hang(request)
            reply, seen = self._jsonrpc_reply(data, content_type)
        fake.requests.append(seen)
        if fake.hang:
            return self._hang(request)
        status = fake.http_status
        if fake.body_override is not None:
            reply = fake.body_override
        if fake.delay:
            call = fake.reactor.callLater(fake.delay, self._answer, request, status, reply)
            fake.delayed.add(call)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
            return NOT_DONE_YET
        self._answer(request, status, reply)
        return NOT_DONE_YET

    def _hang(self, request: Request) -> Any:
        fake = self._fake
        fake.hanging.add(request)
        request.notifyFinish().addBoth(lambda _: fake.hanging.discard(request))
        return NOT_DONE_YET

    def _answer(self, request: Request, status: int, reply: bytes) -> None:
        self._fake.delayed = {c for c in self._fake.delayed if c.active()}
        if request.finished or request.channel is None:
            return
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/xml" if self._xmlrpc else b"application/json")
        request.write(reply)
        request.finish()

    def _jsonrpc_reply(self, data: bytes, content_type: str) -> tuple[bytes, Seen]:
        try:
            message = json.loads(data)
        except ValueError:
            error = {"code": -32700, "message": "Parse error"}
            reply = {"jsonrpc": "2.0", "error": error, "id": None}
            return json.dumps(reply).encode(), Seen("/mi", content_type, None, None)
        rid = message.get("id")
        params = message.get("params")
        seen = Seen("/mi", content_type, params, rid)
        try:
            if message.get("method") != "pua_publish":
                raise MiFailure(-32601, "Method not found")
            result = self._fake.publications.publish(params)
            body: dict[str, Any] = {"jsonrpc": "2.0", "result": result, "id": rid}
        except MiFailure as err:
            error: dict[str, Any] = {"code": err.code, "message": err.message}
            if err.data is not None:
                error["data"] = err.data
            body = {"jsonrpc": "2.0", "error": error, "id": rid}
        return json.dumps(body, separators=(",", ":")).encode(), seen

    def _xmlrpc_reply(self, data: bytes, content_type: str) -> tuple[bytes, Seen]:
        try:
            params, method = xmlrpc.client.loads(data, use_builtin_types=True)
        except Exception:
            fault = xmlrpc.client.Fault(-32700, "Parse error")
            return xmlrpc.client.dumps(fault).encode(), Seen("/RPC2", content_type, None, None)
        seen = Seen("/RPC2", content_type, params, None)
        try:
            if method != "pua_publish":
                raise MiFailure(-32601, "Method not found")
            if len(params) != 1:
                raise MiFailure(-32602, "Invalid params", "Ambiguous call")
            result = self._fake.publications.publish(params[0])
            reply = xmlrpc.client.dumps((result,), methodresponse=True)
        except MiFailure as err:
            reply = xmlrpc.client.dumps(xmlrpc.client.Fault(err.code, err.message))
        return reply.encode(), seen


class FakeMiHttp:
    """A loopback mi_http + mi_xmlrpc_ng; ``url`` and ``rpc2_url`` once ``start()`` fired."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.publications = _Publications()
        self.requests: list[Seen] = []
        self.delay = 0.0
        self.http_status = 200
        self.body_override: bytes | None = None
        self.hang = False
        self.hanging: set[Request] = set()
        self.delayed: set[IDelayedCall] = set()
        root = _Root()
        root.putChild(b"mi", _MiResource(self, xmlrpc=False))
        root.putChild(b"RPC2", _MiResource(self, xmlrpc=True))
        self.site = Site(root)
        self.site.displayTracebacks = False
        self.port: Any = None

    @property
    def sip_reply(self) -> str | None:
        return self.publications.sip_reply

    @sip_reply.setter
    def sip_reply(self, value: str | None) -> None:
        self.publications.sip_reply = value

    def start(self) -> None:
        self.port = self.reactor.listenTCP(0, self.site, interface="127.0.0.1")
        port = self.port.getHost().port
        self.url = f"http://127.0.0.1:{port}/mi"
        self.rpc2_url = f"http://127.0.0.1:{port}/RPC2"

    @inlineCallbacks
    def stop(self) -> Any:
        for call in self.delayed:
            if call.active():
                call.cancel()
        self.delayed.clear()
        for request in list(self.hanging):
            request.channel.transport.abortConnection()
        yield self.port.stopListening()
        # let aborted connections report connectionLost
        d: Deferred[None] = Deferred()
        self.reactor.callLater(0, d.callback, None)
        yield d
