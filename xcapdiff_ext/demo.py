"""``make demo``: the whole path on one machine, with neither OpenXCAP nor OpenSIPS.

    python -m xcapdiff_ext.demo [--no-colour]

What runs is the product, not a mock-up:

- an in-process document store that honours OpenXCAP 3.x's storage contract
  (``MemoryStorage``: the result table of shared/openxcap/CONTRACT.md §2, a fetch
  before every write, element operations arriving as whole-document writes);
- the real storage hook (``PublishingStorage``) and runtime (publisher, spool, the
  reactor thread, the diff worker process), as inside OpenXCAP;
- the real SIP transport, publishing over loopback to an embedded ``xcapdiff
  monitor`` (the RFC 3903 event state compositor of ``sip/monitor.py``).

It plays a short XCAP session for ``sip:alice@example.com`` with ``min_interval = 0``
(each change is published on its own) and prints, for each step, the XCAP request,
the HTTP status and ETag, and the xcap-diff document the monitor received; then the
publisher's counters.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from lxml import etree

from .xmlsafe import parse_document, parse_fragment

__all__ = ["MemoryStorage", "XcapApplication", "main"]

OWNER = "sip:alice@example.com"
ROOT = "http://xcap.example.com/xcap-root"
RL_NS = "urn:ietf:params:xml:ns:resource-lists"
DOC = f"/resource-lists/users/{OWNER}/index"
LIST = DOC + '/~~/resource-lists/list[@name="friends"]'
NAMESPACES = {"resource-lists": RL_NS}
_REASONS = {
    200: "OK",
    201: "Created",
    404: "Not Found",
    409: "Conflict",
    412: "Precondition Failed",
}


# ----------------------------------------------------------------- the document store


@dataclass
class Response:
    """OpenXCAP's ``StatusResponse``: code, etag, data, old_etag."""

    code: int
    etag: str | None = None
    data: bytes | None = None
    old_etag: str | None = None

    @property
    def succeed(self) -> bool:
        return 200 <= self.code <= 299


@dataclass
class Row:
    doc: bytes
    etag: str


class MemoryStorage:
    """An async document store with OpenXCAP 3.x's ``Database`` storage semantics."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str | None, str], Row] = {}

    @staticmethod
    def _key(uri: Any) -> tuple[str, str | None, str]:
        return (uri.application_id, uri.doc_selector.user_id, uri.doc_selector.document_path)

    async def fetch_document(self, uri: Any) -> list[tuple[Row]]:
        await asyncio.sleep(0)  # a database round trip
        row = self._rows.get(self._key(uri))
        return [] if row is None else [(Row(row.doc, row.etag),)]

    async def get_document(self, uri: Any, check_etag: Any) -> Response:
        rows = await self.fetch_document(uri)
        if not rows:
            return Response(404)
        row = rows[0][0]
        check_etag(row.etag)
        return Response(200, row.etag, row.doc)

    async def put_document(self, uri: Any, document: bytes, check_etag: Any) -> Response:
        rows = await self.fetch_document(uri)
        if rows:
            row = rows[0][0]
            if row.doc == document:
                return Response(200, row.etag, row.doc)  # no-op: old_etag None
            check_etag(row.etag)
            etag = secrets.token_hex(8)
            await asyncio.sleep(0)
            self._rows[self._key(uri)] = Row(document, etag)
            return Response(200, etag, old_etag=row.etag)
        check_etag(None, False)
        etag = secrets.token_hex(8)
        self._rows[self._key(uri)] = Row(document, etag)
        return Response(201, etag)

    async def delete_document(self, uri: Any, check_etag: Any) -> Response:
        rows = await self.fetch_document(uri)
        if not rows:
            return Response(404)
        check_etag(rows[0][0].etag)
        del self._rows[self._key(uri)]
        return Response(200, old_etag=rows[0][0].etag)

    def stop(self) -> None:
        self._rows.clear()


# ---------------------------------------------------------- XCAP URIs and operations


@dataclass
class DocumentSelector:
    application_id: str
    context: str
    user_id: str | None
    document_path: str


@dataclass
class User:
    username: str | None
    domain: str | None

    @property
    def uri(self) -> str:
        return f"sip:{self.username}@{self.domain}"


class AttributeSelector:
    def __init__(self, name: str) -> None:
        self.attribute = name

    def __str__(self) -> str:
        return "@" + self.attribute


@dataclass
class NodeSelector:
    text: str
    steps: list[str] = field(default_factory=list)
    terminal_selector: AttributeSelector | None = None

    def __str__(self) -> str:
        return self.text


_STEP = re.compile(r"([A-Za-z_][\w.-]*)((?:\[[^\]]*\])*)$")


class XcapUri:
    """The parts of OpenXCAP's ``XCAPUri`` the storage and the hook use."""

    def __init__(self, xcap_root: str, resource_selector: str) -> None:
        self.xcap_root = xcap_root
        self.resource_selector = unquote(resource_selector)
        doc, _, node = self.resource_selector.partition("/~~")
        parts = doc.strip("/").split("/")
        if len(parts) < 3 or parts[1] not in ("users", "global"):
            raise ValueError(f"not an XCAP document selector: {doc!r}")
        users = parts[1] == "users"
        user_id = parts[2] if users else None
        path = "/".join(parts[3:] if users else parts[2:])
        self.application_id = parts[0]
        self.doc_selector = DocumentSelector(parts[0], parts[1], user_id, path)
        name, _, domain = (user_id or "").removeprefix("sip:").partition("@")
        self.user = User(name or None, domain or None)
        self.node_selector: NodeSelector | None = None
        if node:
            steps = [s for s in _split_steps(node) if s]
            terminal = None
            if steps and steps[-1].startswith("@"):
                terminal = AttributeSelector(steps.pop()[1:])
            self.node_selector = NodeSelector(node, steps, terminal)


