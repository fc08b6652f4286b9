"""Helpers for the real-peer tests (SIPp, Kamailio): all loopback.

The binaries are installed by ``.ci/run`` (Debian packages ``sip-tester``, ``kamailio``,
``kamailio-presence-modules``, ``kamailio-sqlite-modules``).  A missing binary is a
test FAILURE with the install hint, never a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
APT_HINT = (
    "apt-get install -y --no-install-recommends sip-tester kamailio "
    "kamailio-presence-modules kamailio-sqlite-modules (.ci/run does this)"
)


def require_binary(name: str, *extra: str) -> str:
    """The path of ``name`` (also looked up in ``extra`` dirs); AssertionError if absent."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *extra]))
    if found is None:
        raise AssertionError(f"{name} is not installed: {APT_HINT}")
    return found


def free_port(kind: str = "udp") -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (checked, then released)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


def _listening(kind: str, port: int) -> bool:
    table = "/proc/net/udp" if kind == "udp" else "/proc/net/tcp"
    local = f"0100007F:{port:04X}"  # 127.0.0.1:port
    with open(table) as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and (kind == "udp" or fields[3] == "0A"):  # 0A: TCP_LISTEN
                return True
    return False


def wait_listening(
    kind: str,
    port: int,
    proc: subprocess.Popen[bytes],
    what: str,
    timeout: float = 5.0,
    logs: tuple[Path, ...] = (),
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tails = "".join(
                f"\n--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists()
            )
            raise AssertionError(f"{what} exited early (rc {proc.returncode}){tails}")
        if _listening(kind, port):
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} is not listening on {kind} 127.0.0.1:{port}")


@dataclass
class SippUas:
    """One SIPp UAS run (``-m 1``) of a scenario of ours, in the foreground of a Popen."""

    scenario: str
    kind: str  # "udp" | "tcp"
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def messages(self) -> Path:
        return self.workdir / "messages.log"

    @property
    def errors(self) -> Path:
        return self.workdir / "errors.log"

    def start(self) -> SippUas:
        sipp = require_binary("sipp")
        self.port = free_port()
        media = free_port()
        args = [
            sipp, "-sf", str(SCENARIOS / self.scenario), "-t", "u1" if self.kind == "udp" else "t1",
            "-i", "127.0.0.1", "-p", str(self.port), "-mp", str(media), "-m", "1",
            "-nostdin", "-timeout", "20", "-timeout_error",
            "-trace_msg", "-message_file", str(self.messages),
            "-trace_err", "-error_file", str(self.errors),
        ]  # fmt: skip
        with open(self.workdir / "stdout.log", "wb") as stdout:  # the child keeps its copy
            self.proc = subprocess.Popen(
                args, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=stdout,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_listening(
            self.kind,
            self.port,
            self.proc,
            f"sipp {self.scenario}",
            logs=(self.errors, self.workdir / "stdout.log"),
        )
        return self

    def finish(self, timeout: float = 10.0) -> int:
        """Wait for SIPp to exit (it does after its one call); its exit status."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"sipp {self.scenario} did not finish; {self.report()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # our own child, by its pid
            self.proc.wait(5)

    def report(self) -> str:
        parts = []
        for p in (self.errors, self.workdir / "stdout.log"):
            if p.exists():
                parts.append(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def received(self, method: str = "PUBLISH") -> list[dict[str, str]]:
        return [m for m in sipp_messages(self.messages) if m["direction"] == "received"
                and m["start"].startswith(method + " ")]  # fmt: skip


_SEP = re.compile(r"^-{20,} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s*$")
_DIR = re.compile(r"^\w+ message (received|sent)")


def sipp_messages(path: Path) -> list[dict[str, str]]:
    """The messages of a SIPp ``-trace_msg`` log: direction, start line, headers (lower)."""
    if not path.exists():
        return []
    out: list[dict[str, str]] = []
    blocks: list[list[str]] = []
    for line in path.read_text(errors="replace").splitlines():
        if _SEP.match(line):
            blocks.append([])
        elif blocks:
            blocks[-1].append(line)
    for block in blocks:
        if not block or not (d := _DIR.match(block[0])):
            continue
        lines = [x.rstrip("\r") for x in block[1:]]
        while lines and not lines[0]:
            lines.pop(0)
        if not lines:
            continue
        msg: dict[str, str] = {"direction": d.group(1), "start": lines[0]}
        for h in lines[1:]:
            if not h:
                break
            if ":" in h:
                k, v = h.split(":", 1)
                msg.setdefault(k.strip().lower(), v.strip())
        out.append(msg)
    return out
