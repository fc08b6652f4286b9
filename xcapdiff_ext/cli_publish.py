"""``xcapdiff publish``: send one xcap-diff body through the configured transport.

    xcapdiff publish XCAPDIFF --owner sip:alice@example.com [--config PATH] [--etag E]

Reads the settings as the OpenXCAP hook does (``config.ini`` + ``xcapdiff.ini``),
builds the transport they name (``mi`` with any ``mi_url`` form, or ``null``) and
publishes once on the real reactor.  Exit status: 0 delivered, 1 refused or failed
(the reason on stderr), 2 bad usage or invalid input.
"""

from __future__ import annotations

import argparse
from typing import IO, Any

__all__ = ["add_publish_command"]


def add_publish_command(commands: Any) -> None:
    publish = commands.add_parser(
        "publish",
        help="publish one xcap-diff document through the configured transport",
        description=(
            "Publish the xcap-diff document XCAPDIFF for OWNER through the transport of the "
            "[XCAPDiff] settings (transport, mi_url, mi_protocol, publish_expires, ...), once. "
            "Prints what the presence server granted."
        ),
    )
    publish.add_argument(
        "xcapdiff", metavar="XCAPDIFF", help="the xcap-diff document ('-' for stdin)"
    )
    publish.add_argument(
        "--owner",
        required=True,
        metavar="SIPURI",
        help="the presentity, e.g. sip:alice@example.com",
    )
    publish.add_argument(
        "--config",
        metavar="PATH",
        help="OpenXCAP's config.ini or any ini with an [XCAPDiff] section "
        "(default /etc/openxcap/config.ini; xcapdiff.ini beside it is read too)",
    )
    publish.add_argument(
        "--etag", metavar="E", help="modify the publication the server granted as E"
    )
    publish.add_argument(
        "--remove",
        action="store_true",
        help="remove the owner's publication instead (mi: pua_publish with expires 0; "
        "XCAPDIFF is not read and may be '-')",
    )
    publish.set_defaults(run=_cmd_publish)


def _cmd_publish(args: argparse.Namespace, out: IO[bytes], err: IO[str]) -> int:
    from .cli import PatchFailed, UsageError, _read
    from .configfile import read_settings
    from .errors import ConfigError, TransportError, XmlInputError
    from .interfaces import Publication
    from .xcapdiff import parse_xcap_diff

    try:
        settings = read_settings(args.config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    body = b"" if args.remove else _read(args.xcapdiff)
    if not args.remove:
        try:
            parse_xcap_diff(body)
        except XmlInputError as error:
            raise UsageError(f"{args.xcapdiff}: not an xcap-diff document: {error}") from None
    try:
        publication = Publication(args.owner, body or b" ", etag=args.etag)
    except ValueError as error:
        raise UsageError(str(error)) from None

    from twisted.internet import reactor

    from .transports import build_transport

    try:
        transport = build_transport(settings, reactor)
    except (ConfigError, ValueError, TransportError) as error:
        raise UsageError(str(error)) from None
    outcome: dict[str, Any] = {}

    def done(result: Any) -> None:
        outcome["result"] = result
        transport.stop().addBoth(lambda _: reactor.stop())

    if args.remove and not hasattr(transport, "remove"):
        raise UsageError(f"transport {settings.transport} has no removal")

    def go() -> None:
        if args.remove:
            d = transport.remove(args.owner, args.etag)  # type: ignore[attr-defined]
        else:
            d = transport.publish(publication)
        d.addBoth(done)

    reactor.callWhenRunning(go)
    reactor.run()  # type: ignore[attr-defined]
    result = outcome.get("result")
    from twisted.python.failure import Failure

    if isinstance(result, Failure):
        if result.check(TransportError):
            kind = "retryable" if getattr(result.value, "retryable", False) else "permanent"
            raise PatchFailed(f"not published ({kind}): {result.getErrorMessage()}")
        raise PatchFailed(f"not published: {result.getErrorMessage()}")
    granted = f"etag={result.etag} expires={result.expires}" if result is not None else ""
    detail = (result.detail if result is not None else "") or "ok"
    verb = "removed" if args.remove else "published"
    out.write(f"{verb} {args.owner} via {settings.transport}: {detail} {granted}\n".encode())
    out.flush()
    return 0
