"""``xcapdiff monitor``: a small SIP endpoint that prints the xcap-diff bodies published to it.

    xcapdiff monitor [--listen udp:HOST:PORT] [--listen tcp:HOST:PORT] [--count N] [--json]

Answers PUBLISH for the ``xcap-diff`` event package as an RFC 3903 event state
compositor (``sip/monitor.py``) and prints one block per received body: time,
source, AOR, SIP-ETag, Expires, ``valid`` or ``INVALID: problem`` (RFC 5874 schema
and ``parse_xcap_diff``), then the body exactly as received.  ``--json`` prints one
JSON object per line instead.  ``--count N`` exits after N bodies.  Listens on
``udp:127.0.0.1:5099`` by default; ``--listen`` may be repeated.

Exit status: 0 (stopped by --count or a signal), 2 bad usage (e.g. a bad
``--listen`` or a port that cannot be bound).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sip.monitor import Received

__all__ = ["DEFAULT_LISTEN", "add_monitor_command", "format_received", "parse_listen"]

DEFAULT_LISTEN = "udp:127.0.0.1:5099"


def parse_listen(text: str) -> tuple[str, str, int]:
    """``udp:HOST:PORT`` / ``tcp:HOST:PORT`` (``[v6]`` brackets allowed) → (kind, host, port)."""
    from .cli import UsageError

    kind, _, rest = text.partition(":")
    host, sep, port_text = rest.rpartition(":")
    kind = kind.lower()
    if kind not in ("udp", "tcp") or not sep:
        raise UsageError(f"--listen {text!r}: expected udp:HOST:PORT or tcp:HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--listen {text!r}: expected udp:HOST:PORT or tcp:HOST:PORT")
    return kind, host, int(port_text)


def add_monitor_command(commands: Any) -> None:
    monitor = commands.add_parser(
        "monitor",
        help="listen for SIP PUBLISH (event xcap-diff) and print each body received",
        description=(
            "A small SIP endpoint for operators and demos: answers PUBLISH for the xcap-diff "
            "event package with 200 OK and a SIP-ETag (412 for an unknown SIP-If-Match, 489 "
            "for other events), and prints every xcap-diff body received with who sent it, "
            "when, and whether it validates against the RFC 5874 schema."
        ),
    )
    monitor.add_argument(
        "--listen",
        action="append",
        metavar="udp:HOST:PORT",
        help=f"where to listen (udp: or tcp:; repeatable; default {DEFAULT_LISTEN})",
    )
    monitor.add_argument(
        "--count", type=int, metavar="N", help="exit after N bodies have been received"
    )
    monitor.add_argument(
        "--json", action="store_true", help="print one JSON object per line per body"
    )
    monitor.set_defaults(run=_cmd_monitor)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def format_received(received: Received, *, as_json: bool) -> bytes:
    """The printed form of one ``Received`` record."""
    host, port = received.source
    source = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if as_json:
        record = {
            "time": _iso(received.time),
            "source": source,
            "transport": received.transport,
            "aor": received.aor,
            "etag": received.etag,
            "expires": received.expires,
            "kind": received.kind,
            "valid": received.valid,
            "problem": received.problem,
            "body": received.body.decode("utf-8", errors="replace"),
        }
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    verdict = "valid" if received.valid else f"INVALID: {received.problem}"
    head = (
        f"--- {_iso(received.time)} {received.kind} PUBLISH from {source} "
        f"({received.transport})\n"
        f"AOR: {received.aor}\n"
        f"SIP-ETag: {received.etag}  Expires: {received.expires}\n"
        f"{verdict}\n"
    )
    body = received.body if received.body.endswith(b"\n") else received.body + b"\n"
    return head.encode("utf-8") + body + b"\n"


def _cmd_monitor(args: argparse.Namespace, out: IO[bytes], err: IO[str]) -> int:
    from .cli import UsageError

    listens = [parse_listen(text) for text in (args.listen or [DEFAULT_LISTEN])]
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")

    from twisted.internet import reactor as _reactor
    from twisted.internet.error import CannotListenError

    from .sip.monitor import PublishMonitor

    reactor: Any = _reactor
    seen = [0]
    ports: list[Any] = []
    stopping = [False]

    def shut_down() -> None:
        if stopping[0]:
            return
        stopping[0] = True
        for port in ports:
            port.stopListening()
        monitor.stop().addBoth(lambda _: reactor.stop())

    def on_publication(received: Received) -> None:
        out.write(format_received(received, as_json=args.json))
        out.flush()
        seen[0] += 1
        if args.count is not None and seen[0] >= args.count:
            # Let the 200 OK go out before the reactor stops.
            reactor.callLater(0.05, shut_down)

    monitor = PublishMonitor(reactor, on_publication=on_publication)
    try:
        for kind, host, port in listens:
            if kind == "udp":
                ports.append(reactor.listenUDP(port, monitor.udp_protocol(), interface=host))
            else:
                ports.append(reactor.listenTCP(port, monitor.tcp_factory(), interface=host))
    except CannotListenError as error:
        for bound in ports:
            bound.stopListening()
        raise UsageError(f"cannot listen on {kind}:{host}:{port}: {error.socketError}") from None
    for bound, (kind, host, _) in zip(ports, listens, strict=True):
        err.write(f"xcapdiff monitor: listening on {kind}:{host}:{bound.getHost().port}\n")
    err.flush()
    reactor.run()
    return 0
