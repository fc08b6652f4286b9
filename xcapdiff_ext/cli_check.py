"""``xcapdiff check``: is this installation ready to publish?  (see ``check.py``)

    xcapdiff check [--config PATH] [--presentity SIPURI]

Exit status: 0 when every check passed (warnings allowed), 1 when one failed, 2 for
bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Any

__all__ = ["add_check_command"]


def add_check_command(commands: Any) -> None:
    check = commands.add_parser(
        "check",
        help="check the settings, OpenXCAP, the spool and OpenSIPS, with fixes",
        description=(
            "Check everything the XCAPDiff backend needs, reading the settings exactly as "
            "it does: settings, spool directory, OpenXCAP and its [Server] backend, double "
            "publishing, and the transport (MI: answers, lists pua_publish, accepts an "
            "xcap-diff publication for a probe presentity, then removes it; SIP: OPTIONS "
            "to the next hop, a PUBLISH with Expires: 0 not answered 489). One line per "
            "item, with the fix."
        ),
    )
    check.add_argument(
        "--config",
        metavar="PATH",
        help="OpenXCAP's config.ini (default: the one OpenXCAP reads, "
        "/etc/openxcap/config.ini; xcapdiff.ini beside it is read too)",
    )
    check.add_argument(
        "--presentity",
        metavar="SIPURI",
        help="the presentity of the probe publication "
        "(default sip:xcapdiff-check@<the xcap-root's host>)",
    )
    check.set_defaults(run=_cmd_check)


def _cmd_check(args: argparse.Namespace, out: IO[bytes], err: IO[str]) -> int:
    from twisted.internet import reactor

    from .check import exit_status, render, run_checks

    outcome: dict[str, Any] = {}

    def go() -> None:
        d = run_checks(reactor, Path(args.config) if args.config else None,
                       presentity=args.presentity)  # fmt: skip
        d.addBoth(lambda result: outcome.setdefault("result", result))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()  # type: ignore[attr-defined]
    result = outcome.get("result")
    from twisted.python.failure import Failure

    if isinstance(result, Failure):
        err.write(f"xcapdiff check: {result.getTraceback()}")
        return 1
    colour = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
    out.write(render(result, colour=colour).encode())
    out.flush()
    return exit_status(result)
