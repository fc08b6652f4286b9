"""The status file: what the running extension tells ``xcapdiff status``.

The extension lives inside OpenXCAP's process, so there is no port to ask it on.  It
writes ``status.json`` into its spool directory every few seconds and once more when
it stops (``running: false``), each time atomically (a temporary file, then
``os.replace``): a reader sees a whole old file or a whole new one.  Nothing secret is
in it — counters, queue sizes and where publications go.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.task import LoopingCall

__all__ = ["STATUS_NAME", "StatusFile", "StatusUnavailable", "read_status", "render_status"]

STATUS_NAME = "status.json"
FORMAT = 1
INTERVAL = 5.0  # seconds between refreshes; a file older than 3 intervals is stale


class StatusUnavailable(Exception):
    """No readable status file (with the reason and what to do)."""


class StatusFile:
    """Refreshes ``<directory>/status.json`` from ``source()`` in the reactor thread."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        reactor: Any,
        source: Callable[[], dict[str, Any]],
        *,
        interval: float = INTERVAL,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(directory) / STATUS_NAME
        self._reactor = reactor
        self._source = source
        self._interval = interval
        self._wall = wall_clock
        self._started = wall_clock()
        self._loop: LoopingCall | None = None
        self.failures = 0

    def start(self) -> None:
        self._loop = LoopingCall(self.write)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.write(running=False)

    def write(self, running: bool = True) -> None:
        data = {
            "format": FORMAT,
            "pid": os.getpid(),
            "running": running,
            "started": self._started,
            "updated": self._wall(),
            "interval": self._interval,
            **self._source(),
        }
        tmp = self.path.with_name(f".{STATUS_NAME}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data, sort_keys=True, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            # The spool's own writes report a broken directory loudly; a status file
            # is not worth a log line every few seconds.
            self.failures += 1


def read_status(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / STATUS_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StatusUnavailable(
            f"{path}: no status file: the extension has not run with this spool_dir "
            "(is [Server] backend = XCAPDiff set and OpenXCAP started?)"
        ) from None
    except (OSError, ValueError) as err:
        raise StatusUnavailable(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StatusUnavailable(f"{path}: not a status file of this version")
    return data


def state_of(data: dict[str, Any], now: float) -> str:
    """``running``, ``stopped`` or ``stale`` (running said, but not refreshed)."""
    if not data.get("running"):
        return "stopped"
    interval = float(data.get("interval") or INTERVAL)
    return "running" if now - float(data.get("updated", 0)) <= 3 * interval else "stale"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def render_status(data: dict[str, Any], now: float) -> str:
    state = state_of(data, now)
    age = now - float(data.get("updated", now))
    latency = data.get("latency") or {}
    fallbacks = data.get("fallbacks") or {}
    pending_bytes = data.get("pending_bytes", 0)
    rows = [
        ("state", f"{state} (pid {data.get('pid')}, updated {age:.0f} s ago)"),
        ("transport", f"{data.get('transport', '?')} → {data.get('target', '?')}"),
        ("storage", str(data.get("storage", "?"))),
        ("accepted", str(data.get("accepted", 0))),
        ("published", str(data.get("published", 0))),
        ("retried", str(data.get("retried", 0))),
        ("failed", str(data.get("failed", 0))),
        ("dropped", f"{data.get('dropped', 0)} change(s)"),
        (
            "fallbacks",
            ", ".join(f"{k} {v}" for k, v in sorted(fallbacks.items())) or "none",
        ),
        ("pending", f"{data.get('pending_changes', 0)} change(s), {pending_bytes} bytes"),
        ("spool", f"{data.get('spool_bytes', 0)} bytes"),
        (
            "latency",
            " ".join(f"{q} {_ms(latency.get(q))}" for q in ("p50", "p90", "p99", "max"))
            if latency
            else "no publication yet",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n"
