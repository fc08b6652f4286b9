"""``xcapdiff status``: the running extension's counters, from its status file.

    xcapdiff status [--config PATH | --spool-dir DIR] [--json]

The extension refreshes ``status.json`` in its spool directory every few seconds
(``statusfile.py``); this reads it.  Exit status: 0 running, 1 stopped, stale (the
server died without a last word) or no status file, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import IO, Any

__all__ = ["add_status_command"]


def add_status_command(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="show the running extension's counters (from its status file)",
        description=(
            "Show what the XCAPDiff backend running inside OpenXCAP has done: changes "
            "accepted, publications sent, retried, failed, fallbacks by reason, changes "
            "dropped, what is pending, the spool size and the publication latency."
        ),
    )
    where = status.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        metavar="PATH",
        help="OpenXCAP's config.ini, to find spool_dir (default /etc/openxcap/config.ini; "
        "xcapdiff.ini beside it is read too)",
    )
    where.add_argument("--spool-dir", metavar="DIR", help="the spool directory itself")
    status.add_argument("--json", action="store_true", help="print the status file's JSON")
    status.set_defaults(run=_cmd_status)


def _cmd_status(args: argparse.Namespace, out: IO[bytes], err: IO[str]) -> int:
    from .cli import UsageError
    from .errors import ConfigError
    from .statusfile import StatusUnavailable, read_status, render_status, state_of

    directory = args.spool_dir
    if directory is None:
        from .configfile import read_settings

        try:
            directory = read_settings(args.config).spool_dir
        except ConfigError as error:
            raise UsageError(str(error)) from None
    try:
        data = read_status(directory)
    except StatusUnavailable as error:
        err.write(f"xcapdiff status: {error}\n")
        return 1
    now = time.time()
    if args.json:
        out.write((json.dumps(data, sort_keys=True, indent=1) + "\n").encode())
    else:
        out.write(render_status(data, now).encode())
    return 0 if state_of(data, now) == "running" else 1