def _split_steps(text: str) -> list[str]:
    steps, depth, current = [], 0, ""
    for char in text:
        if char == "/" and depth == 0:
            steps.append(current)
            current = ""
            continue
        depth += char == "["
        depth -= char == "]"
        current += char
    steps.append(current)
    return steps


def _xpath(steps: list[str]) -> str:
    out = []
    for step in steps:
        match = _STEP.match(step)
        if match is None:
            raise ValueError(f"unsupported node selector step {step!r}")
        out.append(f"d:{match[1]}{match[2]}")
    return "/" + "/".join(out)


class Conflict(Exception):
    """An XCAP 409 (no parent, cannot insert)."""


class XcapApplication:
    """The application-usage side of OpenXCAP for resource-lists: what it does with a
    request before the storage sees it (element and attribute operations read the
    document, edit it and write all of it back, with the same ``uri`` object)."""

    def __init__(self, storage: Any, xcap_root: str = ROOT) -> None:
        self.storage = storage
        self.root = xcap_root

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, str | None]:
        uri = XcapUri(self.root, path)

        def check(etag: str | None, exists: bool = True) -> None:
            pass  # the demo's client sends no If-Match / If-None-Match

        try:
            if uri.node_selector is None:
                if method == "PUT":
                    result = await self.storage.put_document(uri, body, check)
                else:
                    result = await self.storage.delete_document(uri, check)
                return result.code, result.etag
            current = await self.storage.get_document(uri, check)
            if current.code == 404:
                return 404, None
            new, created = self._edit(current.data, uri.node_selector, method, body)
            result = await self.storage.put_document(uri, new, check)
            return (201 if created and result.code == 200 else result.code), result.etag
        except Conflict:
            return 409, None

    @staticmethod
    def _edit(data: bytes, node: NodeSelector, method: str, body: bytes) -> tuple[bytes, bool]:
        tree = parse_document(data, where="stored document")
        ns = {"d": RL_NS}
        found = tree.xpath(_xpath(node.steps), namespaces=ns)
        created = False
        if node.terminal_selector is not None:
            if len(found) != 1:
                raise Conflict
            name = node.terminal_selector.attribute
            if method == "PUT":
                found[0].set(name, body.decode())
            else:
                found[0].attrib.pop(name, None)
        elif method == "DELETE":
            if len(found) != 1:
                raise Conflict
            found[0].getparent().remove(found[0])
        else:
            element = parse_fragment(body, etree.Element(f"{{{RL_NS}}}w"), where="element")[0]
            if len(found) == 1:
                found[0].getparent().replace(found[0], element)
            else:
                parents = tree.xpath(_xpath(node.steps[:-1]), namespaces=ns)
                if len(parents) != 1:
                    raise Conflict
                parents[0].append(element)
                created = True
        return etree.tostring(tree, xml_declaration=True, encoding="UTF-8"), created


# ------------------------------------------------------------------------ the show


SCRIPT: list[tuple[str, str, str, bytes]] = [
    (
        "create a resource-lists document (document PUT)",
        "PUT",
        DOC,
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">'
        b'<list name="friends"><entry uri="sip:carol@example.com">'
        b"<display-name>Carol</display-name></entry></list></resource-lists>",
    ),
    (
        "add a buddy (element PUT)",
        "PUT",
        LIST + '/entry[@uri="sip:bob@example.com"]',
        b'<entry uri="sip:bob@example.com"><display-name>Bob</display-name></entry>',
    ),
    ("rename the list (attribute PUT)", "PUT", LIST + "/@name", b"buddies"),
    (
        "remove a buddy (element DELETE)",
        "DELETE",
        DOC + '/~~/resource-lists/list[@name="buddies"]/entry[@uri="sip:carol@example.com"]',
        b"",
    ),
    ("re-PUT the identical document", "PUT", DOC, b""),  # body: the stored bytes
    ("delete the document (document DELETE)", "DELETE", DOC, b""),
]


class Style:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text


def show_xcap_diff(body: bytes, style: Style) -> list[str]:
    """The xcap-diff document, one line per document entry and per operation."""
    root = parse_document(body, where="xcap-diff").getroot()
    colours = {"add": "32", "replace": "33", "remove": "31"}
    lines = [f'<d:xcap-diff xcap-root="{root.get("xcap-root")}">']
    for entry in root:
        attrs = " ".join(f'{k}="{v}"' for k, v in entry.attrib.items())
        tag = etree.QName(entry).localname
        if len(entry) == 0:
            lines.append(f"  <d:{tag} {attrs}/>")
            continue
        lines.append(f"  <d:{tag} {attrs}>")
        for op in entry:
            text = etree.tostring(op, encoding="unicode", with_tail=False)
            text = re.sub(r' xmlns(:\w+)?="[^"]*"', "", text)
            lines.append("    " + style(text, colours.get(etree.QName(op).localname, "0")))
        lines.append(f"  </d:{tag}>")
    lines.append("</d:xcap-diff>")
    return lines


async def play(runtime: Any, storage: Any, received: list[Any], style: Style) -> None:
    app = XcapApplication(storage)
    stored: bytes = b""
    for number, (title, method, path, script_body) in enumerate(SCRIPT, 1):
        body = stored if method == "PUT" and not script_body else script_body
        print(style(f"── {number}. {title} ", "1") + "─" * max(0, 60 - len(title)))
        print(f"{style(method, '36')} {ROOT}{path}")
        if body and path != DOC:
            print(f"    {body.decode()}")
        seen = len(received)
        code, etag = await app.request(method, path, body)
        shown = f'ETag "{etag}"' if etag else "no ETag"
        status = style(f"{code} {_REASONS.get(code, '')}", "32" if code < 300 else "31")
        print(f"→ {status}  {shown}")
        if code < 300:
            current = await storage.get_document(XcapUri(ROOT, DOC), lambda *a: None)
            stored = current.data or b""
        deadline = time.monotonic() + (0.6 if number == 5 else 5.0)
        while len(received) == seen and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if len(received) == seen:
            print(style("  (nothing published: the document did not change)", "2"))
        for item in received[seen:]:
            print(f"  monitor received PUBLISH {item.aor} ({item.kind}, "
                  f"{'valid' if item.valid else 'INVALID'}):")  # fmt: skip
            for line in show_xcap_diff(item.body, style):
                print("    " + line)
        print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="xcapdiff-demo", description=__doc__.splitlines()[0])
    ap.add_argument("--no-colour", action="store_true", help="never colour the output")
    args = ap.parse_args(argv)
    style = Style(sys.stdout.isatty() and not args.no_colour)

    from twisted.internet import reactor

    from .config import parse_settings
    from .openxcap.runtime import Runtime
    from .openxcap.storage import PublishingStorage
    from .sip.monitor import PublishMonitor

    spool = tempfile.mkdtemp(prefix="xcapdiff-demo-")
    received: list[Any] = []
    monitor = PublishMonitor(reactor, on_publication=received.append)
    port = reactor.listenUDP(0, monitor.udp_protocol(), interface="127.0.0.1")
    tcp = reactor.listenTCP(port.getHost().port, monitor.tcp_factory(), interface="127.0.0.1")
    settings = parse_settings(
        {
            "transport": "sip",
            "sip_proxy": f"sip:127.0.0.1:{port.getHost().port}",
            "min_interval": "0",
            "status_interval": "0",
            "spool_dir": spool,
            "xcap_root": ROOT,
        }
    )
    runtime = Runtime(settings, reactor=reactor)
    storage = PublishingStorage(MemoryStorage(), runtime.sink, xcap_root=settings.xcap_root)
    started = time.monotonic()
    try:
        runtime.start(None)
        print(f"xcap-diff demo: OpenXCAP storage hook → publisher → SIP PUBLISH → monitor "
              f"(sip:127.0.0.1:{port.getHost().port}), owner {OWNER}\n")  # fmt: skip
        asyncio.run(play(runtime, storage, received, style))
        status = runtime.publisher.status()
    finally:

        def close() -> None:
            port.stopListening()
            tcp.stopListening()
            reactor.stop()

        reactor.callFromThread(close)
        runtime.wait_stopped()
        shutil.rmtree(spool, ignore_errors=True)
    latency = status.get("latency") or {}
    print(style("── counters ", "1") + "─" * 49)
    print(f"changes accepted {status['accepted']}, publications {status['published']}, "
          f"retried {status['retried']}, failed {status['failed']}, dropped {status['dropped']}, "
          f"fallbacks {status['fallbacks'] or 'none'}")  # fmt: skip
    if latency:
        print(f"latency change → delivered: p50 {latency['p50'] * 1000:.1f} ms, "
              f"max {latency['max'] * 1000:.1f} ms")  # fmt: skip
    valid = all(r.valid for r in received)
    took = time.monotonic() - started
    print(f"monitor: {len(received)} xcap-diff bodies, all valid: {valid}; demo took {took:.1f} s")
    return 0 if received and all(r.valid for r in received) else 1


if __name__ == "__main__":
    sys.exit(main())
